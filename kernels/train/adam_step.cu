// torch.optim.Adam (no weight decay) on the device, fused with the clip: one pass over the flat
// [W_enc | b_enc | W_dec | b_dec] arrays (parameters, both moments, gradients), which also
// refreshes the bf16 copy of W_enc the bf16 encoder GEMM reads; and the same update over a short
// range (the fused gradient mode's biases: its weight blocks are updated in train_backward.cu, by
// adam_one.cuh's same function). CPU twin: src/cpu/adam_step.cpp.
#include <cuda_bf16.h>

#include <cmath>

#include "cuda_internal.h"
#include "train/adam_one.cuh"
#include "train/train_ops.h"

namespace topksae::cuda::train {

namespace {
constexpr int kThreads = 256;

// Adam is bandwidth-bound (28 bytes per parameter): float4 accesses for the first P/4*4
// parameters (the four arrays come from cudaMalloc, 16-byte aligned), then the tail one by one;
// the clip factor applied to the gradient first; refreshes the bf16 copy of W_enc (the first
// n_w16 entries) when given.
__global__ void adam_kernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                            const float* __restrict__ grad, int64_t P, const StepControl* __restrict__ C, AdamParams ap,
                            __nv_bfloat16* __restrict__ w16, int64_t n_w16) {
  const AdamCoef a = adam_coef(ap, C);
  const int64_t P4 = P / 4;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t t0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i4 = t0; i4 < P4; i4 += stride) {
    float4 pp = reinterpret_cast<float4*>(p)[i4], mm = reinterpret_cast<float4*>(m)[i4];
    float4 vv = reinterpret_cast<float4*>(v)[i4];
    const float4 gg = reinterpret_cast<const float4*>(grad)[i4];
    const float r0 = adam_one(pp.x, mm.x, vv.x, gg.x, a), r1 = adam_one(pp.y, mm.y, vv.y, gg.y, a);
    const float r2 = adam_one(pp.z, mm.z, vv.z, gg.z, a), r3 = adam_one(pp.w, mm.w, vv.w, gg.w, a);
    reinterpret_cast<float4*>(p)[i4] = pp;
    reinterpret_cast<float4*>(m)[i4] = mm;
    reinterpret_cast<float4*>(v)[i4] = vv;
    if (w16 != nullptr) {
      const int64_t i = 4 * i4;
      const float r[4] = {r0, r1, r2, r3};
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (i + e < n_w16) w16[i + e] = __float2bfloat16_rn(r[e]);
    }
  }
  for (int64_t i = 4 * P4 + t0; i < P; i += stride) {
    const float r = adam_one(p[i], m[i], v[i], grad[i], a);
    if (w16 != nullptr && i < n_w16) w16[i] = __float2bfloat16_rn(r);
  }
}

// The same update over a short range at any alignment (the fused mode's b_enc and b_dec).
__global__ void adam_range_kernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                                  const float* __restrict__ grad, int64_t count, const StepControl* __restrict__ C,
                                  AdamParams ap) {
  const AdamCoef a = adam_coef(ap, C);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    adam_one(p[i], m[i], v[i], grad[i], a);
}

}  // namespace

AdamParams adam_params(double lr, double beta1, double beta2, double eps, int64_t t) {
  // As the CPU twin: bias corrections and step size in double, rounded to float once.
  const double bc1 = 1.0 - std::pow(beta1, double(t));
  const double bc2 = 1.0 - std::pow(beta2, double(t));
  return AdamParams{float(beta1), float(beta2), float(1.0 - beta1), float(1.0 - beta2), float(lr / bc1),
                    float(std::sqrt(bc2)), float(eps)};
}

void adam(cudaStream_t st, int sm_count, float* p, float* m, float* v, const float* grad, int64_t P,
          const StepControl* C, double lr, double beta1, double beta2, double eps, int64_t t, uint16_t* w16,
          int64_t n_w16) {
  adam_kernel<<<detail::grid_for(P, kThreads, int64_t(sm_count) * 16), kThreads, 0, st>>>(
      p, m, v, grad, P, C, adam_params(lr, beta1, beta2, eps, t), reinterpret_cast<__nv_bfloat16*>(w16), n_w16);
  CUDA_CHECK_LAUNCH();
}

void adam_range(cudaStream_t st, float* p, float* m, float* v, const float* grad, int64_t count, const StepControl* C,
                const AdamParams& a) {
  adam_range_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, st>>>(p, m, v, grad, count, C, a);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda::train
