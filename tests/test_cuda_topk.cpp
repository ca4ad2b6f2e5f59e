// The CUDA top-k selection against its CPU twin: exact indices and values on tie-free data (with
// and without the fused bias), the tie rule (equal values: lower index first; NaN as -inf;
// -0 == +0), AuxK's mask and device-side k, and the largest shapes (d_sae 2^20, k 512).
// The kernel has two paths (see kernels/topk_select.cu): two reads of the row when the top 11-bit
// radix bin and above hold <= 4096 entries (8192 for k > 4096), four reads otherwise; the
// CudaTopKPaths cases force each one, check which ran through a test hook, and compare exactly.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

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
  // n 1500: every row takes the two-read path; n 30001: rows 0, 2 and 3 (crowded ties) the
  // four-read path.
  const struct {
    int64_t n, k;
  } shapes[] = {{1500, 40}, {30001, 300}};
  for (auto s : shapes) {
    SCOPED_TRACE(::testing::Message() << "n=" << s.n << " k=" << s.k);
    const int64_t n = s.n, k = s.k;
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    std::vector<float> h(size_t(4 * n));
    for (int64_t j = 0; j < n; ++j) {
      // Row 0: all equal: the answer is 0..k-1.
      h[size_t(j)] = 0.5f;
      // Row 1: a few distinct winners, then a tie at the cut spread over the row.
      h[size_t(n + j)] = (j % 97 == 5) ? 2.f + float(j) * 1e-3f : (j % 3 == 0 ? 1.f : 0.25f);
      // Row 2: NaN ranks as -inf; -0 ties with +0; only n / 150 positive values.
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

namespace topksae::cuda::detail {
// Test hook defined in kernels/topk_select.cu (not public): rows that took the two-read / four-read
// path on the current device since the last call; resets both. Synchronises the device.
void topk_path_rows(int64_t* two_reads, int64_t* four_reads);
}  // namespace topksae::cuda::detail

namespace topksae::test {
namespace {

// ---- the two paths ----------------------------------------------------------------------------
struct PathRows {
  int64_t two = 0, four = 0;
};
PathRows take_path_rows() {
  PathRows r;
  cuda::detail::topk_path_rows(&r.two, &r.four);
  return r;
}

struct TopKCase {
  int64_t B = 0, n = 0, kcap = 0;
  int32_t k_used = -1;             // >= 0: passed as the device-side k
  std::vector<float> h;            // [B, n]
  std::vector<float> bias;         // [n] or empty
  std::vector<uint8_t> mask;       // [n] or empty
  bool relu = false;
};

// Runs the CUDA twin on c and compares with the CPU twin: masked-out entries rank below every
// value (the CPU sees -inf; the rows here hold no -inf or NaN, so that order is the same); the
// values are re-read from h (+bias), so a selected masked-out entry reports its own value. Slots
// past the device k stay untouched. Returns the rows per path.
PathRows expect_case_matches_cpu(const TopKCase& c) {
  const int64_t B = c.B, n = c.n, kcap = c.kcap;
  const int64_t k = c.k_used >= 0 ? c.k_used : kcap;
  std::vector<float> hb = c.h;  // [B, n]: h + bias, the values the selection ranks
  std::vector<float> hm(size_t(B * n));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < n; ++j) {
      float& v = hb[size_t(b * n + j)];
      if (!c.bias.empty()) v += c.bias[size_t(j)];
      hm[size_t(b * n + j)] = (!c.mask.empty() && !c.mask[size_t(j)]) ? -std::numeric_limits<float>::infinity() : v;
    }
  std::vector<int32_t> ci(size_t(B * k));
  std::vector<float> cv(size_t(B * k));
  if (k > 0) cpu::topk_select(hm.data(), B, n, k, ci.data(), cv.data());

  cuda::Context ctx;
  take_path_rows();  // reset
  DevVec<float> dh(c.h);
  DevVec<float> db(c.bias.empty() ? std::vector<float>(1, 0.f) : c.bias);
  DevVec<uint8_t> dm(c.mask.empty() ? std::vector<uint8_t>(1, 0) : c.mask);
  DevVec<int32_t> dk(std::vector<int32_t>{c.k_used});
  DevVec<int32_t> gi(std::vector<int32_t>(size_t(B * kcap), -1));
  DevVec<float> gv(std::vector<float>(size_t(B * kcap), -123.f));
  cuda::TopKOptions opt;
  opt.bias = c.bias.empty() ? nullptr : db.p();
  opt.mask = c.mask.empty() ? nullptr : dm.p();
  opt.k_dev = c.k_used >= 0 ? dk.p() : nullptr;
  opt.relu = c.relu;
  cuda::topk_select(ctx, dh.p(), B, n, kcap, gi.p(), gv.p(), opt);
  ctx.synchronize();
  const PathRows paths = take_path_rows();
  const std::vector<int32_t> ri = gi.get();
  const std::vector<float> rv = gv.get();
  int64_t wrong_idx = 0, wrong_val = 0, wrong_tail = 0, nonzero = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < kcap; ++i) {
      const size_t g = size_t(b * kcap + i);
      if (i >= k) {
        wrong_tail += (ri[g] != -1 || rv[g] != -123.f);
        continue;
      }
      const int32_t j = ci[size_t(b * k + i)];
      float want = hb[size_t(b * n + j)];
      if (c.relu) want = std::max(want, 0.f);
      if (ri[g] != j) {
        if (wrong_idx++ < 5) ADD_FAILURE() << "row " << b << " slot " << i << ": index " << ri[g] << ", want " << j;
      } else if (rv[g] != want) {
        if (wrong_val++ < 5) ADD_FAILURE() << "row " << b << " slot " << i << ": value " << rv[g] << ", want " << want;
      }
      nonzero += (rv[g] != 0.f);
    }
  }
  EXPECT_EQ(wrong_idx, 0) << "indices differ (B=" << B << ", n=" << n << ", k=" << k << ")";
  EXPECT_EQ(wrong_val, 0);
  EXPECT_EQ(wrong_tail, 0) << "slots past the device k were written";
  if (k > 0) {
    EXPECT_GT(nonzero, 0) << "all selected values are 0";
  }
  return paths;
}

// Rows of n distinct floats in [1, 1.25) (one top 11-bit radix bin), every 997th lifted to a
// distinct value in [2, 9) so the cut still has entries above the crowded bin.
std::vector<float> crowded_rows(int64_t B, int64_t n, uint64_t seed) {
  std::vector<float> h = tie_free_rows(B, n, seed);  // a permutation of a ramp, used for its order
  for (size_t i = 0; i < h.size(); ++i) {
    const int64_t r = std::llround(double(h[i]) * 1e3) + n / 2;  // 0 .. n-1, distinct per row
    h[i] = 1.f + float(r) * 0x1p-23f;                            // n <= 2^21: stays below 1.25
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 17; j < n; j += 997) h[size_t(b * n + j)] = 2.f + float(j) * 1e-4f;
  return h;
}

TEST(CudaTopKPaths, TwoReadsOnTypicalData) {
  SKIP_WITHOUT_GPU();
  // The ramps put at most ~5000 entries in the top bin and above (capacity 4096, 8192 for k 5000):
  // the two-read path everywhere.
  const struct {
    int64_t B, n, k;
  } shapes[] = {{9, 65536 + 123, 64}, {5, 3001, 100}, {3, 20001, 1152}, {4, 40001, 1}, {2, 30001, 5000}};
  for (auto s : shapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " n=" << s.n << " k=" << s.k);
    TopKCase c;
    c.B = s.B, c.n = s.n, c.kcap = s.k;
    c.h = tie_free_rows(s.B, s.n, 300 + uint64_t(s.n));
    const PathRows p = expect_case_matches_cpu(c);
    EXPECT_EQ(p.two, s.B);
    EXPECT_EQ(p.four, 0);
  }
  // Gaussian pre-activations with the fused bias and relu, the encoder's form.
  TopKCase c;
  c.B = 6, c.n = 65536 + 1001, c.kcap = 64, c.relu = true;
  c.h = randn(size_t(c.B * c.n), 31);
  c.bias = randn(size_t(c.n), 32, 0.5f);
  const PathRows p = expect_case_matches_cpu(c);
  EXPECT_EQ(p.two, c.B);
  EXPECT_EQ(p.four, 0);
}

