// CUDA twin of cpu::gather_rows (src/cpu/gather_rows.cpp): the device mixing buffer serves a batch
// by copying the chosen slots' rows into the step's batch buffer, device to device.
#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
constexpr int kThreads = 256;

// A grid-stride loop over the n * d elements of out [n, d]; a row is d consecutive elements, so a
// warp reads (mostly) one source row: coalesced on both sides.
__global__ void gather_rows_kernel(const float* __restrict__ rows, int64_t d, const int64_t* __restrict__ slots,
                                   int64_t n, float* __restrict__ out) {
  const int64_t total = n * d;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / d, c = i - r * d;
    out[i] = rows[slots[r] * d + c];
  }
}
}  // namespace

void gather_rows(Stream stream, const float* rows, int64_t d, const int64_t* slots, int64_t n, float* out) {
  if (n <= 0 || d <= 0) return;
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  gather_rows_kernel<<<detail::grid_for(n * d, kThreads), kThreads, 0, s>>>(rows, d, slots, n, out);
  CUDA_CHECK(cudaGetLastError());
}

}  // namespace topksae::cuda
