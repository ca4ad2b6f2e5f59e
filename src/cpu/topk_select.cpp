// CPU twin of the per-row top-k selection: a partial selection (nth_element), then a sort of the
// k winners only. Order: larger value first; equal values, lower index first. NaN ranks below
// every number so the comparison stays a strict weak order.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu {

void topk_select(const float* h, int64_t B, int64_t n, int64_t k, int32_t* idx, float* val) {
  TOPKSAE_CHECK(k >= 1 && k <= n, "top-k: k=", k, " must be in [1, ", n, "]");
#pragma omp parallel
  {
    std::vector<int32_t> order(static_cast<size_t>(n));  // per-thread scratch
#pragma omp for
    for (int64_t b = 0; b < B; ++b) {
      const float* row = h + b * n;
      auto key = [row](int32_t j) { return std::isnan(row[j]) ? -INFINITY : row[j]; };
      auto before = [&](int32_t a, int32_t c) {
        const float ka = key(a), kc = key(c);
        return ka > kc || (ka == kc && a < c);
      };
      std::iota(order.begin(), order.end(), 0);
      if (k < n) std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), before);
      std::sort(order.begin(), order.begin() + k, before);
      for (int64_t i = 0; i < k; ++i) {
        idx[b * k + i] = order[size_t(i)];
        val[b * k + i] = row[order[size_t(i)]];
      }
    }
  }
}

}  // namespace topksae::cpu
