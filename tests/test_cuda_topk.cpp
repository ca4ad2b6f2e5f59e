// The CUDA top-k selection against its CPU twin: exact indices and values on tie-free data (with
// and without the fused bias), the tie rule (equal values: lower index first; NaN as -inf;
// -0 == +0), AuxK's mask and device-side k, and the largest shapes (d_sae 2^20, k 512).
// The kernel has three paths (see kernels/topk_select.cu): one read of the row when a sample's
// threshold (rows of n >= 8192, k <= 1365) leaves between k and 4096 candidates; else two reads
// when the top 11-bit radix bin and above hold <= 4096 entries (8192 for k > 4096), four reads
// otherwise. The CudaTopKPaths cases force each one (and samples that miss, so a fallback runs
// after the one-read attempt), check which ran through the test-only counters
// (kernels/topk_select_testing.h), and compare exactly.
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
#include "topk_select_testing.h"

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
  // n 1500: every row takes the two-read path; n 30001: the sampled threshold misses on every
  // row (thousands of ties in its bin), then rows 0, 2 and 3 (crowded ties) take the four-read
  // path, row 1 the two-read one.
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

namespace topksae::test {
namespace {

// ---- the three paths --------------------------------------------------------------------------
struct PathRows {
  int64_t two = 0, four = 0, one = 0, missed = 0, vec = 0;
};
// Reads and resets the counters.
PathRows take_path_rows() {
  const cuda::detail::TopKPathRows c = cuda::detail::take_topk_path_rows();
  PathRows r;
  r.two = c.two_reads;
  r.four = c.four_reads;
  r.one = c.one_read;
  r.missed = c.one_read_missed;
  r.vec = c.vec_passes;
  return r;
}

struct TopKCase {
  int64_t B = 0, n = 0, kcap = 0;
  int32_t k_used = -1;             // >= 0: passed as the device-side k
  std::vector<float> h;            // [B, n]
  std::vector<float> bias;         // [n] or empty
  std::vector<uint8_t> mask;       // [n] or empty
  bool relu = false;
  bool sorted = true;              // false: the same set expected, in ascending index order
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
  if (!c.sorted)  // the unsorted kernel writes the same winners in index order
    for (int64_t b = 0; b < B; ++b) std::sort(ci.begin() + b * k, ci.begin() + (b + 1) * k);

  cuda::Context ctx;
  cuda::detail::set_topk_path_counting(true);  // the counting kernel instances, for this case only
  take_path_rows();                            // reset
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
  opt.sorted = c.sorted;
  cuda::topk_select(ctx, dh.p(), B, n, kcap, gi.p(), gv.p(), opt);
  ctx.synchronize();
  const PathRows paths = take_path_rows();
  cuda::detail::set_topk_path_counting(false);
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

// Expects the rows per path (the float4 count is checked by the callers that know it).
void expect_paths(const PathRows& p, int64_t one, int64_t two, int64_t four, int64_t missed) {
  EXPECT_EQ(p.one, one) << "one-read rows";
  EXPECT_EQ(p.two, two) << "two-read rows";
  EXPECT_EQ(p.four, four) << "four-read rows";
  EXPECT_EQ(p.missed, missed) << "rows whose one-read pass missed";
}

// The entries the kernel samples (kernels/topk_select.cu: 32 runs of 128 from (c * n) / 32).
std::vector<int64_t> sampled_entries(int64_t n) {
  std::vector<int64_t> js;
  for (int64_t c = 0; c < 32; ++c)
    for (int64_t o = 0; o < 128; ++o) js.push_back(c * n / 32 + o);
  return js;
}

TEST(CudaTopKPaths, OneReadOnTypicalData) {
  SKIP_WITHOUT_GPU();
  // Tie-free ramps, n >= 8192 and 3k <= 4096: the sample's threshold leaves between k and 4096
  // candidates. n % 4 == 0 takes the float4 loads, other n the scalar ones; none is a multiple of
  // a round (512 threads x 4 float4 or x 8 floats).
  const struct {
    int64_t B, n, k;
  } shapes[] = {{9, 65536 + 123, 64}, {4, 65536 + 4, 64}, {3, 20000, 1152}, {4, 40001, 1}, {5, 12344, 300}};
  for (auto s : shapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " n=" << s.n << " k=" << s.k);
    TopKCase c;
    c.B = s.B, c.n = s.n, c.kcap = s.k;
    c.h = tie_free_rows(s.B, s.n, 500 + uint64_t(s.n));
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, s.B, 0, 0, 0);
    EXPECT_EQ(p.vec, s.n % 4 == 0 ? s.B : 0);
  }
  // Gaussian pre-activations with the fused bias and relu, the encoder's form (scalar and float4).
  for (const int64_t n : {int64_t(65536 + 1001), int64_t(65536 + 1000)}) {
    SCOPED_TRACE(::testing::Message() << "gaussian n=" << n);
    TopKCase c;
    c.B = 6, c.n = n, c.kcap = 64, c.relu = true;
    c.h = randn(size_t(c.B * c.n), 31);
    c.bias = randn(size_t(c.n), 32, 0.5f);
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, c.B, 0, 0, 0);
    EXPECT_EQ(p.vec, n % 4 == 0 ? c.B : 0);
  }
  // Mask, bias and a device-side k below the capacity k, scalar loads (n odd): 20% eligible.
  TopKCase c;
  c.B = 5, c.n = 30001, c.kcap = 128, c.k_used = 100, c.relu = true;
  c.h = tie_free_rows(c.B, c.n, 501);
  c.bias = randn(size_t(c.n), 502, 0.2f);
  c.mask.resize(size_t(c.n));
  for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(j)] = (j * 7919) % 5 == 0;
  const PathRows p = expect_case_matches_cpu(c);
  expect_paths(p, c.B, 0, 0, 0);
  EXPECT_EQ(p.vec, 0);
}

