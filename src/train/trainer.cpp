// The trainer: SAETrainer.fit of sae_lens 6.13.1 over an ActivationSource (scaling-factor
// estimate first, then fixed-size batches until total_training_steps), with per-step metrics and
// checkpoints that resume bit-identically (same weights, moments, counters and data position).
// The steps run on a backend (src/train/train_backend.h): the CPU, or the GPU with the host
// reading ahead; checkpoints always go through the host state, so they are the same files.
#include "dist/collectives.h"
#include "dist/sharded_files.h"
#include "topksae/error.h"
#include "topksae/train.h"
#include "train/train_backend.h"

namespace topksae {

Trainer::Trainer(TrainConfig cfg, ActivationSource& src, TrainerOptions opts)
    : cfg_(std::move(cfg)), src_(src), opts_(std::move(opts)) {
  cfg_.validate();
  TOPKSAE_CHECK(src_.d_in() == cfg_.d_in, "the data source has d_in=", src_.d_in(), " (", src_.describe(),
                ") but the training config says d_in=", cfg_.d_in);
  TOPKSAE_CHECK(opts_.checkpoint_every >= 0, "checkpoint_every must be >= 0, got ", opts_.checkpoint_every);
  if (opts_.device == Device::cuda)
    TOPKSAE_CHECK(cuda_available(), "training on cuda: ", cuda_unavailable_reason());
  else
    TOPKSAE_CHECK(opts_.precision == cuda::Precision::fp32,
                  "the precision option applies to the GPU's encoder GEMM; the CPU trainer computes in fp32");
  if (sharded()) {
    TOPKSAE_CHECK(opts_.device == Device::cpu, "latent-sharded training runs on the CPU for now (the NCCL path is "
                  "not built yet): pass --device cpu");
    st_ = dist::initial_shard_state(cfg_, dist::shard_range(cfg_.d_sae, opts_.comm->rank(), opts_.comm->size()));
  } else {
    st_ = TrainState::initial(cfg_);
  }
  st_.data_position = src_.position();
}

bool Trainer::sharded() const { return opts_.comm && opts_.comm->size() > 1; }

Trainer::~Trainer() = default;

void Trainer::resume(const std::filesystem::path& checkpoint) {
  TrainConfig saved;
  TrainState st;
  if (sharded()) {
    st = dist::load_sharded_checkpoint(*opts_.comm, checkpoint,
                                       dist::shard_range(cfg_.d_sae, opts_.comm->rank(), opts_.comm->size()), &saved);
  } else {
    TOPKSAE_CHECK(!dist::is_sharded_checkpoint(checkpoint), "checkpoint ", checkpoint.string(),
                  " is a latent-sharded set; resume it under mpirun with the number of ranks that wrote it "
                  "(`topksae info` says how many)");
    st = load_checkpoint(checkpoint, &saved);
  }
  // Everything but the length of the run must agree; a longer or shorter run keeps the schedule
  // of the new config (as sae_lens would if restarted with it).
  TrainConfig a = saved, b = cfg_;
  a.training_tokens = b.training_tokens = 0;
  TOPKSAE_CHECK(train_config_to_json(a) == train_config_to_json(b), "checkpoint ", checkpoint.string(),
                " was written with a different training config:\n", train_config_to_json(saved), "\nthis run:\n",
                train_config_to_json(cfg_));
  src_.seek(st.data_position);
  backend_.reset();  // it holds the state of before: the next run() makes one from this state
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
  if (!backend_)
    backend_ = sharded()                      ? detail::make_sharded_cpu_backend(cfg_, &st_, opts_.comm)
               : opts_.device == Device::cuda ? detail::make_cuda_backend(cfg_, &st_, opts_.precision)
                                              : detail::make_cpu_backend(cfg_, &st_);
  exhausted_ = false;
  // The source position after the last batch queued; it becomes st_.data_position when the
  // state catches up with the queue (sync), never before.
  std::string position = st_.data_position;
  int64_t ran = 0;
  try {
    ran = run_steps(max_steps, &position);
  } catch (...) {
    // Leave a state whose weights and data position belong together: wait for what was queued.
    // If that fails too (the GPU broke), st_ keeps the state of the last sync.
    try {
      sync(position, false);
    } catch (...) {
      backend_.reset();
    }
    throw;
  }
  sync(position, true);
  return ran;
}

// Reads and queues batches; returns the number queued. st_ lags behind the queue (on cuda).
int64_t Trainer::run_steps(int64_t max_steps, std::string* position) {
  const int64_t step0 = st_.step, samples0 = st_.n_training_samples, B = cfg_.batch_size;
  int64_t ran = 0;
  while (samples0 + ran * B < cfg_.training_tokens && (max_steps < 0 || ran < max_steps)) {
    if (opts_.should_stop && opts_.should_stop()) break;
    float* batch = backend_->batch_buffer();  // [B, d_in]
    if (src_.next(batch, B) < B) {
      exhausted_ = true;  // the source ran dry: a short batch is dropped
      break;
    }
    *position = src_.position();
    backend_->queue(B);
    ++ran;
    for (const StepMetrics& m : backend_->poll())
      if (opts_.on_step) opts_.on_step(m);
    const bool finished = samples0 + ran * B >= cfg_.training_tokens;
    if (!opts_.checkpoint_dir.empty() && opts_.checkpoint_every > 0 && (step0 + ran) % opts_.checkpoint_every == 0 &&
        !finished) {
      sync(*position, true);
      save_checkpoint(opts_.checkpoint_dir);
    }
  }
  return ran;
}

// Brings st_ up to date with every queued step; report: hand their metrics to on_step.
void Trainer::sync(const std::string& position, bool report) {
  const std::vector<StepMetrics> ms = backend_->sync();
  st_.data_position = position;
  if (report)
    for (const StepMetrics& m : ms)
      if (opts_.on_step) opts_.on_step(m);
}

void Trainer::save_checkpoint(const std::filesystem::path& dir) const {
  if (sharded())
    dist::save_sharded_checkpoint(*opts_.comm, dir, cfg_,
                                  dist::shard_range(cfg_.d_sae, opts_.comm->rank(), opts_.comm->size()), st_);
  else
    topksae::save_checkpoint(dir, cfg_, st_, opts_.extras);
}

void Trainer::save_final(const std::filesystem::path& dir) const {
  if (sharded())
    return dist::save_sharded_final(*opts_.comm, dir, cfg_,
                                    dist::shard_range(cfg_.d_sae, opts_.comm->rank(), opts_.comm->size()), st_,
                                    opts_.extras);
  SaeDirExtras extras = opts_.extras;
  extras.sparsity = log_feature_sparsity(st_.stats);
  extras.scaling_factor.reset();
  save_sae_dir(dir, final_sae(cfg_, st_), extras);
}

Sae Trainer::sae() const {
  TOPKSAE_CHECK(!sharded(), "Trainer::sae: the model is sharded over ranks; rank 0 writes it with save_final");
  Sae s;
  s.cfg = cfg_.sae_config();
  s.params = to_sae_params(st_.params);
  return s;
}

}  // namespace topksae
