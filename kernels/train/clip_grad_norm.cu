// The gradients' global L2 norm and torch's clip_grad_norm_ factor (max_norm = 1), on the device:
// the norm is summed into DevMetrics::sumsq by the kernels that write the gradients (grad_dec,
// grad_enc; in the fused gradient mode their norm passes, which write none) and by add_sumsq
// (db_dec); clip_factor turns it into StepControl::clip, which Adam applies. CPU twin: src/cpu/clip_grad_norm.cpp.
#include "common/reduce.cuh"
#include "cuda_internal.h"
#include "topksae/train.h"
#include "train/train_ops.h"

namespace topksae::cuda::train {

namespace {
using detail::block_sum;

__global__ void sumsq_kernel(const float* __restrict__ a, int64_t n, DevMetrics* M) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    s += double(a[i]) * a[i];
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(&M->sumsq, s);
}

// torch clip_grad_norm_(max_norm=1): c = min(1, 1 / (N + 1e-6)).
__global__ void clip_kernel(DevMetrics* M, StepControl* C) {
  const double N = sqrt(M->sumsq);
  M->grad_norm = N;
  const double c = kClipMaxNorm / (N + kClipEps);
  C->clip = float(c < 1.0 ? c : 1.0);
}

}  // namespace

void add_sumsq(cudaStream_t st, const float* a, int64_t count, DevMetrics* M) {
  sumsq_kernel<<<1, 1024, 0, st>>>(a, count, M);
  CUDA_CHECK_LAUNCH();
}

void clip_factor(cudaStream_t st, DevMetrics* M, StepControl* C) {
  clip_kernel<<<1, 1, 0, st>>>(M, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda::train