TEST(CudaTopKPaths, OneReadPastAMillionLatents) {
  SKIP_WITHOUT_GPU();
  // With a single 4096-key sample the aimed-at rank (4k * 4096 / n) hits its floor of 1 at n = 2^20
  // for k = 64, and at 2^24 the ~4096 row entries above the sample's largest key overflow the
  // 4096-entry capacity: such rows took two reads. More sample rounds keep the rank >= 4 (5 rounds
  // at 5 x 2^18, 64 at 2^24): one read. Gaussian pre-activations with the fused bias and relu
  // (the encoder's form), float4 loads.
  for (const int64_t n : {int64_t(5) << 18, (int64_t(1) << 24) + 4}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    TopKCase c;
    c.B = 2, c.n = n, c.kcap = 64, c.relu = true;
    c.h = randn(size_t(c.B * n), 35 + uint64_t(n));
    c.bias = randn(size_t(n), 36, 0.5f);
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, c.B, 0, 0, 0);
    EXPECT_EQ(p.vec, c.B);
  }
}

TEST(CudaTopKPaths, TwoReadsWhenNotSampled) {
  SKIP_WITHOUT_GPU();
  // n < 8192 or 3k > 4096 skip the sample; the ramps put at most ~5000 entries in the top bin and
  // above (capacity 4096, 8192 for k 5000): two reads. n 8188 collects with float4 loads.
  const struct {
    int64_t B, n, k;
  } shapes[] = {{5, 3001, 100}, {4, 8191, 64}, {3, 8188, 200}, {2, 30001, 5000}, {11, 2049, 129}};
  for (auto s : shapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " n=" << s.n << " k=" << s.k);
    TopKCase c;
    c.B = s.B, c.n = s.n, c.kcap = s.k;
    c.h = tie_free_rows(s.B, s.n, 300 + uint64_t(s.n));
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, 0, s.B, 0, 0);
    EXPECT_EQ(p.vec, s.n % 4 == 0 ? s.B : 0);
  }
}

TEST(CudaTopKPaths, FourReadsWhenTheTopBinIsCrowded) {
  SKIP_WITHOUT_GPU();
  // Thousands of distinct values sharing the top 11 bits (> the 4096-entry capacity). n >= 8192
  // and 3k <= 4096: the sample's threshold is that bin too, so its pass overflows (a miss) first.
  const struct {
    int64_t B, n, k;
    bool sampled;
  } shapes[] = {{4, 20001, 64, true}, {3, 9001, 1152, true}, {2, 30001, 5000, false}, {3, 6001, 64, false}};
  for (auto s : shapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " n=" << s.n << " k=" << s.k);
    TopKCase c;
    c.B = s.B, c.n = s.n, c.kcap = s.k;
    c.h = crowded_rows(s.B, s.n, 400 + uint64_t(s.n));
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, 0, 0, s.B, s.sampled ? s.B : 0);
  }
}

