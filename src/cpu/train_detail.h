// Internal helpers shared by the CPU training ops, templated on the scalar type so the double
// path (gradient checks) runs the same code as the float path.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "cpu/select_top.h"
#include "cpu/vec.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu::detail {

// Below this many element-operations a loop runs on one thread: a parallel region costs more than
// it saves, and on a loaded machine (ctest -j) idle-waiting threads cost much more.
inline constexpr int64_t kParallelMin = int64_t(1) << 18;

// C[M,N] = C + A[M,K] @ B[K,N]; float goes to cpu::gemm (oneDNN), double to a plain loop
// (double is only used at gradient-check sizes).
template <typename T>
void gemm_acc(const T* A, const T* B, T* C, int64_t M, int64_t K, int64_t N) {
  if constexpr (std::is_same_v<T, float>) {
    gemm(A, B, C, M, K, N, 1.f);
  } else {
#pragma omp parallel for if (M * K * N >= kParallelMin)
    for (int64_t r = 0; r < M; ++r)
      for (int64_t kk = 0; kk < K; ++kk) {
        const T a = A[r * K + kk];
        for (int64_t j = 0; j < N; ++j) C[r * N + j] += a * B[kk * N + j];
      }
  }
}

// a . b and y += alpha x: float through the dispatched kernels (vec.h), double as plain loops.
template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    return vec::dot(a, b, n);
  } else {
    T s = 0;
    for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
    return s;
  }
}
template <typename T>
void axpy(T alpha, const T* x, T* y, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    vec::axpy(alpha, x, y, n);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
  }
}

// select_top (src/cpu/select_top.h) with the scratch in a vector sized here.
template <typename T>
void select_top(const T* row, const int32_t* cand, int64_t m, int64_t k, std::vector<int32_t>& heap, int32_t* idx) {
  heap.resize(static_cast<size_t>(m));
  select_top(row, cand, m, k, heap.data(), idx);
}

// Sum of squares of v[0..n) in double, in fixed chunks so the result does not depend on the
// number of threads (checkpoint resume must be bit-identical).
template <typename T>
double sum_squares(const T* v, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> part(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    double s = 0;
    const int64_t e = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < e; ++i) s += double(v[i]) * double(v[i]);
    part[size_t(c)] = s;
  }
  double s = 0;
  for (double p : part) s += p;
  return s;
}

}  // namespace topksae::cpu::detail
