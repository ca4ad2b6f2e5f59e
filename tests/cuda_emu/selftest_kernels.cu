// Kernels for the emulator's own tests (test_emu_runtime.cpp): built only with TOPKSAE_CUDA_EMU,
// rewritten like kernels/*.cu. Each host wrapper launches one kernel and returns the launch error.
#include <cuda_runtime.h>

#include <cstdint>

namespace cuda_emu_selftest {

namespace {
// out[b] = sum of in[b * blockDim.x + t] over t: a shared-memory tree with __syncthreads.
__global__ void block_sum_kernel(const int* in, int* out) {
  extern __shared__ int buf[];
  const unsigned t = threadIdx.x;
  buf[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) buf[t] += buf[t + s];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = buf[0];
}

// Per lane: [0] xor-butterfly sum, [1] inclusive scan by __shfl_up_sync, [2] ballot of odd
// values, [3] the value of lane 0 (__shfl_sync), [4] __shfl_down_sync by 1.
__global__ void warp_ops_kernel(const int* in, int* out) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  const int lane = int(threadIdx.x & 31);
  const int v = in[i];
  int s = v;
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  int incl = v;
  for (int o = 1; o < 32; o *= 2) {
    const int u = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += u;
  }
  const unsigned bal = __ballot_sync(0xffffffffu, v & 1);
  out[i * 5 + 0] = s;
  out[i * 5 + 1] = incl;
  out[i * 5 + 2] = int(bal);
  out[i * 5 + 3] = __shfl_sync(0xffffffffu, v, 0);
  out[i * 5 + 4] = __shfl_down_sync(0xffffffffu, v, 1);
}

// 2-D blocks and grids: out[y][x] = the global coordinates, packed.
__global__ void coords_kernel(int* out, int width) {
  const int x = int(blockIdx.x * blockDim.x + threadIdx.x), y = int(blockIdx.y * blockDim.y + threadIdx.y);
  out[y * width + x] = y * 1000 + x;
}

__global__ void atomics_kernel(int* count, float* fsum, unsigned long long* umax) {
  atomicAdd(count, 1);
  atomicAdd(fsum, 0.5f);
  atomicMax(umax, (unsigned long long)(blockIdx.x * blockDim.x + threadIdx.x));
}

// Threads that return early no longer count at __syncthreads (sm_70+).
__global__ void early_exit_kernel(int* out) {
  __shared__ int flag;
  if (threadIdx.x >= 40) return;
  if (threadIdx.x == 0) flag = 7;
  __syncthreads();
  out[threadIdx.x] = flag;
}

__device__ int g_symbol[4];
__global__ void symbol_kernel() { g_symbol[threadIdx.x] += int(threadIdx.x); }

__global__ void __launch_bounds__(128) bounded_kernel(int* out) { out[threadIdx.x] = 1; }
__global__ void axpy_kernel(const int* in, int* out, int a, int n) {
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) out[i] += a * in[i];
}

__global__ void noop_kernel(int* out) {
  if (out && threadIdx.x == 1u << 30) out[0] = 0;
}

// Reads shared memory no thread wrote: sees the garbage fill, not zeros.
__global__ void uninit_shared_kernel(int* out) {
  __shared__ int never_written[4];
  out[threadIdx.x] = never_written[threadIdx.x];
}

__global__ void hazard_selftest_kernel(int* out) { out[threadIdx.x] = int(threadIdx.x); }