TEST(CudaTopKPaths, FourReadsWhenTheTopBinIsCrowded) {
  SKIP_WITHOUT_GPU();
  // Thousands of distinct values sharing the top 11 bits (> the 4096-entry capacity).
  const struct {
    int64_t B, n, k;
  } shapes[] = {{4, 20001, 64}, {3, 9001, 1152}, {2, 30001, 5000}};
  for (auto s : shapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " n=" << s.n << " k=" << s.k);
    TopKCase c;
    c.B = s.B, c.n = s.n, c.kcap = s.k;
    c.h = crowded_rows(s.B, s.n, 400 + uint64_t(s.n));
    const PathRows p = expect_case_matches_cpu(c);
    EXPECT_EQ(p.two, 0);
    EXPECT_EQ(p.four, s.B);
  }
}

TEST(CudaTopKPaths, ExactTiesAtTheThresholdOnBothPaths) {
  SKIP_WITHOUT_GPU();
  // Values from a set of 8, so the cut falls inside a run of thousands of equal values: the
  // winners among them are the lowest indices. n 3001 fits the capacity (two reads); at n 60001
  // each value has ~7500 copies, more than the capacity (four reads).
  for (const int64_t n : {int64_t(3001), int64_t(60001)}) {
    for (const int64_t k : {int64_t(100), int64_t(1000)}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " k=" << k);
      TopKCase c;
      c.B = 5, c.n = n, c.kcap = k;
      c.h.resize(size_t(c.B * n));
      std::mt19937_64 rng(uint64_t(n * 7 + k));
      for (float& v : c.h) v = float(int(rng() % 8)) * 0.125f + 0.5f;
      const PathRows p = expect_case_matches_cpu(c);
      EXPECT_EQ(p.two, n <= 4096 ? c.B : 0);
      EXPECT_EQ(p.four, n <= 4096 ? 0 : c.B);
    }
  }
  // A long row whose top bin holds ~2000 copies of 5.0 under 32 distinct larger values: two
  // reads, and the 68 lowest-index 5.0s make the cut.
  TopKCase c;
  c.B = 3, c.n = 50001, c.kcap = 100;
  c.h = tie_free_rows(c.B, c.n, 77);
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t j = 0; j < c.n; ++j) {
      float& v = c.h[size_t(b * c.n + j)];
      v = std::min(v, 0.f);
      if (j % 25 == 3) v = 5.f;                         // ~2000 ties
      if (j % 1601 == 100) v = 6.f + float(j) * 1e-4f;  // 32 distinct winners, all > 5
    }
  }
  const PathRows p = expect_case_matches_cpu(c);
  EXPECT_EQ(p.two, c.B);
  EXPECT_EQ(p.four, 0);
}

