// Small float kernels of the CPU backend's sparse work (the top-k gather decode, grad_dec /
// grad_enc in the backward, Adam), compiled for several ISAs with runtime dispatch
// (target_clones: AVX-512, AVX2, baseline x86-64) so one portable binary runs the wide code on
// the CPU it finds. Each clone computes bit-identical results: the summation order is fixed by
// the source (dot keeps 16 independent partial sums whatever the vector width) and the build
// compiles vec.cpp with -ffp-contract=off (GCC would fuse a*b+c into FMA in the AVX clones).
#pragma once
#include <cstdint>

namespace topksae::cpu::vec {

// sum_i a[i] * b[i], as 16 partial sums (lane i % 16) added pairwise, then the tail.
float dot(const float* a, const float* b, int64_t n);
// y[i] += alpha * x[i]
void axpy(float alpha, const float* x, float* y, int64_t n);
// torch.optim.Adam's update of n elements (adam_step.cpp has the formula); the scalars are the
// ones adam_step rounds to float once.
void adam(float* p, float* m, float* v, const float* g, int64_t n, float b1, float b2, float one_b1, float one_b2,
          float step_size, float bc2_sqrt, float eps);

}  // namespace topksae::cpu::vec