// ---- kernels the emulator must refuse (death tests) ----------------------------------------------
// Lanes 0-15 wait at a full-warp shuffle while lanes 16-31 wait at __syncthreads: a deadlock.
__global__ void deadlock_kernel(int* out) {
  int v = int(threadIdx.x);
  if (threadIdx.x < 16)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  else
    __syncthreads();
  out[threadIdx.x] = v;
}
// Lanes 0-15 name the whole warp, lanes 16-31 only themselves.
__global__ void mask_mismatch_kernel(int* out) {
  const unsigned mask = threadIdx.x < 16 ? 0xffffffffu : 0xffff0000u;
  out[threadIdx.x] = __shfl_xor_sync(mask, int(threadIdx.x), 1);
}
// The upper half-warp has returned; the lower half names it in the mask.
__global__ void exited_lane_kernel(int* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = int(__ballot_sync(0xffffffffu, 1));
}
// 40 KiB of static shared memory: with 16 KiB dynamic the block exceeds the default 48 KiB.
__global__ void big_static_smem_kernel(int* out) {
  __shared__ int big[10 * 1024];
  big[threadIdx.x] = 1;
  __syncthreads();
  out[threadIdx.x] = big[threadIdx.x];
}
// A 48-thread block: the second warp has 16 lanes, a full mask names lanes that do not exist.
__global__ void partial_warp_kernel(int* out) { out[threadIdx.x] = int(__ballot_sync(0xffffffffu, 1)); }
}  // namespace

cudaError_t block_sum(const int* in, int* out, int blocks, int threads) {
  block_sum_kernel<<<blocks, threads, size_t(threads) * sizeof(int)>>>(in, out);
  return cudaGetLastError();
}
cudaError_t warp_ops(const int* in, int* out, int blocks) {
  warp_ops_kernel<<<blocks, 64>>>(in, out);
  return cudaGetLastError();
}
cudaError_t coords(int* out, int width, int height) {
  coords_kernel<<<dim3{unsigned(width / 8), unsigned(height / 4), 1u}, dim3{8u, 4u, 1u}>>>(out, width);
  return cudaGetLastError();
}
cudaError_t atomics(int* count, float* fsum, unsigned long long* umax, int blocks, int threads) {
  atomics_kernel<<<blocks, threads>>>(count, fsum, umax);
  return cudaGetLastError();
}
cudaError_t early_exit(int* out) {
  early_exit_kernel<<<1, 64>>>(out);
  return cudaGetLastError();
}
cudaError_t symbol_roundtrip(int* vals) {
  cudaError_t e = cudaMemcpyToSymbol(g_symbol, vals, sizeof(g_symbol));
  if (e != cudaSuccess) return e;
  symbol_kernel<<<1, 4>>>();
  if ((e = cudaGetLastError()) != cudaSuccess) return e;
  return cudaMemcpyFromSymbol(vals, g_symbol, sizeof(g_symbol));
}
cudaError_t bounded(int* out, int threads) {
  bounded_kernel<<<1, threads>>>(out);
  return cudaGetLastError();
}
cudaError_t noop(int* out, dim3 grid, dim3 block, size_t smem, cudaStream_t s) {
  noop_kernel<<<grid, block, smem, s>>>(out);
  return cudaGetLastError();
}
cudaError_t raise_smem_limit(int bytes) {
  return cudaFuncSetAttribute(noop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
cudaError_t uninit_shared(int* out) {
  uninit_shared_kernel<<<1, 4>>>(out);
  return cudaGetLastError();
}
// Writes out on stream s (no synchronisation).
cudaError_t write_on(int* out, cudaStream_t s) {
  hazard_selftest_kernel<<<1, 32, 0, s>>>(out);
  return cudaGetLastError();
}
// out[i] += a * in[i], i < n, on stream s (a captured launch keeps `a`, reads in and out at replay).
cudaError_t axpy_on(const int* in, int* out, int a, int n, cudaStream_t s) {
  axpy_kernel<<<1, 64, 0, s>>>(in, out, a, n);
  return cudaGetLastError();
}
void deadlock(int* out) { deadlock_kernel<<<1, 32>>>(out); }
void mask_mismatch(int* out) { mask_mismatch_kernel<<<1, 32>>>(out); }
void exited_lane(int* out) { exited_lane_kernel<<<1, 32>>>(out); }
cudaError_t big_static_smem(int* out, size_t dyn) {
  big_static_smem_kernel<<<1, 32, dyn>>>(out);
  return cudaGetLastError();
}
void partial_warp(int* out) { partial_warp_kernel<<<1, 48>>>(out); }

}  // namespace cuda_emu_selftest