TEST(CudaTopKPaths, SampleMissFallsBack) {
  SKIP_WITHOUT_GPU();
  // Too few candidates: 30 values far above the rest, all inside the sampled runs, so the sample's
  // 16th largest (r = 64 * 4 * 4096 / 65536) sets a threshold that only those 30 pass (< k = 64).
  // The radix passes then take the ramp's top bin too: two reads. float4 loads, fused bias.
  {
    TopKCase c;
    c.B = 3, c.n = 65536, c.kcap = 64;
    c.h = tie_free_rows(c.B, c.n, 601);  // values within +-32.8
    c.bias = randn(size_t(c.n), 602, 0.1f);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t r = 0; r < 30; ++r) c.h[size_t(b * c.n + r * c.n / 32 + 5 + b)] = 1000.f + float(r);
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, 0, c.B, 0, c.B);
    EXPECT_EQ(p.vec, 2 * c.B);  // the missed pass and the two-read collection
  }
  // Too many: every sampled entry holds a distinct value just above 1 and the rest of the row is a
  // ramp over +-32.8, so the threshold (the bin of 1.0) passes half the row (> 4096); the ramp's
  // top bin alone holds the cut: two reads. Scalar loads (n odd), mask, device-side k, relu.
  {
    TopKCase c;
    c.B = 3, c.n = 65536 + 123, c.kcap = 100, c.k_used = 64, c.relu = true;
    c.h = tie_free_rows(c.B, c.n, 603);  // multiples of 1e-3: none in (1, 1.0005)
    const std::vector<int64_t> js = sampled_entries(c.n);
    for (int64_t b = 0; b < c.B; ++b)
      for (size_t i = 0; i < js.size(); ++i) c.h[size_t(b * c.n + js[i])] = 1.f + float(i + 1) * 0x1p-23f;
    c.mask.resize(size_t(c.n));
    for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(j)] = j % 10 != 7;
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, 0, c.B, 0, c.B);
    EXPECT_EQ(p.vec, 0);
  }
}

TEST(CudaTopKPaths, ExactTiesAtTheThresholdOnEveryPath) {
  SKIP_WITHOUT_GPU();
  // Values from a set of 8, so the cut falls inside a run of thousands of equal values: the
  // winners among them are the lowest indices. n 3001 fits the capacity (two reads); at n 60001
  // each value has ~7500 copies, more than the capacity: the sampled threshold overflows, then
  // four reads.
  for (const int64_t n : {int64_t(3001), int64_t(60001)}) {
    for (const int64_t k : {int64_t(100), int64_t(1000)}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " k=" << k);
      TopKCase c;
      c.B = 5, c.n = n, c.kcap = k;
      c.h.resize(size_t(c.B * n));
      std::mt19937_64 rng(uint64_t(n * 7 + k));
      for (float& v : c.h) v = float(int(rng() % 8)) * 0.125f + 0.5f;
      const PathRows p = expect_case_matches_cpu(c);
      if (n <= 4096)
        expect_paths(p, 0, c.B, 0, 0);
      else
        expect_paths(p, 0, 0, c.B, c.B);
    }
  }
  // A long row whose top bin holds ~2000 copies of 5.0 under 32 distinct larger values: the
  // sample's threshold is the bin of 5.0, so one read, and the 68 lowest-index 5.0s make the cut.
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
  expect_paths(p, c.B, 0, 0, 0);
}

