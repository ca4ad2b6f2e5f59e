// CPU twin of clip_grad_norm (torch.nn.utils.clip_grad_norm_ with max_norm 1.0, as SAETrainer
// calls it): N = sqrt(sum over the four grads of g^2), c = min(1, max_norm / (N + 1e-6)), every
// grad *= c. Like torch, the multiply happens even when c == 1.
#include <algorithm>
#include <cmath>

#include "cpu/train_detail.h"
#include "topksae/train.h"

namespace topksae::cpu {

template <typename T>
double clip_grad_norm(Params<T>* grad, double max_norm) {
  std::vector<T>* parts[] = {&grad->W_enc, &grad->b_enc, &grad->W_dec, &grad->b_dec};
  double sq = 0;
  for (auto* v : parts) sq += detail::sum_squares(v->data(), int64_t(v->size()));
  const double norm = std::sqrt(sq);
  const T c = T(std::min(1.0, max_norm / (norm + kClipEps)));
  for (auto* v : parts) {
    T* x = v->data();
    const int64_t m = int64_t(v->size());
#pragma omp parallel for schedule(static) if (m >= detail::kParallelMin)
    for (int64_t i = 0; i < m; ++i) x[i] *= c;
  }
  return norm;
}

template double clip_grad_norm<float>(Params<float>*, double);
template double clip_grad_norm<double>(Params<double>*, double);

}  // namespace topksae::cpu
