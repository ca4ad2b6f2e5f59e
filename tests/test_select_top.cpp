// detail::select_top (the heap top-k under topk_select and the training forward's top-k / AuxK)
// against the definition: a full stable sort by (key desc, index asc), key(NaN) = -inf. Rows with
// many ties, NaN, +-inf, all-equal rows, ascending and descending rows (the heap's worst and best
// cases), sizes that are not multiples of the 16-wide block, and candidate lists (AuxK's form).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "cpu/select_top.h"
#include "cpu/vec.h"

namespace topksae::cpu {
namespace {

template <typename T>
std::vector<int32_t> reference(const std::vector<T>& row, const std::vector<int32_t>& cand, int64_t k) {
  std::vector<int32_t> o = cand;
  auto key = [&](int32_t j) { return std::isnan(row[j]) ? -std::numeric_limits<T>::infinity() : row[j]; };
  std::stable_sort(o.begin(), o.end(), [&](int32_t a, int32_t c) { return key(a) > key(c) || (key(a) == key(c) && a < c); });
  o.resize(static_cast<size_t>(k));
  return o;
}

template <typename T>
void check_rows(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  int checked = 0;
  for (int64_t m : {1, 2, 15, 16, 17, 33, 100, 257, 1000}) {
    for (int kind = 0; kind < 6; ++kind) {
      std::vector<T> row(static_cast<size_t>(m));
      for (int64_t i = 0; i < m; ++i) {
        switch (kind) {
          case 0: row[size_t(i)] = T(std::normal_distribution<double>(0, 1)(rng)); break;   // tie-free
          case 1: row[size_t(i)] = T(int(rng() % 5)) - T(2); break;                          // many ties
          case 2: row[size_t(i)] = T(1.5); break;                                            // all equal
          case 3: row[size_t(i)] = T(i); break;                                              // ascending
          case 4: row[size_t(i)] = T(-i); break;                                             // descending
          default: {
            const uint64_t r = rng() % 8;
            row[size_t(i)] = r == 0 ? nan : r == 1 ? inf : r == 2 ? -inf : T(int(rng() % 3));
          }
        }
      }
      std::vector<int32_t> all(static_cast<size_t>(m));
      std::iota(all.begin(), all.end(), 0);
      std::vector<int32_t> cand;  // every third index, ascending: AuxK's candidate list
      for (int32_t i = 0; i < m; i += 3) cand.push_back(i);
      for (int64_t k : {int64_t(1), int64_t(3), int64_t(8), m / 2, m}) {
        if (k < 1 || k > m) continue;
        std::vector<int32_t> heap(static_cast<size_t>(m)), got(static_cast<size_t>(k));
        detail::select_top(row.data(), static_cast<const int32_t*>(nullptr), m, k, heap.data(), got.data());
        EXPECT_EQ(got, reference(row, all, k)) << "m=" << m << " kind=" << kind << " k=" << k;
        const int64_t mc = int64_t(cand.size());
        if (k <= mc) {
          detail::select_top(row.data(), cand.data(), mc, k, heap.data(), got.data());
          EXPECT_EQ(got, reference(row, cand, k)) << "candidates: m=" << mc << " kind=" << kind << " k=" << k;
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 200);
}

TEST(SelectTop, MatchesFullSortFloat) { check_rows<float>(1); }
TEST(SelectTop, MatchesFullSortDouble) { check_rows<double>(2); }

// The dispatched float kernels against plain double loops (dot: 16 partial sums, so not the
// sequential rounding, but within a few ulps of the sum's magnitude).
TEST(VecKernels, DotAxpyAdamAgainstPlainLoops) {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int64_t n : {1, 7, 16, 17, 100, 515}) {
    std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n)), y(static_cast<size_t>(n));
    for (auto* v : {&a, &b, &y})
      for (float& x : *v) x = nd(rng);
    double ref = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) ref += double(a[size_t(i)]) * b[size_t(i)], mag += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
    EXPECT_NEAR(vec::dot(a.data(), b.data(), n), ref, 1e-6 * mag + 1e-30) << n;
    std::vector<float> y2 = y;
    vec::axpy(0.37f, a.data(), y2.data(), n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(y2[size_t(i)], y[size_t(i)] + 0.37f * a[size_t(i)]) << i;  // exact: no FMA
    std::vector<float> p = y, m = b, v(static_cast<size_t>(n)), p2 = y, m2 = b, v2(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = v2[size_t(i)] = std::fabs(a[size_t(i)]);
    vec::adam(p.data(), m.data(), v.data(), a.data(), n, 0.9f, 0.999f, 0.1f, 0.001f, 0.01f, 0.5f, 1e-8f);
    for (int64_t i = 0; i < n; ++i) {  // the scalar formula of adam_step.cpp, bit for bit
      const float g = a[size_t(i)];
      m2[size_t(i)] = 0.9f * m2[size_t(i)] + 0.1f * g;
      v2[size_t(i)] = 0.999f * v2[size_t(i)] + 0.001f * (g * g);
      const float denom = std::sqrt(v2[size_t(i)]) / 0.5f + 1e-8f;
      p2[size_t(i)] -= 0.01f * (m2[size_t(i)] / denom);
    }
    EXPECT_EQ(p, p2);
    EXPECT_EQ(m, m2);
    EXPECT_EQ(v, v2);
  }
}

}  // namespace
}  // namespace topksae::cpu