TEST(CudaTopKPaths, AuxKMaskAndDeviceK) {
  SKIP_WITHOUT_GPU();
  // AuxK's form: k = d_in / 2 = 1152 over d_sae = 65536 with ~5% of the latents dead (eligible),
  // relu, device-side k: one read with float4 loads (the mask as 4-byte words).
  {
    TopKCase c;
    c.B = 3, c.n = 65536, c.kcap = 1152, c.k_used = 1152, c.relu = true;
    c.h = tie_free_rows(c.B, c.n, 91);
    c.mask.resize(size_t(c.n));
    for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(j)] = (j * 7919) % 20 == 0;
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, c.B, 0, 0, 0);
    EXPECT_EQ(p.vec, c.B);
    // A device k below the capacity k leaves the tail untouched.
    c.k_used = 777;
    const PathRows q = expect_case_matches_cpu(c);
    expect_paths(q, c.B, 0, 0, 0);
  }
  // 20% eligible, crowded into one radix bin: > 4096 candidates, the sample misses, four reads.
  {
    TopKCase c;
    c.B = 2, c.n = 65536, c.kcap = 1152, c.k_used = 1152, c.relu = true;
    c.h = crowded_rows(c.B, c.n, 92);
    c.mask.resize(size_t(c.n));
    for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(j)] = (j * 7919) % 5 == 0;
    const PathRows p = expect_case_matches_cpu(c);
    expect_paths(p, 0, 0, c.B, c.B);
  }
  // Fewer eligible latents than k: the rest of the cut is masked-out entries, lowest index first,
  // reporting their own values. n 3001 fits the capacity (every entry is a candidate), 10001 not;
  // there the sample holds fewer than r eligible keys (threshold digit 0), so no one-read pass.
  for (const int64_t n : {int64_t(3001), int64_t(10001)}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    TopKCase c;
    c.B = 4, c.n = n, c.kcap = 600, c.k_used = 500;
    c.h = tie_free_rows(c.B, n, 93 + uint64_t(n));
    c.bias = randn(size_t(n), 94, 0.1f);
    c.mask.resize(size_t(n));
    for (int64_t j = 0; j < n; ++j) c.mask[size_t(j)] = (j * 31) % 30 == 1;  // n / 30 < 500 eligible
    const PathRows p = expect_case_matches_cpu(c);
    if (n <= 4096)
      expect_paths(p, 0, c.B, 0, 0);
    else
      expect_paths(p, 0, 0, c.B, 0);
  }
}

// TopKOptions::sorted = false (AuxK's dense path): the same winners as the CPU twin's top k, in
// ascending index order, from three radix passes and one ordered pass (counted as four reads),
// never a sort; on tie-free rows, on rows full of ties at the threshold (lowest indices win),
// with fewer eligible entries than k (masked ones fill the cut), and on a crowded radix bin.
TEST(CudaTopKPaths, UnsortedGivesTheSetInIndexOrder) {
  SKIP_WITHOUT_GPU();
  {  // AuxK's compacted form: [B, n_dead] with a device k below the capacity, odd n
    TopKCase c;
    c.B = 5, c.n = 3299, c.kcap = 1200, c.k_used = 1152, c.sorted = false;
    c.h = tie_free_rows(c.B, c.n, 95);
    expect_paths(expect_case_matches_cpu(c), 0, 0, c.B, 0);
  }
  {  // ties: 40 distinct values over 3296 entries, plus a bias that keeps them tied per latent
    TopKCase c;
    c.B = 4, c.n = 3296, c.kcap = 1000, c.sorted = false;
    std::mt19937_64 rng(96);
    c.h.resize(size_t(c.B * c.n));
    for (float& v : c.h) v = float(int(rng() % 40)) * 0.25f - 3.f;
    c.bias.assign(size_t(c.n), 0.5f);
    expect_paths(expect_case_matches_cpu(c), 0, 0, c.B, 0);
  }
  {  // fewer eligible entries than k: masked ones (lowest index first) complete the cut
    TopKCase c;
    c.B = 3, c.n = 3001, c.kcap = 600, c.k_used = 500, c.sorted = false;
    c.h = tie_free_rows(c.B, c.n, 97);
    c.mask.resize(size_t(c.n));
    for (int64_t j = 0; j < c.n; ++j) c.mask[size_t(j)] = (j * 31) % 30 == 1;
    expect_paths(expect_case_matches_cpu(c), 0, 0, c.B, 0);
  }
  {  // a long row (no one-read attempt when unsorted), relu, and a crowded bin
    TopKCase c;
    c.B = 2, c.n = 65541, c.kcap = 64, c.relu = true, c.sorted = false;
    c.h = tie_free_rows(c.B, c.n, 98);
    expect_paths(expect_case_matches_cpu(c), 0, 0, c.B, 0);
    c.n = 20011, c.kcap = 1152;
    c.h = crowded_rows(c.B, c.n, 99);
    expect_paths(expect_case_matches_cpu(c), 0, 0, c.B, 0);
  }
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTopK, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
