// The CUDA top-k selection against its CPU twin: exact indices and values on tie-free data (with
// and without the fused bias), the tie rule (equal values: lower index first; NaN as -inf;
// -0 == +0), AuxK's mask and device-side k, and the largest shapes (d_sae 2^20, k 512).
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cmath>
#include <limits>

#include "cuda_test_util.h"
#include "topksae/ops_cpu.h"
#include "topksae/ops_cuda.h"

namespace topksae::test {
namespace {

// Runs both twins on h (+bias when given) and expects identical indices and values, in order.
void expect_topk_matches_cpu(const std::vector<float>& h, const std::vector<float>* bias, int64_t B, int64_t n,
                             int64_t k) {
  std::vector<float> hb = h;
  if (bias)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < n; ++j) hb[size_t(b * n + j)] = h[size_t(b * n + j)] + (*bias)[size_t(j)];
  std::vector<int32_t> ci(size_t(B * k));
  std::vector<float> cv(size_t(B * k));
  cpu::topk_select(hb.data(), B, n, k, ci.data(), cv.data());

  cuda::Context ctx;
  DevVec<float> dh(h);
  DevVec<float> db(bias ? *bias : std::vector<float>(1, 0.f));
  DevVec<int32_t> gi(std::vector<int32_t>(size_t(B * k), -1));
  DevVec<float> gv(std::vector<float>(size_t(B * k), -123.f));
  cuda::TopKOptions opt;
  opt.bias = bias ? db.p() : nullptr;
  cuda::topk_select(ctx, dh.p(), B, n, k, gi.p(), gv.p(), opt);
  ctx.synchronize();
  const std::vector<int32_t> ri = gi.get();
  const std::vector<float> rv = gv.get();
  ASSERT_EQ(ri, ci) << "indices differ (B=" << B << ", n=" << n << ", k=" << k << ")";
  for (size_t i = 0; i < rv.size(); ++i) {
    if (std::isnan(cv[i])) {
      EXPECT_TRUE(std::isnan(rv[i])) << "at " << i;
    } else {
      EXPECT_EQ(rv[i], cv[i]) << "at " << i;  // the same float read back (and the same float add)
    }
  }
}

TEST(CudaTopK, MatchesCpuOnTieFreeData) {
  SKIP_WITHOUT_GPU();
  const struct {
    int64_t B, n, k;
  } shapes[] = {{37, 1000, 17}, {5, 50001, 300}, {3, 4097, 1}, {2, 33, 33}, {11, 2049, 129}};
  for (auto s : shapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " n=" << s.n << " k=" << s.k);
    const std::vector<float> h = tie_free_rows(s.B, s.n, 100 + uint64_t(s.n));
    expect_topk_matches_cpu(h, nullptr, s.B, s.n, s.k);
  }
}

TEST(CudaTopK, FusedBiasMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t B = 29, n = 3001, k = 45;
  const std::vector<float> h = randn(size_t(B * n), 7);
  const std::vector<float> bias = randn(size_t(n), 8, 0.3f);
  // Gaussian rows of this size may hold repeated floats only with negligible probability near the top.
  expect_topk_matches_cpu(h, &bias, B, n, k);
}

TEST(CudaTopK, LargestShapes) {
  SKIP_WITHOUT_GPU();
  const int64_t n = int64_t(1) << 20;
  expect_topk_matches_cpu(tie_free_rows(3, n, 5), nullptr, 3, n, 512);
  expect_topk_matches_cpu(tie_free_rows(2, 70001, 6), nullptr, 2, 70001, 512);
  // AuxK's k = d_in / 2 (1152 at d_in 2304: a 2048-entry sort), and the largest k, whose 64 KiB
  // candidate buffer needs the dynamic shared-memory opt-in.
  expect_topk_matches_cpu(tie_free_rows(3, 20001, 7), nullptr, 3, 20001, 1152);
  expect_topk_matches_cpu(tie_free_rows(2, 30001, 8), nullptr, 2, 30001, cuda::kMaxTopK);
}

