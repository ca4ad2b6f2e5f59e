// The trainer: SAETrainer.fit of sae_lens 6.13.1 over an ActivationSource (scaling-factor
// estimate first, then fixed-size batches until total_training_steps), with per-step metrics and
// checkpoints (their timing too: TrainerOptions) that resume bit-identically (same weights, moments, counters and data position).
// The steps run on a backend (src/train/train_backend.h): the CPU, or the GPU with the host
// reading ahead; checkpoints always go through the host state, so they are the same files.
#include <algorithm>
#include <chrono>

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
    TOPKSAE_CHECK(opts_.device == Device::cpu || opts_.device_comm,
                  "latent-sharded training on cuda needs the NCCL engine (TrainerOptions::device_comm, made by "
                  "dist::make_nccl_collectives)");
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
                  " is a latent-sharded set; resume it under mpirun (any number of ranks from 2: the set is "
                  "resharded when it differs from the one that wrote it, which `topksae info` shows)");
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
  adopt(std::move(st));
  std::error_code ec;
  if (!opts_.checkpoint_dir.empty() && std::filesystem::equivalent(checkpoint, opts_.checkpoint_dir, ec))
    last_checkpoint_step_ = st_.step;
}

void Trainer::start_from(TrainState st) {
  const int64_t d = cfg_.d_in, n = cfg_.d_sae;
  for (const Params<float>* p : {&st.params, &st.adam_m, &st.adam_v})
    TOPKSAE_CHECK(p->W_enc.size() == size_t(d * n) && p->W_dec.size() == size_t(n * d) && p->b_enc.size() == size_t(n) &&
                      p->b_dec.size() == size_t(d),
                  "Trainer::start_from: the state's parameters or Adam moments are not shaped for d_in=", d,
                  ", d_sae=", n);
  TOPKSAE_CHECK(st.stats.since_fired.size() == size_t(n) && st.stats.act_freq.size() == size_t(n),
                "Trainer::start_from: the state's sparsity statistics are not [d_sae=", n, "]");
  TOPKSAE_CHECK(st.step >= 0 && st.n_training_samples >= 0, "Trainer::start_from: negative step or sample count");
  if (st.data_position.empty())
    st.data_position = src_.position();
  else
    src_.seek(st.data_position);
  adopt(std::move(st));
}

void Trainer::start_from_sae(const Sae& sae) {
  TOPKSAE_CHECK(sae.cfg.d_in == cfg_.d_in && sae.cfg.d_sae == cfg_.d_sae, "Trainer::start_from_sae: the SAE has d_in=",
                sae.cfg.d_in, ", d_sae=", sae.cfg.d_sae, "; the training config has d_in=", cfg_.d_in,
                ", d_sae=", cfg_.d_sae);
  sae.params.check_shapes(sae.cfg);
  TrainState st = TrainState::initial(cfg_);
  st.params = from_sae_params(sae.params);
  start_from(std::move(st));
  // The one estimate of the scaling factor (the one a fresh run makes at its first run()).
  ensure_scaling_factor();
  if (st_.scaling_factor) {
    SaeParams p = to_sae_params(st_.params);
    cpu::fold_scaling_factor(&p, 1.0 / *st_.scaling_factor);
    st_.params = from_sae_params(p);
  }
}

void Trainer::adopt(TrainState st) {
  backend_.reset();  // it holds the state of before: the next run() makes one from this state
  st_ = std::move(st);
  last_checkpoint_step_ = -1;
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
    backend_ = sharded() && opts_.device == Device::cuda
                   ? detail::make_cuda_sharded_backend(cfg_, &st_, opts_.device_comm, opts_.precision)
               : sharded()                    ? detail::make_sharded_cpu_backend(cfg_, &st_, opts_.comm)
               : opts_.device == Device::cuda ? detail::make_cuda_backend(cfg_, &st_, opts_.precision)
                                              : detail::make_cpu_backend(cfg_, &st_);
  exhausted_ = false;
  int64_t ran = 0;
  try {
    ran = run_steps(max_steps);
  } catch (...) {
    // Leave a state whose weights and data position belong together: wait for what was queued.
    // If that fails too (the GPU broke), st_ keeps the state of the last sync.
    try {
      sync(false);
    } catch (...) {
      backend_.reset();
    }
    throw;
  }
  sync(true);
  // The end of the run (not a pause): a checkpoint at its last step, so a longer run can resume.
  if (!opts_.checkpoint_dir.empty() && opts_.checkpoint_every > 0 && (done() || exhausted_) &&
      last_checkpoint_step_ != st_.step)
    checkpoint();
  return ran;
}

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

