// The activation scaling factor of normalize_activations = expected_average_only_in (sae_lens
// ActivationScaler): estimated before training on batches that are then not trained on, applied
// as s*x during training, folded into the weights on the final save.
#include <cmath>
#include <vector>

#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae::cpu {

double estimate_scaling_factor(ActivationSource& src, int64_t d_in, int64_t batch_size, int64_t n_batches) {
  TOPKSAE_CHECK(n_batches >= 1 && batch_size >= 1, "estimate_scaling_factor: need >= 1 batch of >= 1 rows");
  std::vector<float> batch(static_cast<size_t>(batch_size * d_in));  // [batch_size, d_in]
  double sum_of_means = 0;
  for (int64_t nb = 0; nb < n_batches; ++nb) {
    const int64_t got = src.next(batch.data(), batch_size);
    TOPKSAE_CHECK(got == batch_size, "estimating the activation scaling factor needs ", n_batches, " batches of ",
                  batch_size, " rows, but ", src.describe(), " ran out in batch ", nb + 1);
    double mean_norm = 0;  // torch: acts.norm(dim=-1).mean() in float32, then a Python float
    for (int64_t b = 0; b < batch_size; ++b) {
      float sq = 0;
      for (int64_t i = 0; i < d_in; ++i) sq += batch[size_t(b * d_in + i)] * batch[size_t(b * d_in + i)];
      mean_norm += double(std::sqrt(sq));
    }
    sum_of_means += mean_norm / double(batch_size);
  }
  const double mean_norm = sum_of_means / double(n_batches);
  TOPKSAE_CHECK(mean_norm > 0 && std::isfinite(mean_norm), "estimate_scaling_factor: mean activation norm is ",
                mean_norm, " (all-zero or non-finite data in ", src.describe(), ")");
  return std::sqrt(double(d_in)) / mean_norm;
}

void fold_scaling_factor(SaeParams* p, double s) {
  const float f = float(s);
  for (float& w : p->W_enc) w *= f;
  for (float& w : p->W_dec) w /= f;
  for (float& w : p->b_dec) w /= f;
}

}  // namespace topksae::cpu

namespace topksae {

Sae final_sae(const TrainConfig& cfg, const TrainState& st) {
  Sae sae;
  sae.cfg = cfg.sae_config();
  sae.params = to_sae_params(st.params);
  if (st.scaling_factor) cpu::fold_scaling_factor(&sae.params, *st.scaling_factor);
  sae.cfg.normalize = Normalize::none;  // sae_lens writes "none" after folding
  return sae;
}

}  // namespace topksae
