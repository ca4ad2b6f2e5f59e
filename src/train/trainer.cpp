// The CPU trainer: SAETrainer.fit of sae_lens 6.13.1 over an ActivationSource (scaling-factor
// estimate first, then fixed-size batches until total_training_steps), with per-step metrics and
// checkpoints that resume bit-identically (same weights, moments, counters and data position).
#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae {

Trainer::Trainer(TrainConfig cfg, ActivationSource& src, TrainerOptions opts)
    : cfg_(std::move(cfg)), src_(src), opts_(std::move(opts)) {
  cfg_.validate();
  TOPKSAE_CHECK(src_.d_in() == cfg_.d_in, "the data source has d_in=", src_.d_in(), " (", src_.describe(),
                ") but the training config says d_in=", cfg_.d_in);
  TOPKSAE_CHECK(opts_.checkpoint_every >= 0, "checkpoint_every must be >= 0, got ", opts_.checkpoint_every);
  st_ = TrainState::initial(cfg_);
  st_.data_position = src_.position();
}

void Trainer::resume(const std::filesystem::path& checkpoint) {
  TrainConfig saved;
  TrainState st = load_checkpoint(checkpoint, &saved);
  // Everything but the length of the run must agree; a longer or shorter run keeps the schedule
  // of the new config (as sae_lens would if restarted with it).
  TrainConfig a = saved, b = cfg_;
  a.training_tokens = b.training_tokens = 0;
  TOPKSAE_CHECK(train_config_to_json(a) == train_config_to_json(b), "checkpoint ", checkpoint.string(),
                " was written with a different training config:\n", train_config_to_json(saved), "\nthis run:\n",
                train_config_to_json(cfg_));
  src_.seek(st.data_position);
  st_ = std::move(st);
}

void Trainer::ensure_scaling_factor() {
  if (cfg_.normalize_activations != Normalize::expected_average_only_in || st_.scaling_factor) return;
  st_.scaling_factor =
      cpu::estimate_scaling_factor(src_, cfg_.d_in, cfg_.batch_size, cfg_.n_batches_for_norm_estimate);
  st_.data_position = src_.position();
}

int64_t Trainer::run(int64_t max_steps) {
  ensure_scaling_factor();
  batch_.resize(static_cast<size_t>(cfg_.batch_size * cfg_.d_in));
  int64_t ran = 0;
  while (!done() && (max_steps < 0 || ran < max_steps)) {
    const int64_t got = src_.next(batch_.data(), cfg_.batch_size);
    if (got < cfg_.batch_size) break;  // the source ran dry: a short batch is dropped
    st_.data_position = src_.position();
    const StepMetrics m = cpu::train_step(cfg_, &st_, batch_.data(), cfg_.batch_size, &ws_);
    ++ran;
    if (opts_.on_step) opts_.on_step(m);
    if (!opts_.checkpoint_dir.empty() && opts_.checkpoint_every > 0 && st_.step % opts_.checkpoint_every == 0 && !done())
      save_checkpoint(opts_.checkpoint_dir);
  }
  return ran;
}

void Trainer::save_checkpoint(const std::filesystem::path& dir) const {
  topksae::save_checkpoint(dir, cfg_, st_, opts_.extras);
}

void Trainer::save_final(const std::filesystem::path& dir) const {
  SaeDirExtras extras = opts_.extras;
  extras.sparsity = log_feature_sparsity(st_.stats);
  extras.scaling_factor.reset();
  save_sae_dir(dir, final_sae(cfg_, st_), extras);
}

Sae Trainer::sae() const {
  Sae s;
  s.cfg = cfg_.sae_config();
  s.params = to_sae_params(st_.params);
  return s;
}

}  // namespace topksae
