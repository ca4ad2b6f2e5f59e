// Checks of the reduced-precision GPU paths (tf32 / bf16 encoder GEMM) against fp32: their results
// cannot be compared for equality, but they are not free either. Top-k codes against the CPU
// twin (GPU tests of the API, the CLI helpers), trained parameters against an fp32 run (GPU
// tests of the train step and the Trainer).
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "topksae/ops_cpu.h"
#include "topksae/sae.h"
#include "topksae/train.h"

namespace topksae::test {

// Tolerances on a pre-activation of the encoder GEMM per precision, for the O(1) pre-activations
// of random_sae at d_in ~ 100: fp32 is exact up to summation order, tf32 rounds the operands to a
// 10-bit mantissa (2^-11 relative), bf16 to a 7-bit one (2^-8). The same numbers as tol_for in
// tests/test_cuda_ops.cpp, which checks the GEMM itself against them.
struct PrecisionTol {
  double atol, rtol;
};
inline PrecisionTol precision_tol(const std::string& precision) {
  if (precision == "tf32") return {2e-2, 5e-3};
  if (precision == "bf16") return {5e-2, 2e-2};
  return {1e-4, 1e-4};  // fp32
}

// Top-k codes idx/val [B, k] of a reduced-precision encode of x [B, d_in] against the CPU twin's
// pre-activations h [B, d_sae]:
//  - every row has k distinct latents in [0, d_sae);
//  - each picked latent's CPU pre-activation is at least the CPU's k-th largest minus twice the
//    tolerance (rounding may swap latents whose pre-activations nearly tie, nothing more);
//  - each value is relu(CPU pre-activation of that latent) within the tolerance;
//  - values are sorted descending within a row when `sorted`.
// Returns how many of the B * k picked latents are among the CPU's top k of their row.
inline int64_t expect_topk_near_cpu(const Sae& sae, const float* x, int64_t B, const int32_t* idx,
                                    const float* val, PrecisionTol t, bool sorted = true) {
  const int64_t d = sae.cfg.d_in, n = sae.cfg.d_sae, k = sae.cfg.k;
  std::vector<float> u(static_cast<size_t>(B * d)), h(static_cast<size_t>(B * n));
  cpu::process_sae_in(sae, x, B, u.data(), nullptr);
  cpu::encode_pre(sae, u.data(), B, h.data());
  int64_t winners = 0;
  for (int64_t b = 0; b < B; ++b) {
    const float* hr = h.data() + b * n;
    std::vector<float> row(hr, hr + n);
    std::nth_element(row.begin(), row.begin() + (k - 1), row.end(), std::greater<float>());
    const float kth = row[size_t(k - 1)];
    std::vector<int32_t> picked(idx + b * k, idx + (b + 1) * k);
    std::sort(picked.begin(), picked.end());
    EXPECT_TRUE(std::adjacent_find(picked.begin(), picked.end()) == picked.end())
        << "row " << b << " names a latent twice";
    for (int64_t i = 0; i < k; ++i) {
      const int32_t j = idx[b * k + i];
      if (j < 0 || j >= n) {
        ADD_FAILURE() << "row " << b << " slot " << i << ": latent " << j << " out of range";
        return winners;
      }
      const double hv = hr[j];
      winners += hv >= kth;
      EXPECT_GE(hv, kth - 2 * (t.atol + t.rtol * std::abs(kth))) << "row " << b << " picked latent " << j;
      const double want = std::max(hv, 0.0);
      EXPECT_LE(std::abs(double(val[b * k + i]) - want), t.atol + t.rtol * std::abs(want))
          << "row " << b << " slot " << i << " latent " << j;
      if (sorted && i > 0) EXPECT_GE(val[b * k + i - 1], val[b * k + i]) << "row " << b;
    }
  }
  return winners;
}

// Reduced-precision parameters after some steps against the fp32 ones from the same start. Adam
// moves a parameter by about lr per step whatever its gradient's size, so a step that trained on
// stale or wrong encoder weights (a bf16 copy of W_enc never refreshed) lands a sizeable fraction
// of lr x steps away; the GEMM's rounding alone only a small fraction (RMS over each tensor, as a
// few entries whose gradient is near zero may flip their sign). And they moved as far as the fp32
// ones: a run whose updates vanish (lr 1e-12) would keep the losses within a few percent.
inline void expect_params_track(const Params<float>& got, const Params<float>& ref, const Params<float>& init,
                                double lr_steps, double rms_frac) {
  auto rms_diff = [](const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    return std::sqrt(s / double(std::max<size_t>(a.size(), 1)));
  };
  const std::pair<const char*, const std::vector<float> Params<float>::*> parts[] = {
      {"W_enc", &Params<float>::W_enc}, {"b_enc", &Params<float>::b_enc},
      {"W_dec", &Params<float>::W_dec}, {"b_dec", &Params<float>::b_dec}};
  for (const auto& [name, member] : parts) {
    const auto &g = got.*member, &r = ref.*member, &i0 = init.*member;
    ASSERT_EQ(g.size(), r.size()) << name;
    const double off = rms_diff(g, r), moved_ref = rms_diff(r, i0), moved = rms_diff(g, i0);
    std::printf("  %s: rms |p - p_fp32| = %.3g lr*steps, fp32 moved %.3g lr*steps, this one %.3g\n", name,
                off / lr_steps, moved_ref / lr_steps, moved / lr_steps);
    EXPECT_LE(off, rms_frac * lr_steps) << name << ": off the fp32 run";
    EXPECT_GT(moved_ref, 0.1 * lr_steps) << name << ": the fp32 run did not move it";
    EXPECT_GE(moved, 0.8 * moved_ref) << name << ": did not move as far as the fp32 run";
  }
}

}  // namespace topksae::test
