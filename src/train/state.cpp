// Parameter sets, the trainer state, sparsity statistics and the named per-step metrics.
#include <cmath>

#include "topksae/train.h"

namespace topksae {

template <typename T>
Params<T> Params<T>::zeros(int64_t d_in, int64_t d_sae) {
  Params p;
  p.W_enc.assign(static_cast<size_t>(d_in * d_sae), T(0));
  p.b_enc.assign(static_cast<size_t>(d_sae), T(0));
  p.W_dec.assign(static_cast<size_t>(d_sae * d_in), T(0));
  p.b_dec.assign(static_cast<size_t>(d_in), T(0));
  return p;
}
template struct Params<float>;
template struct Params<double>;

SaeParams to_sae_params(const Params<float>& p) {
  SaeParams s;
  s.W_enc = p.W_enc;
  s.b_enc = p.b_enc;
  s.W_dec = p.W_dec;
  s.b_dec = p.b_dec;
  return s;
}

Params<float> from_sae_params(const SaeParams& s) {
  Params<float> p;
  p.W_enc = s.W_enc;
  p.b_enc = s.b_enc;
  p.W_dec = s.W_dec;
  p.b_dec = s.b_dec;
  return p;
}

SparsityStats SparsityStats::zeros(int64_t d_sae) {
  SparsityStats s;
  s.since_fired.assign(static_cast<size_t>(d_sae), 0);
  s.act_freq.assign(static_cast<size_t>(d_sae), 0);
  s.n_frac_active = 0;
  return s;
}

TrainState TrainState::initial(const TrainConfig& cfg) {
  cfg.validate();
  TrainState st;
  st.params = cpu::init_params<float>(cfg);
  st.adam_m = Params<float>::zeros(cfg.d_in, cfg.d_sae);
  st.adam_v = Params<float>::zeros(cfg.d_in, cfg.d_sae);
  st.stats = SparsityStats::zeros(cfg.d_sae);
  return st;
}

std::vector<float> log_feature_sparsity(const SparsityStats& s) {
  std::vector<float> out(s.act_freq.size());
  for (size_t j = 0; j < out.size(); ++j) {
    // sae_lens: act_freq_scores / n_frac_active_samples (float32 tensors), then log10(x + 1e-10).
    const float density = s.n_frac_active > 0 ? float(s.act_freq[j]) / float(s.n_frac_active) : NAN;
    out[j] = std::log10(density + 1e-10f);
  }
  return out;
}

std::vector<std::pair<std::string, double>> StepMetrics::named() const {
  std::vector<std::pair<std::string, double>> v = {
      {"losses/overall_loss", overall_loss},
      {"losses/mse_loss", mse_loss},
      {"losses/auxiliary_reconstruction_loss", auxiliary_reconstruction_loss},
      {"metrics/explained_variance", explained_variance},
      {"metrics/l0", l0},
      {"sparsity/mean_passes_since_fired", mean_passes_since_fired},
      {"sparsity/dead_features", double(dead_features)},
      {"details/current_learning_rate", current_learning_rate},
      {"details/n_training_samples", double(n_training_samples)},
  };
  if (has_sparsity) {
    v.emplace_back("metrics/mean_log10_feature_sparsity", mean_log10_feature_sparsity);
    v.emplace_back("sparsity/below_1e-5", double(below_1e_5));
    v.emplace_back("sparsity/below_1e-6", double(below_1e_6));
  }
  return v;
}

}  // namespace topksae