// Reads and queues batches; returns the number queued. st_ lags behind the queue (on cuda).
int64_t Trainer::run_steps(int64_t max_steps) {
  using clock = std::chrono::steady_clock;
  const int64_t step0 = st_.step, samples0 = st_.n_training_samples, B = cfg_.batch_size;
  int64_t ran = 0;
  // input_wait() during the loop (from on_step) counts the loop so far; checkpoint writes are
  // not time the device could have spent on steps.
  loop0_ = clock::now();
  saving_s_ = 0;
  looping_ = true;
  struct EndLoop {
    Trainer* t;
    ~EndLoop() {
      t->run_s_ += seconds_since(t->loop0_) - t->saving_s_;
      t->looping_ = false;
    }
  } end_loop{this};
  while (samples0 + ran * B < cfg_.training_tokens && (max_steps < 0 || ran < max_steps)) {
    if (opts_.should_stop && opts_.should_stop()) break;
    // A source holding its rows on the GPU writes the batch device to device (no host round trip).
    Stream stream = nullptr;
    float* dev_batch = src_.serves_device() ? backend_->device_batch_buffer(&stream) : nullptr;
    float* batch = dev_batch ? dev_batch : backend_->batch_buffer();  // [B, d_in]
    const clock::time_point t0 = clock::now();
    const int64_t got = dev_batch ? src_.next_device(dev_batch, B, stream) : src_.next(batch, B);
    host_data_s_ += seconds_since(t0);
    if (got < B) {
      exhausted_ = true;  // the source ran dry: a short batch is dropped
      break;
    }
    if (dev_batch)
      backend_->queue_device(B);
    else
      backend_->queue(B);
    ++ran;
    for (const StepMetrics& m : backend_->poll())
      if (opts_.on_step) opts_.on_step(m);
    const bool finished = samples0 + ran * B >= cfg_.training_tokens;
    if (!opts_.checkpoint_dir.empty() && opts_.checkpoint_every > 0 && (step0 + ran) % opts_.checkpoint_every == 0 &&
        !finished) {
      const clock::time_point s0 = clock::now();
      sync(true);
      checkpoint();
      saving_s_ += seconds_since(s0);
    }
  }
  return ran;
}

Trainer::InputWait Trainer::input_wait() {
  InputWait w;
  w.total_s = run_s_;
  if (looping_) w.total_s += seconds_since(loop0_) - saving_s_;
  w.waited_s = backend_ ? std::min(backend_->device_wait_seconds(host_data_s_), w.total_s) : 0.0;
  return w;
}

// Brings st_ up to date with every queued step; report: hand their metrics to on_step. The
// sources keep their position exact even when a read fails (GatherSource's strong guarantee, the
// prefetch queue's positions), so the position is asked for here, once, not after every batch.
void Trainer::sync(bool report) {
  const std::vector<StepMetrics> ms = backend_->sync();
  st_.data_position = src_.position();
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

bool Trainer::checkpoint() {
  TOPKSAE_CHECK(!opts_.checkpoint_dir.empty(), "Trainer::checkpoint: TrainerOptions::checkpoint_dir is not set");
  try {
    save_checkpoint(opts_.checkpoint_dir);
  } catch (const std::exception& e) {
    if (!opts_.on_checkpoint_error) throw;
    opts_.on_checkpoint_error(e.what(), last_checkpoint_step_);
    return false;
  }
  last_checkpoint_step_ = st_.step;
  return true;
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
