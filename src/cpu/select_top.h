// The per-row top-k selection shared by topk_select (inference) and the training forward (top-k
// and AuxK), templated on the scalar type so the double path (gradient checks) runs the same code.
// Order: larger value first; equal values, lower index first; NaN ranks below every number.
//
// One pass over the candidates in ascending index order with a heap of the k best so far (worst
// on top). Because the scan is in ascending index order, a later candidate enters exactly when its
// value is strictly greater than the worst's key (an equal value loses to the lower index held),
// so most of the row is a compare against one threshold: the loop over blocks of 16 checks "any
// greater?" first (SSE2, the x86-64 baseline), and only a block holding a winner goes through the
// heap. O(m + k log k + (entries) log k) instead of nth_element's several
// passes over an index array; the chosen set and its order are those of the comparator above.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace topksae::cpu::detail {

// The k best of row[cand[0..m)] (candidates given by index, ascending; cand == nullptr: the
// indices 0..m-1), best first, into idx[0..k). heap is scratch of m entries. 1 <= k <= m.
template <typename T>
void select_top(const T* row, const int32_t* cand, int64_t m, int64_t k, int32_t* heap, int32_t* idx) {
  auto key = [row](int32_t j) { const T v = row[j]; return v != v ? -std::numeric_limits<T>::infinity() : v; };
  auto before = [&](int32_t a, int32_t c) {
    const T ka = key(a), kc = key(c);
    return ka > kc || (ka == kc && a < c);
  };
  if (4 * k > m) {
    // k a large share of m (AuxK's k_aux = d_in/2 among few dead latents): most candidates would go
    // through the heap; a partial selection over all of them is faster there (measured: 256 of 427,
    // nth_element 46 ms vs heap 66 ms for 1024 rows). Same comparator, same picks.
    for (int64_t i = 0; i < m; ++i) heap[i] = cand ? cand[i] : int32_t(i);
    if (k < m) std::nth_element(heap, heap + (k - 1), heap + m, before);
    std::sort(heap, heap + k, before);
    std::copy(heap, heap + k, idx);
    return;
  }
  for (int64_t i = 0; i < k; ++i) heap[i] = cand ? cand[i] : int32_t(i);
  if (k < m) {
    std::make_heap(heap, heap + k, before);  // heap[0]: the worst of the k held
    T thr = key(heap[0]);
    // heap[0] = j, then sift down: a child moves up while it is worse than j.
    auto replace_top = [&](int32_t j) {
      int64_t pos = 0;
      for (;;) {
        int64_t c = 2 * pos + 1;
        if (c >= k) break;
        if (c + 1 < k && before(heap[c], heap[c + 1])) ++c;  // the worse child
        if (!before(j, heap[c])) break;
        heap[pos] = heap[c];
        pos = c;
      }
      heap[pos] = j;
      thr = key(heap[0]);
    };
    int64_t i = k;
    if (cand == nullptr) {
      constexpr int64_t kBlock = 16;
      for (; i < m && i % kBlock != 0; ++i)  // up to a block boundary
        if (row[i] > thr) replace_top(int32_t(i));
      for (; i + kBlock <= m; i += kBlock) {
        // Does any of the 16 beat the threshold? NaN compares false: it never does, as its key
        // -inf would not. Four SSE2 compares for float (GCC leaves the plain loop scalar).
        int any = 0;
#if defined(__SSE2__)
        if constexpr (std::is_same_v<T, float>) {
          const __m128 t4 = _mm_set1_ps(thr);
          const float* p = row + i;
          const __m128 a = _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(p), t4), _mm_cmpgt_ps(_mm_loadu_ps(p + 4), t4));
          const __m128 b = _mm_or_ps(_mm_cmpgt_ps(_mm_loadu_ps(p + 8), t4), _mm_cmpgt_ps(_mm_loadu_ps(p + 12), t4));
          any = _mm_movemask_ps(_mm_or_ps(a, b));
        } else
#endif
        {
          for (int64_t t = 0; t < kBlock; ++t) any |= row[i + t] > thr;
        }
        if (!any) continue;
        for (int64_t t = 0; t < kBlock; ++t)
          if (row[i + t] > thr) replace_top(int32_t(i + t));
      }
      for (; i < m; ++i)
        if (row[i] > thr) replace_top(int32_t(i));
    } else {
      for (; i < m; ++i)
        if (row[cand[i]] > thr) replace_top(cand[i]);
    }
  }
  std::sort(heap, heap + k, before);
  std::copy(heap, heap + k, idx);
}

}  // namespace topksae::cpu::detail