TEST(CudaTopK, TieRuleLowerIndexFirst) {
  SKIP_WITHOUT_GPU();
  const int64_t n = 1500, k = 40;
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> h(size_t(4 * n));
  for (int64_t j = 0; j < n; ++j) {
    // Row 0: all equal: the answer is 0..k-1.
    h[size_t(j)] = 0.5f;
    // Row 1: a few distinct winners, then a tie at the cut spread over the row.
    h[size_t(n + j)] = (j % 97 == 5) ? 2.f + float(j) * 1e-3f : (j % 3 == 0 ? 1.f : 0.25f);
    // Row 2: NaN ranks as -inf; -0 ties with +0; only 10 positive values.
    h[size_t(2 * n + j)] = (j % 150 == 0) ? 1.f + float(j) : (j % 2 ? -0.f : 0.f);
    if (j % 7 == 3) h[size_t(2 * n + j)] = nan;
    // Row 3: mostly -inf and NaN: the tail of the selection is among the tied -inf / NaN.
    h[size_t(3 * n + j)] = (j % 500 == 1) ? 3.f : (j % 2 ? -inf : nan);
  }
  expect_topk_matches_cpu(h, nullptr, 4, n, k);
  // Spot-check the rule itself on row 0 (not only agreement with the CPU).
  std::vector<int32_t> ci(size_t(4 * k));
  std::vector<float> cv(size_t(4 * k));
  cpu::topk_select(h.data(), 4, n, k, ci.data(), cv.data());
  for (int64_t i = 0; i < k; ++i) EXPECT_EQ(ci[size_t(i)], i);
}

TEST(CudaTopK, MaskAndDeviceK) {
  SKIP_WITHOUT_GPU();
  const int64_t B = 13, n = 2500, kcap = 70;
  const std::vector<float> h = tie_free_rows(B, n, 21);
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) mask[size_t(j)] = (j * 7919) % 5 == 0;  // ~20% eligible
  // CPU reference: masked-out entries cannot win (-inf), k_used < kcap.
  const int32_t k_used = 53;
  std::vector<float> hm = h;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < n; ++j)
      if (!mask[size_t(j)]) hm[size_t(b * n + j)] = -std::numeric_limits<float>::infinity();
  std::vector<int32_t> ci(size_t(B * k_used));
  std::vector<float> cv(size_t(B * k_used));
  cpu::topk_select(hm.data(), B, n, k_used, ci.data(), cv.data());

  cuda::Context ctx;
  DevVec<float> dh(h);
  DevVec<uint8_t> dm(mask);
  DevVec<int32_t> dk(std::vector<int32_t>{k_used});
  DevVec<int32_t> gi(std::vector<int32_t>(size_t(B * kcap), -1));
  DevVec<float> gv(std::vector<float>(size_t(B * kcap), -123.f));
  cuda::TopKOptions opt;
  opt.mask = dm.p();
  opt.k_dev = dk.p();
  opt.relu = true;
  cuda::topk_select(ctx, dh.p(), B, n, kcap, gi.p(), gv.p(), opt);
  ctx.synchronize();
  const auto ri = gi.get();
  const auto rv = gv.get();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < kcap; ++i) {
      const size_t g = size_t(b * kcap + i);
      if (i < k_used) {
        const size_t c = size_t(b * k_used + i);
        EXPECT_EQ(ri[g], ci[c]) << "row " << b << " slot " << i;
        EXPECT_EQ(rv[g], std::max(cv[c], 0.f)) << "row " << b << " slot " << i;
        EXPECT_TRUE(mask[size_t(ri[g])]) << "selected a masked-out latent";
      } else {
        EXPECT_EQ(ri[g], -1) << "slot past the device k was written";
        EXPECT_EQ(rv[g], -123.f);
      }
    }
  }
  // k_dev = 0 selects nothing.
  DevVec<int32_t> dz(std::vector<int32_t>{0});
  opt.k_dev = dz.p();
  DevVec<int32_t> gi2(std::vector<int32_t>(size_t(B * kcap), -1));
  cuda::topk_select(ctx, dh.p(), B, n, kcap, gi2.p(), gv.p(), opt);
  ctx.synchronize();
  for (int32_t v : gi2.get()) EXPECT_EQ(v, -1);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTopK, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
