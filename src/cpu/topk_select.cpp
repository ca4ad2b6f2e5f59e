// CPU twin of the per-row top-k selection (detail::select_top: one pass with a heap of k).
// Order: larger value first; equal values, lower index first. NaN ranks below every number.
#include <vector>

#include <omp.h>

#include "cpu/select_top.h"
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
    int32_t* heap = scratch + int64_t(omp_get_thread_num()) * n;  // this thread's n entries
#pragma omp for
    for (int64_t b = 0; b < B; ++b) {
      const float* row = h + b * n;
      detail::select_top(row, static_cast<const int32_t*>(nullptr), n, k, heap, idx + b * k);
      for (int64_t i = 0; i < k; ++i) val[b * k + i] = row[idx[b * k + i]];
    }
  }
}

}  // namespace topksae::cpu
