// CPU twin of adam_step: torch.optim.Adam (single-tensor path, no weight decay, no amsgrad).
// The bias corrections and the step size are computed in double (Python floats in torch) and
// rounded to T once; per element:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps)
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "cpu/train_detail.h"
#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae::cpu {

template <typename T>
void adam_step(Params<T>* p, Params<T>* m, Params<T>* v, const Params<T>& grad, double lr, double beta1, double beta2,
               double eps, int64_t t) {
  TOPKSAE_CHECK(t >= 1, "adam_step: step t must be >= 1, got ", t);
  const double bc1 = 1.0 - std::pow(beta1, double(t));
  const double bc2 = 1.0 - std::pow(beta2, double(t));
  const T step_size = T(lr / bc1);
  const T bc2_sqrt = T(std::sqrt(bc2));
  const T b1 = T(beta1), b2 = T(beta2), one_b1 = T(1.0 - beta1), one_b2 = T(1.0 - beta2), e = T(eps);
  std::vector<T>* ps[] = {&p->W_enc, &p->b_enc, &p->W_dec, &p->b_dec};
  std::vector<T>* ms[] = {&m->W_enc, &m->b_enc, &m->W_dec, &m->b_dec};
  std::vector<T>* vs[] = {&v->W_enc, &v->b_enc, &v->W_dec, &v->b_dec};
  const std::vector<T>* gs[] = {&grad.W_enc, &grad.b_enc, &grad.W_dec, &grad.b_dec};
  for (int q = 0; q < 4; ++q) {
    const int64_t n = int64_t(ps[q]->size());
    TOPKSAE_CHECK(ms[q]->size() == size_t(n) && vs[q]->size() == size_t(n) && gs[q]->size() == size_t(n),
                  "adam_step: parameter, moment and gradient sizes differ");
    T* pp = ps[q]->data();
    T* mm = ms[q]->data();
    T* vv = vs[q]->data();
    const T* gg = gs[q]->data();
    if constexpr (std::is_same_v<T, float>) {
      // The same arithmetic, vectorised and dispatched (vec.h), in fixed chunks over the threads.
      constexpr int64_t kChunk = 1 << 14;
      const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= detail::kParallelMin)
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
        vec::adam(pp + i0, mm + i0, vv + i0, gg + i0, len, b1, b2, one_b1, one_b2, step_size, bc2_sqrt, e);
      }
    } else {
#pragma omp parallel for schedule(static) if (n >= detail::kParallelMin)
      for (int64_t i = 0; i < n; ++i) {
        const T g = gg[i];
        mm[i] = b1 * mm[i] + one_b1 * g;
        vv[i] = b2 * vv[i] + one_b2 * (g * g);
        const T denom = std::sqrt(vv[i]) / bc2_sqrt + e;
        pp[i] -= step_size * (mm[i] / denom);
      }
    }
  }
}

template void adam_step<float>(Params<float>*, Params<float>*, Params<float>*, const Params<float>&, double, double,
                               double, double, int64_t);
template void adam_step<double>(Params<double>*, Params<double>*, Params<double>*, const Params<double>&, double,
                                double, double, double, int64_t);

}  // namespace topksae::cpu
