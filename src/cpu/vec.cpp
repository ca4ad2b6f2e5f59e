// Runtime-dispatched float kernels (vec.h). Compiled with -fno-math-errno (CMakeLists.txt) so that
// std::sqrt in adam vectorises; sqrt stays correctly rounded, only errno is not set.
#include "cpu/vec.h"

#include <cmath>

// Not under the sanitizers: the clones' ifunc resolvers run during relocation, before the sanitizer
// runtime is up (TSan crashes there).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__) && \
    !defined(__SANITIZE_THREAD__)
#define TOPKSAE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TOPKSAE_CLONES
#endif

namespace topksae::cpu::vec {

TOPKSAE_CLONES float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  constexpr int64_t L = 16;
  float acc[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int64_t t = 0; t < L; ++t) acc[t] += a[i + t] * b[i + t];
  for (int64_t w = L / 2; w >= 1; w /= 2)
    for (int64_t t = 0; t < w; ++t) acc[t] += acc[t + w];
  float s = acc[0];
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

TOPKSAE_CLONES void axpy(float alpha, const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

TOPKSAE_CLONES void adam(float* __restrict p, float* __restrict m, float* __restrict v, const float* __restrict g, int64_t n,
                         float b1, float b2, float one_b1, float one_b2, float step_size, float bc2_sqrt, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = b1 * m[i] + one_b1 * gi;
    const float vi = b2 * v[i] + one_b2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
  }
}

}  // namespace topksae::cpu::vec