TEST(CudaTopKPaths, AuxKMaskAndDeviceK) {
  SKIP_WITHOUT_GPU();
  // AuxK's form: k = d_in / 2 = 1152 over d_sae = 65536 with ~5% of the latents dead (eligible),
  // relu, device-side k.
  {
    TopKCase c;
    c.B = 3, c.n = 65536, c.kcap = 1152, c.k_used = 1152, c.relu = true;
    c.h = tie_free_rows(c.B, c.n, 91);
    c.mask.resize(size_t(c.n));
    for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(j)] = (j * 7919) % 20 == 0;
    const PathRows p = expect_case_matches_cpu(c);
    EXPECT_EQ(p.two, c.B);
    EXPECT_EQ(p.four, 0);
    // A device k below the capacity k leaves the tail untouched.
    c.k_used = 777;
    const PathRows q = expect_case_matches_cpu(c);
    EXPECT_EQ(q.two, c.B);
  }
  // 20% eligible, crowded into one radix bin: > 4096 candidates, four reads.
  {
    TopKCase c;
    c.B = 2, c.n = 65536, c.kcap = 1152, c.k_used = 1152, c.relu = true;
    c.h = crowded_rows(c.B, c.n, 92);
    c.mask.resize(size_t(c.n));
    for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(j)] = (j * 7919) % 5 == 0;
    const PathRows p = expect_case_matches_cpu(c);
    EXPECT_EQ(p.two, 0);
    EXPECT_EQ(p.four, c.B);
  }
  // Fewer eligible latents than k: the rest of the cut is masked-out entries, lowest index first,
  // reporting their own values. n 3001 fits the capacity (every entry is a candidate), 10001 not.
  for (const int64_t n : {int64_t(3001), int64_t(10001)}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    TopKCase c;
    c.B = 4, c.n = n, c.kcap = 600, c.k_used = 500;
    c.h = tie_free_rows(c.B, n, 93 + uint64_t(n));
    c.bias = randn(size_t(n), 94, 0.1f);
    c.mask.resize(size_t(n));
    for (int64_t j = 0; j < n; ++j) c.mask[size_t(j)] = (j * 31) % 30 == 1;  // n / 30 < 500 eligible
    const PathRows p = expect_case_matches_cpu(c);
    EXPECT_EQ(p.two, n <= 4096 ? c.B : 0);
    EXPECT_EQ(p.four, n <= 4096 ? 0 : c.B);
  }
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTopK, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
