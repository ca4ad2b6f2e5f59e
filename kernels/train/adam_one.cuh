// One parameter's clipped Adam update, shared by every kernel that applies Adam: the flat pass
// (adam_step.cu) and, in the fused gradient mode, the backward's second pass over dW_enc / dW_dec
// (train_backward.cu), which computes each gradient value in registers and applies it at once.
// One function, so both give the same bits for the same gradient. Device code only; include from
// a .cu file.
#pragma once
#include <cuda_runtime.h>

#include "train/train_ops.h"

namespace topksae::cuda::train {

// The per-step constants (AdamParams, from the host) plus the clip factor (from the device).
struct AdamCoef {
  float c, b1, b2, one_b1, one_b2, step_size, bc2_sqrt, eps;
};

__device__ __forceinline__ AdamCoef adam_coef(const AdamParams& a, const StepControl* C) {
  return AdamCoef{C->clip, a.b1, a.b2, a.one_b1, a.one_b2, a.step_size, a.bc2_sqrt, a.eps};
}

// The CPU twin's formula (src/cpu/adam_step.cpp), operation for operation, the gradient scaled by
// the clip factor first; returns the new parameter value.
__device__ __forceinline__ float adam_one(float& p, float& m, float& v, float g, const AdamCoef& a) {
  const float gi = g * a.c;
  m = a.b1 * m + a.one_b1 * gi;
  v = a.b2 * v + a.one_b2 * (gi * gi);
  p = p - a.step_size * (m / (sqrtf(v) / a.bc2_sqrt + a.eps));
  return p;
}

}  // namespace topksae::cuda::train
