// CPU twin of the dense GEMM: C = beta*C + A @ B, row-major. Rows of C are split across threads;
// each thread walks K in the outer loop so that one row of B streams through the vector units
// for a block of rows of A (B is the large weight matrix; reusing each of its rows for several
// rows of A is what keeps this off the memory wall).
#include <algorithm>
#include <cstring>

#include "topksae/ops_cpu.h"

namespace topksae::cpu {

void gemm(const float* A, const float* B, float* C, int64_t M, int64_t K, int64_t N, float beta) {
  constexpr int64_t kRowBlock = 8;     // rows of A sharing one pass over B
  constexpr int64_t kColBlock = 2048;  // columns of B/C kept in cache together
  const int64_t row_blocks = (M + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(dynamic)
  for (int64_t rb = 0; rb < row_blocks; ++rb) {
    const int64_t r0 = rb * kRowBlock, r1 = std::min(M, r0 + kRowBlock);
    for (int64_t c0 = 0; c0 < N; c0 += kColBlock) {
      const int64_t c1 = std::min(N, c0 + kColBlock);
      for (int64_t r = r0; r < r1; ++r) {
        float* c = C + r * N;
        if (beta == 0.f) std::memset(c + c0, 0, size_t(c1 - c0) * sizeof(float));
      }
      for (int64_t kk = 0; kk < K; ++kk) {
        const float* b = B + kk * N;
        for (int64_t r = r0; r < r1; ++r) {
          const float a = A[r * K + kk];
          if (a == 0.f) continue;
          float* c = C + r * N;
#pragma omp simd
          for (int64_t j = c0; j < c1; ++j) c[j] += a * b[j];
        }
      }
    }
  }
}

}  // namespace topksae::cpu
