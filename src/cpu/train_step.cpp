// CPU twin of train_step: one SAETrainer._train_step of sae_lens 6.13.1, in its order:
//   1. at the start of a step with (step+1) % feature_sampling_window == 0: log the window's
//      feature sparsity, reset act_freq and n_frac_active;
//   2. forward with the dead mask of the statistics BEFORE this step (since_fired > window);
//   3. bookkeeping (since_fired, act_freq, n_frac_active);
//   4. backward, global clipping, Adam at lr_at(step) with t = step + 1; step += 1.
#include <cmath>

#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae::cpu {

StepMetrics train_step(const TrainConfig& cfg, TrainState* st, const float* x, int64_t B, TrainWorkspace* ws) {
  const int64_t n = cfg.d_sae;
  TOPKSAE_CHECK(st->stats.since_fired.size() == size_t(n), "train_step: state does not match d_sae=", n);
  StepMetrics m;
  m.step = st->step;

  if ((st->step + 1) % cfg.feature_sampling_window == 0) {
    const std::vector<float> log_sp = log_feature_sparsity(st->stats);
    double sum = 0;
    for (size_t j = 0; j < log_sp.size(); ++j) {
      sum += log_sp[j];
      const float density = float(st->stats.act_freq[j]) / float(st->stats.n_frac_active);
      m.below_1e_5 += density < 1e-5f;
      m.below_1e_6 += density < 1e-6f;
    }
    m.has_sparsity = true;
    m.mean_log10_feature_sparsity = sum / double(n);
    std::fill(st->stats.act_freq.begin(), st->stats.act_freq.end(), 0);
    st->stats.n_frac_active = 0;
  }

  ws->dead.resize(size_t(n));
  const int64_t n_dead = dead_mask(st->stats, cfg.dead_feature_window, ws->dead.data());
  const double s = st->scaling_factor.value_or(1.0);
  train_forward(cfg, st->params, x, B, s, n_dead > 0 ? ws->dead.data() : nullptr, &ws->fwd);
  update_dead_stats(ws->fwd, &st->stats);

  train_backward(cfg, st->params, ws->fwd, &ws->grad);
  m.grad_norm = clip_grad_norm(&ws->grad);
  m.lr_used = lr_at(cfg, st->step);
  adam_step(&st->params, &st->adam_m, &st->adam_v, ws->grad, m.lr_used, cfg.adam_beta1, cfg.adam_beta2, kAdamEps,
            st->step + 1);
  st->step += 1;
  st->n_training_samples += B;

  const TrainForward<float>& f = ws->fwd;
  m.overall_loss = f.loss;
  m.mse_loss = f.mse_loss;
  m.auxiliary_reconstruction_loss = f.aux_loss;
  m.l0 = double(f.nnz) / double(B);
  m.explained_variance = f.explained_variance;
  double since = 0;
  for (int64_t c : st->stats.since_fired) {
    since += double(c);
    m.dead_features += c > cfg.dead_feature_window;
  }
  m.mean_passes_since_fired = since / double(n);
  m.current_learning_rate = lr_at(cfg, st->step);  // after the scheduler stepped, as sae_lens logs it
  m.n_training_samples = st->n_training_samples;
  return m;
}

}  // namespace topksae::cpu
