// CPU twin of the per-row top-k selection: a partial selection (nth_element), then a sort of the
// k winners only. Order: larger value first; equal values, lower index first. NaN ranks below
// every number so the comparison stays a strict weak order.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include <omp.h>

#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu {

void topk_select(const float* h, int64_t B, int64_t n, int64_t k, int32_t* idx, float* val) {
  const int threads = omp_get_max_threads();
  std::vector<int32_t> scratch(static_cast<size_t>(int64_t(threads) * n));
  topk_select(h, B, n, k, idx, val, scratch.data(), threads);
}

void topk_select(const float* h, int64_t B, int64_t n, int64_t k, int32_t* idx, float* val, int32_t* scratch,
                 int threads) {
  TOPKSAE_CHECK(k >= 1 && k <= n, "top-k: k=", k, " must be in [1, ", n, "]");
  TOPKSAE_CHECK(threads >= 1 && scratch != nullptr, "top-k: scratch for ", threads, " threads is missing");
#pragma omp parallel num_threads(threads)
  {
    int32_t* order = scratch + int64_t(omp_get_thread_num()) * n;  // [n], this thread's candidates
#pragma omp for
    for (int64_t b = 0; b < B; ++b) {
      const float* row = h + b * n;
      auto key = [row](int32_t j) { return std::isnan(row[j]) ? -INFINITY : row[j]; };
      auto before = [&](int32_t a, int32_t c) {
        const float ka = key(a), kc = key(c);
        return ka > kc || (ka == kc && a < c);
      };
      std::iota(order, order + n, 0);
      if (k < n) std::nth_element(order, order + (k - 1), order + n, before);
      std::sort(order, order + k, before);
      for (int64_t i = 0; i < k; ++i) {
        idx[b * k + i] = order[i];
        val[b * k + i] = row[order[i]];
      }
    }
  }
}

}  // namespace topksae::cpu
