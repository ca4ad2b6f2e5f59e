// CUDA pieces of the forward pass (CPU twin: src/cpu/forward.cpp) beyond encode and decode: the
// error term sae_lens adds with use_error_term, out + (x - xhat_without_hooks), in two steps so
// that hook_sae_error can observe the error between them.
#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
__global__ void error_term_kernel(const float* __restrict__ x, float* __restrict__ e, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    e[i] = x[i] - e[i];
}

__global__ void add_error_kernel(float* __restrict__ out, const float* __restrict__ e, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = out[i] + e[i];
}
}  // namespace

void error_term(Context& ctx, const float* x, float* e, int64_t n) {
  if (n == 0) return;
  error_term_kernel<<<detail::grid_for(n, 256), 256, 0, detail::stream(ctx)>>>(x, e, n);
  CUDA_CHECK_LAUNCH();
}

void add_error_term(Context& ctx, float* out, const float* e, int64_t n) {
  if (n == 0) return;
  add_error_kernel<<<detail::grid_for(n, 256), 256, 0, detail::stream(ctx)>>>(out, e, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda
