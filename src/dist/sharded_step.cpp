// cpu::train_step with the latents sharded, in sae_lens's order (see src/cpu/train_step.cpp):
// sparsity-window reset, forward with the dead mask of before the step, bookkeeping, backward,
// global clipping, Adam. What crosses ranks besides the forward's collectives:
//   - the dead count and the window's sparsity sums (one all-reduce of 4 doubles);
//   - db_dec's  - a * W_enc @ db_enc  term, a sum over all latents: each rank computes its
//     shard's part and an all-reduce of [d_in] adds them, together with the shard's share of
//     the gradients' sum of squares for the global clipping norm (one all-reduce of d_in + 1);
//   - the step's metrics (one all-reduce of 3 doubles).
// The sparse backward (cpu::train_backward on the shard-local forward), the bookkeeping
// (cpu::update_dead_stats) and Adam (cpu::adam_step) run unchanged on the shard.
#include <cmath>
#include <cstring>

#include "dist/sharded_train.h"
#include "topksae/error.h"

namespace topksae::dist {

namespace {

double sum_squares(const std::vector<float>& v) {
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (v.size() >= (size_t(1) << 18))
  for (size_t i = 0; i < v.size(); ++i) s += double(v[i]) * double(v[i]);
  return s;
}

// A cheap fingerprint of the batch: sum of its 32-bit words times odd multipliers, mod 2^64.
uint64_t fingerprint(const float* x, int64_t n) {
  uint64_t h = 0;
#pragma omp parallel for reduction(+ : h) schedule(static) if (n >= (int64_t(1) << 20))
  for (int64_t i = 0; i < n; ++i) {
    uint32_t w;
    std::memcpy(&w, x + i, 4);
    h += uint64_t(w) * (2 * uint64_t(i) + 0x9E3779B97F4A7C15ull);
  }
  return h;
}

}  // namespace

StepMetrics sharded_train_step(Collectives& comm, const TrainConfig& cfg, const ShardRange& r, TrainState* st,
                               const float* x, int64_t B, ShardedWorkspace* ws) {
  const int64_t m = r.size(), d = cfg.d_in;
  TOPKSAE_CHECK(st->stats.since_fired.size() == size_t(m), "sharded_train_step: the state does not hold latents [",
                r.lo, ", ", r.hi, ")");
  comm.set_phase("training", st->step);
  // Every rank reads the batch itself (no broadcast): check that they all read the same one, so a
  // rank given other data or flags fails here instead of training a silently different model.
  {
    const uint64_t fp = fingerprint(x, B * d);
    std::vector<uint64_t> all(size_t(comm.size()));
    comm.all_gather(&fp, sizeof fp, all.data());
    for (int q = 1; q < comm.size(); ++q)
      TOPKSAE_CHECK(all[size_t(q)] == all[0], "step ", st->step, ": rank ", q, " read a different batch than rank 0; "
                    "every rank must be given the same data and flags");
  }
  StepMetrics met;
  met.step = st->step;
  const bool window_starts = (st->step + 1) % cfg.feature_sampling_window == 0;

  // 1. the sparsity window (stats of the closing window, summed over ranks) and 2. the dead mask.
  ws->dead.resize(size_t(m));
  double head[4] = {0, 0, 0, double(cpu::dead_mask(st->stats, cfg.dead_feature_window, ws->dead.data()))};
  if (window_starts) {
    const std::vector<float> log_sp = log_feature_sparsity(st->stats);
    for (size_t j = 0; j < log_sp.size(); ++j) {
      head[0] += log_sp[j];
      const float density = float(st->stats.act_freq[j]) / float(st->stats.n_frac_active);
      head[1] += density < 1e-5f;
      head[2] += density < 1e-6f;
    }
    std::fill(st->stats.act_freq.begin(), st->stats.act_freq.end(), 0);
    st->stats.n_frac_active = 0;
  }
  comm.all_reduce_sum(head, 4);
  if (window_starts) {
    met.has_sparsity = true;
    met.mean_log10_feature_sparsity = head[0] / double(cfg.d_sae);
    met.below_1e_5 = int64_t(head[1]);
    met.below_1e_6 = int64_t(head[2]);
  }
  const int64_t n_dead = int64_t(head[3]);

  const double s = st->scaling_factor.value_or(1.0);
  sharded_forward(comm, cfg, r, st->params, x, B, s, n_dead, ws);
  cpu::update_dead_stats(ws->fwd, &st->stats);

  // 4. the shard's sparse backward; db_dec without its cross-latent term, added below.
  TrainConfig local = shard_config(cfg, r);
  local.apply_b_dec_to_input = false;
  cpu::train_backward(local, st->params, ws->fwd, &ws->grad);
  Params<float>& g = ws->grad;
  std::vector<double> red(size_t(d + 1), 0.0);  // [d_in] W_enc[:, shard] @ db_enc[shard], then the sum of squares
  if (cfg.apply_b_dec_to_input)
#pragma omp parallel for schedule(static) if (d * m >= (int64_t(1) << 18))
    for (int64_t i = 0; i < d; ++i) {
      double du = 0;
      const float* we = st->params.W_enc.data() + i * m;
      for (int64_t j = 0; j < m; ++j) du += double(we[j]) * double(g.b_enc[size_t(j)]);
      red[size_t(i)] = du;
    }
  red[size_t(d)] = sum_squares(g.W_enc) + sum_squares(g.b_enc) + sum_squares(g.W_dec);
  comm.all_reduce_sum(red.data(), red.size());
  if (cfg.apply_b_dec_to_input)
    for (int64_t i = 0; i < d; ++i) g.b_dec[size_t(i)] -= float(red[size_t(i)]);

  // Clipping by the global norm (b_dec is replicated: counted once).
  const double norm = std::sqrt(red[size_t(d)] + sum_squares(g.b_dec));
  const float c = float(std::min(1.0, kClipMaxNorm / (norm + kClipEps)));
  for (std::vector<float>* v : {&g.W_enc, &g.b_enc, &g.W_dec, &g.b_dec})
    for (float& e : *v) e *= c;
  met.grad_norm = norm;
  met.lr_used = cpu::lr_at(cfg, st->step);
  cpu::adam_step(&st->params, &st->adam_m, &st->adam_v, g, met.lr_used, cfg.adam_beta1, cfg.adam_beta2, kAdamEps,
                 st->step + 1);
  st->step += 1;
  st->n_training_samples += B;
  comm.set_phase("training", st->step);  // the collectives until the next step (agreeing to stop, ...)

  // Metrics over all ranks.
  double tail[3] = {double(ws->fwd.nnz), 0, 0};
  for (int64_t cnt : st->stats.since_fired) {
    tail[1] += cnt > cfg.dead_feature_window;
    tail[2] += double(cnt);
  }
  comm.all_reduce_sum(tail, 3);
  const TrainForward<float>& f = ws->fwd;
  met.overall_loss = f.loss;
  met.mse_loss = f.mse_loss;
  met.auxiliary_reconstruction_loss = f.aux_loss;
  met.l0 = tail[0] / double(B);
  met.explained_variance = f.explained_variance;
  met.dead_features = int64_t(tail[1]);
  met.mean_passes_since_fired = tail[2] / double(cfg.d_sae);
  met.current_learning_rate = cpu::lr_at(cfg, st->step);
  met.n_training_samples = st->n_training_samples;
  return met;
}

}  // namespace topksae::dist
