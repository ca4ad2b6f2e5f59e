// Warp and block sums for every kernel that sums (the train step's phases, topk_select): the one
// place these shuffles are written. Device code only; include from a .cu file.
// Fixed summation orders (a butterfly over the lanes, then the warps in index order), so a result
// depends only on the inputs and the block shape, never on timing: the train step's sums are
// deterministic.
#pragma once
#include <cuda_runtime.h>

namespace topksae::cuda::detail {

// The sum over groups of kWidth consecutive lanes (kWidth a power of two <= 32; every lane of the
// group gets it). The whole warp must call it (full mask).
template <int kWidth = 32, typename T>
__device__ __forceinline__ T warp_sum(T v) {
  static_assert(kWidth >= 1 && kWidth <= 32 && (kWidth & (kWidth - 1)) == 0, "a power of two <= 32");
#pragma unroll
  for (int o = kWidth / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The inclusive prefix sum over the lanes of a warp (lane l gets the sum of lanes 0..l).
__device__ __forceinline__ int warp_inclusive_scan(int v) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const int t = __shfl_up_sync(0xffffffffu, v, off);
    if (lane >= off) v += t;
  }
  return v;
}

// The sum over a 1-D block (blockDim.x a multiple of 32, <= 1024, blockDim.y == 1); the result is
// valid in thread 0 only. Every thread must call it; it may be called several times in a row.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double part[32];
#ifdef TOPKSAE_CUDA_EMU
  ::cuda_emu::shared_decl(&part, sizeof(part));  // what rewrite_cu.py adds in a .cu (headers are not rewritten)
#endif
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  double s = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x >> 5); ++w) s += part[w];
  return s;
}

// block_sum's result in every thread of the block (the row statistics of kernels/normalize.cu,
// which every thread then applies). Same call rules as block_sum.
__device__ __forceinline__ double block_sum_to_all(double v) {
  __shared__ double total;
#ifdef TOPKSAE_CUDA_EMU
  ::cuda_emu::shared_decl(&total, sizeof(total));
#endif
  const double s = block_sum(v);
  if (threadIdx.x == 0) total = s;
  __syncthreads();
  // No barrier after the read: thread 0 rewrites total only after the next call's two barriers in
  // block_sum, which every thread reaches after reading it here.
  return total;
}

// The sum over a (32, kRows) block (warp y = threadIdx.y); valid in thread (0, 0) only. Called
// once per kernel (no barrier before the write of part[]).
template <int kRows>
__device__ __forceinline__ double block_sum_32xrows(double v) {
  __shared__ double part[kRows];
#ifdef TOPKSAE_CUDA_EMU
  ::cuda_emu::shared_decl(&part, sizeof(part));
#endif
  v = warp_sum(v);
  if (threadIdx.x == 0) part[threadIdx.y] = v;
  __syncthreads();
  double s = 0;
  if (threadIdx.x == 0 && threadIdx.y == 0)
    for (int r = 0; r < kRows; ++r) s += part[r];
  return s;
}

}  // namespace topksae::cuda::detail
