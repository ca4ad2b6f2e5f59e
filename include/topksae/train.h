// Training a TopK SAE with sae_lens 6.13.1 semantics (shared/spec/MATH.md): the configuration, the
// state a checkpoint carries, the per-step metrics under sae_lens's log names, the CPU twins of the
// training ops (namespace topksae::cpu; the CUDA twins in kernels/ carry the same names in
// topksae::cuda), and a Trainer that runs steps over an ActivationSource and saves/resumes checkpoints.
//
// The ops are templated on the scalar type: float is what training runs, double is there so the
// hand-derived gradients can be checked against central finite differences. Both are instantiated
// in src/train/*.cpp and src/cpu/*.cpp.
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "topksae/data.h"
#include "topksae/device.h"
#include "topksae/ops_cuda.h"
#include "topksae/sae.h"
#include "topksae/sae_dir.h"

namespace topksae {

// ---- configuration ------------------------------------------------------------------------------

// sae_lens `lr_scheduler_name` (matched case-insensitively, as sae_lens lower-cases it).
enum class LrScheduler : uint8_t { constant, cosineannealing, cosineannealingwarmrestarts };
std::string_view lr_scheduler_name(LrScheduler s);
LrScheduler lr_scheduler_from_name(std::string_view name);  // throws Error naming the bad value

// Fixed by sae_lens 6.13.1 (not configurable there either).
inline constexpr double kAdamEps = 1e-8;       // torch.optim.Adam default
inline constexpr double kClipMaxNorm = 1.0;    // clip_grad_norm_(params, 1.0)
inline constexpr double kClipEps = 1e-6;       // torch: max_norm / (total_norm + 1e-6)

// Field names and defaults are sae_lens's (LanguageModelSAERunnerConfig + TopKTrainingSAEConfig).
struct TrainConfig {
  // ---- the SAE
  int64_t d_in = 0;
  int64_t d_sae = 0;
  int64_t k = 100;
  bool apply_b_dec_to_input = true;
  // none or expected_average_only_in (the others are inference-only here).
  Normalize normalize_activations = Normalize::none;
  // Batches read (and not trained on) to estimate the scaling factor (sae_lens: 1000).
  int64_t n_batches_for_norm_estimate = 1000;
  // Rows of W_dec scaled to this norm at init; nullopt (sae_lens None) keeps raw kaiming rows.
  std::optional<double> decoder_init_norm = 0.1;
  double aux_loss_coefficient = 1.0;
  // sae_lens 6.14's option (not in 6.13.1, so off by default): select the top-k (and AuxK) on
  // h_j * ||W_dec[j]|| and decode with z_j / ||W_dec[j]||, so decoder norms drifting during
  // training do not change which latents win. The final save folds the norms into the weights
  // (W_enc[:, j] and b_enc[j] times the norm, W_dec[j] to unit norm, as 6.14's
  // _fold_norm_topk), which leaves an ordinary TopK SAE that 6.13.1 loads. Mid-training
  // checkpoints keep the unfolded weights (resume only).
  bool rescale_acts_by_decoder_norm = false;

  // ---- optimisation
  double lr = 3e-4;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  LrScheduler lr_scheduler_name = LrScheduler::constant;
  int64_t lr_warm_up_steps = 0;
  int64_t lr_decay_steps = 0;
  std::optional<double> lr_end;  // nullopt: lr / 10 (sae_lens default)
  int64_t n_restart_cycles = 1;

  // ---- data and bookkeeping
  int64_t batch_size = 4096;  // sae_lens train_batch_size_tokens: rows per step
  int64_t training_tokens = 2'000'000;
  // A latent is dead when it has not fired for more than this many steps (0: it did not fire in
  // the previous step, as sae_lens's since_fired > window reads).
  int64_t dead_feature_window = 1000;
  int64_t feature_sampling_window = 2000;
  uint64_t seed = 42;

  // sae_lens: training_tokens // train_batch_size_tokens.
  int64_t total_training_steps() const { return training_tokens / batch_size; }
  // The steps a run takes: ceil(tokens / batch), one more than total_training_steps when the batch
  // does not divide the tokens (sae_lens trains until n_training_samples >= training_tokens).
  int64_t steps_to_run() const { return (training_tokens + batch_size - 1) / batch_size; }
  // lr_end, or lr / 10 when unset.
  double effective_lr_end() const { return lr_end ? *lr_end : lr / 10; }
  // The SAE this config trains (dtype f32).
  SaeConfig sae_config() const;
  // Throws Error with a message naming the field and what is wrong. Includes sae_lens's
  // "Cannot have decay_steps with lr_end=0.0, this would decay from 0 to 0 and be a waste."
  void validate() const;
};

// JSON text of a config (all fields above, sae_lens names) and back; the parser throws Error
// naming an unknown key or a bad value. Missing keys keep their defaults.
std::string train_config_to_json(const TrainConfig& cfg);
TrainConfig train_config_from_json(std::string_view json);

// The table both of those and the `topksae train` flags are made from (src/train/config_fields.cpp):
// one entry per TrainConfig field, in the JSON's order.
struct TrainConfigField {
  std::string_view key;   // the sae_lens name: the JSON key (train_batch_size_tokens for batch_size)
  std::string_view flag;  // the command-line flag (--batch-size)
  std::string_view help;  // one line for --help (without the default)
};
const std::vector<TrainConfigField>& train_config_fields();
// One field by its key: its value as JSON text, and set from JSON text (as in a config file:
// numbers, true/false, names, null) or from a command-line word (a number, true/false/yes/no/1/0,
// a name, none/null). Throw Error naming an unknown key or the bad value.
std::string train_config_get(const TrainConfig& cfg, std::string_view key);
void train_config_set_json(TrainConfig& cfg, std::string_view key, std::string_view json_value);
void train_config_set_text(TrainConfig& cfg, std::string_view key, std::string_view text);

// ---- parameters, state, metrics -------------------------------------------------------------

// The four parameters (or their gradients, or an Adam moment) in one precision, row-major.
template <typename T>
struct Params {
  std::vector<T> W_enc;  // [d_in, d_sae]
  std::vector<T> b_enc;  // [d_sae]
  std::vector<T> W_dec;  // [d_sae, d_in]
  std::vector<T> b_dec;  // [d_in]
  static Params zeros(int64_t d_in, int64_t d_sae);
};
SaeParams to_sae_params(const Params<float>& p);
Params<float> from_sae_params(const SaeParams& p);

// Dead-latent and feature-density bookkeeping (SAETrainer's running statistics).
struct SparsityStats {
  std::vector<int64_t> since_fired;  // [d_sae] n_forward_passes_since_fired
  std::vector<int64_t> act_freq;     // [d_sae] act_freq_scores (firing counts in this window)
  int64_t n_frac_active = 0;         // n_frac_active_samples (tokens in this window)
  static SparsityStats zeros(int64_t d_sae);
};

// Everything a checkpoint must restore for a resumed run to continue bit-identically.
struct TrainState {
  Params<float> params;
  Params<float> adam_m, adam_v;  // torch Adam exp_avg / exp_avg_sq
  int64_t step = 0;              // completed steps (sae_lens n_training_steps); Adam t = step + 1
  int64_t n_training_samples = 0;
  SparsityStats stats;
  // expected_average_only_in: the estimated factor s (training runs on s*x); nullopt otherwise
  // or before estimation.
  std::optional<double> scaling_factor;
  // ActivationSource::position() after the last batch this state has consumed ("" = start).
  std::string data_position;
  // No RNG state: randomness is used only at init (seeded by TrainConfig::seed).

  // Freshly initialised parameters (cpu::init_params), zero moments and statistics.
  static TrainState initial(const TrainConfig& cfg);
};

// One step's log line. Values follow sae_lens's _build_train_step_log_dict, including its quirk
// that "details/current_learning_rate" is read after the scheduler stepped (the NEXT step's lr);
// the lr this step actually used is lr_used.
struct StepMetrics {
  int64_t step = 0;  // 0-based index of this step (sae_lens n_training_steps during it)
  double overall_loss = 0;                  // losses/overall_loss
  double mse_loss = 0;                      // losses/mse_loss
  double auxiliary_reconstruction_loss = 0; // losses/auxiliary_reconstruction_loss
  double l0 = 0;                            // metrics/l0
  double explained_variance = 0;            // metrics/explained_variance
  int64_t dead_features = 0;                // sparsity/dead_features (after this step's update)
  double mean_passes_since_fired = 0;       // sparsity/mean_passes_since_fired
  double current_learning_rate = 0;         // details/current_learning_rate
  int64_t n_training_samples = 0;           // details/n_training_samples (including this batch)
  double lr_used = 0;                       // not a sae_lens key
  double grad_norm = 0;                     // not a sae_lens key: total norm before clipping
  // Set on steps that start a new feature-sampling window (stats of the window just closed,
  // logged before the reset, as sae_lens does).
  bool has_sparsity = false;
  double mean_log10_feature_sparsity = 0;   // metrics/mean_log10_feature_sparsity
  int64_t below_1e_5 = 0;                   // sparsity/below_1e-5
  int64_t below_1e_6 = 0;                   // sparsity/below_1e-6

  // (sae_lens name, value) pairs in a fixed order; the sparsity keys only when has_sparsity.
  std::vector<std::pair<std::string, double>> named() const;
};

// log10(act_freq / n_frac_active + 1e-10) per latent: sparsity.safetensors's "sparsity" [d_sae].
std::vector<float> log_feature_sparsity(const SparsityStats& s);

// ---- the training ops (CPU twins) -------------------------------------------------------------

// What the training forward leaves for the backward; sized on first use and reused across steps.
// The only [B, d_sae] buffer is h.
template <typename T>
struct TrainForward {
  int64_t B = 0, d_in = 0, d_sae = 0, k = 0;
  std::vector<T> xs;            // [B, d_in] s*x: the MSE target
  std::vector<T> u;             // [B, d_in] xs - a*b_dec
  std::vector<T> h;             // [B, d_sae] pre-activations (times dec_norm when rescaling)
  std::vector<T> dec_norm;      // [d_sae] ||W_dec[j]|| with rescale_acts_by_decoder_norm, else empty
  std::vector<int32_t> idx;     // [B, k] S_b, by h descending, ties to the lower index
  // [B, k] the coefficient of W_dec[idx] in xhat: relu(h) at idx (rescaling: relu(h) / dec_norm,
  // which equals relu of the raw pre-activation).
  std::vector<T> z;
  std::vector<T> xhat;          // [B, d_in]
  // AuxK (k_aux == 0: no dead latent, no AuxK this step).
  int64_t n_dead = 0, k_aux = 0;
  double aux_scale = 0;         // min(n_dead / (d_in//2), 1)
  std::vector<int32_t> aux_idx; // [B, k_aux] T_b, by h descending over dead latents
  std::vector<T> za;            // [B, k_aux] h at aux_idx (no ReLU; rescaling: / dec_norm)
  std::vector<T> ehat;          // [B, k_aux ? d_in : 0] za @ W_dec + b_dec
  // Loss gradients with respect to xhat and ehat, for the backward.
  std::vector<T> g;             // [B, d_in] (2/B)(xhat - xs)
  std::vector<T> ga;            // [B, k_aux ? d_in : 0] (2 coef scale / B)(ehat - r)
  // The selection transposed, latent-major, so the backward can own one latent per thread:
  // entries of latent j are lat_entry[lat_ptr[j] .. lat_ptr[j+1]), each e = b*(k+k_aux) + slot
  // (slot < k: idx/z slot; else aux_idx/za slot - k), in ascending b (a fixed summation order).
  std::vector<int64_t> lat_ptr;   // [d_sae + 1]
  std::vector<int64_t> lat_entry; // [B * (k + k_aux)]
  // Losses (computed in double whatever T is).
  double mse_loss = 0, aux_loss = 0, loss = 0;
  int64_t nnz = 0;              // count of z != 0 (for l0)
  double explained_variance = 0;
};

namespace cpu {

// MATH.md initialisation, seeded by cfg.seed through std::mt19937_64 with our own [0,1) mapping
// (identical on every platform): W_dec ~ U(-sqrt(6/d_in), sqrt(6/d_in)) row-major, rows scaled to
// decoder_init_norm, W_enc = W_dec^T, zero biases.
template <typename T>
Params<T> init_params(const TrainConfig& cfg);

// The same law from a counter-based stream (W_dec element (j, i) is a function of cfg.seed and
// j * d_in + i alone), so the device can make it in place: the CPU twin of
// cuda::init_params_counter (train_cuda.h), which a TrainStep built from DeviceInit uses. Not the
// numbers of init_params for the same seed.
template <typename T>
Params<T> init_params_counter(const TrainConfig& cfg);

// Training forward on raw rows x [B, d_in]: xs = scaling_factor * x, top-k, decode, MSE and (when
// dead != nullptr and some dead[j] != 0, dead [d_sae]) AuxK. Fills f (reusing its buffers).
template <typename T>
void train_forward(const TrainConfig& cfg, const Params<T>& p, const T* x, int64_t B, double scaling_factor,
                   const uint8_t* dead, TrainForward<T>* f);

// The sparse backward of MATH.md: grad = d(loss)/d(params), overwritten (only touched rows of
// dW_dec / columns of dW_enc are non-zero).
template <typename T>
void train_backward(const TrainConfig& cfg, const Params<T>& p, const TrainForward<T>& f, Params<T>* grad);

// torch clip_grad_norm_: N = global L2 norm of all four grads, every grad *= min(1, max_norm/(N+1e-6)).
// Returns N (before clipping).
template <typename T>
double clip_grad_norm(Params<T>* grad, double max_norm = kClipMaxNorm);

// torch.optim.Adam (no weight decay) step number t (1-based) with bias correction.
template <typename T>
void adam_step(Params<T>* p, Params<T>* m, Params<T>* v, const Params<T>& grad, double lr, double beta1,
               double beta2, double eps, int64_t t);

// The learning rate sae_lens's scheduler gives at 0-based step t (MATH.md, SequentialLR semantics).
double lr_at(const TrainConfig& cfg, int64_t t);

// dead[j] = since_fired[j] > window, dead [d_sae]; returns the count.
int64_t dead_mask(const SparsityStats& s, int64_t window, uint8_t* dead);

// After the forward: since_fired += 1, reset where a latent fired; act_freq += firing counts;
// n_frac_active += B.
template <typename T>
void update_dead_stats(const TrainForward<T>& f, SparsityStats* s);

// Scratch reused across steps by train_step.
struct TrainWorkspace {
  TrainForward<float> fwd;
  Params<float> grad;
  std::vector<uint8_t> dead;  // [d_sae]
};

// One whole sae_lens step on raw rows x [B, d_in] (B is normally cfg.batch_size): sparsity-window
// reset, forward with the dead mask of the step before, bookkeeping, backward, clip, Adam at
// lr_at(step), step += 1. scaling_factor is taken from st (1 when unset).
StepMetrics train_step(const TrainConfig& cfg, TrainState* st, const float* x, int64_t B, TrainWorkspace* ws);

// sae_lens fold_activation_norm_scaling_factor: W_enc *= s, W_dec /= s, b_dec /= s.
void fold_scaling_factor(SaeParams* p, double s);

// Mean over batches of the mean row L2 norm -> sqrt(d_in) / mean_norm. Reads n_batches batches
// of batch_size rows from src (they are consumed, not trained on). Throws Error if src runs dry.
double estimate_scaling_factor(ActivationSource& src, int64_t d_in, int64_t batch_size, int64_t n_batches);

}  // namespace cpu

// ---- checkpoints ------------------------------------------------------------------------------
// A checkpoint directory: an SAE directory (unfolded weights, cfg.json with the training keys,
// sparsity.safetensors), activation_scaler.json {"scaling_factor": s|null}, trainer_state.json
// (config, step, counters, data position) and trainer_state.bin (Adam moments, since_fired,
// act_freq). Written as <dir>.tmp, then renamed over <dir>, so a crash keeps the previous one.
void save_checkpoint(const std::filesystem::path& dir, const TrainConfig& cfg, const TrainState& st,
                     const SaeDirExtras& extras = {});
// Loads a checkpoint written by save_checkpoint; the config stored in it is returned in *cfg.
TrainState load_checkpoint(const std::filesystem::path& dir, TrainConfig* cfg);

// The SAE a finished run saves: the current weights with the scaling factor folded in and
// normalize_activations "none".
Sae final_sae(const TrainConfig& cfg, const TrainState& st);

// ---- the trainer --------------------------------------------------------------------------------

namespace detail {
class TrainBackend;  // where the steps run (src/train/train_backend.h)
}
namespace dist {
class Collectives;  // src/dist/collectives.h: latent-sharded training's MPI (later NCCL) engine
class DeviceCollectives;  // src/dist/device_collectives.h: the GPU ranks' NCCL engine
}

struct TrainerOptions {
  // Where checkpoints go (empty: none). The Trainer owns their timing: one after every
  // checkpoint_every-th step (0: none mid-run) and, with checkpoint_every > 0, one at the end of a
  // run that finished or ran out of data (so a longer run can resume from it); checkpoint() for
  // one now (Ctrl-C).
  std::filesystem::path checkpoint_dir;
  int64_t checkpoint_every = 0;
  // Called when writing a checkpoint failed, with the error and the step of the checkpoint still
  // in checkpoint_dir (-1: none); training goes on. Unset: the error propagates.
  std::function<void(const std::string& error, int64_t kept_step)> on_checkpoint_error;
  // Called with every step's metrics, in step order. On cuda it may lag the data by a few steps
  // (the GPU runs behind the host); every step has been reported when run() returns.
  std::function<void(const StepMetrics&)> on_step;
  // Polled before each batch is read; returning true ends run() early (Ctrl-C).
  std::function<bool()> should_stop;
  // Metadata written into every saved cfg.json (model_name, hook_name, ...).
  SaeDirExtras extras;
  // Where the steps run: cpu (cpu::train_step) or cuda (cuda::TrainStep, needs a usable GPU).
  // Checkpoints are the same files on both, so a run can resume on either device.
  Device device = Device::cpu;
  // cuda only: precision of the encoder GEMM. fp32 matches the CPU (and sae_lens) to float
  // rounding; tf32 and bf16 are faster and looser. The CPU always computes in fp32.
  cuda::Precision precision = cuda::Precision::fp32;
  // Latent sharding (docs/scaling.md): with a Collectives of size R > 1 this process is one of R
  // ranks, each holding ceil(d_sae / R) latents of the model (src/dist/shard.h); every rank must
  // run the same Trainer calls on the same data. state() is then this rank's part, checkpoints
  // are sharded sets (src/dist/sharded_files.h) and save_final() is collective (rank 0 writes).
  // Null or size 1: the ordinary single-process trainer.
  std::shared_ptr<dist::Collectives> comm;
  // Sharded on cuda: the NCCL engine bootstrapped over comm (dist::make_nccl_collectives), one GPU
  // per rank; required then (the steps run cuda::ShardedTrainStep, kernels/train/sharded_step.h).
  std::shared_ptr<dist::DeviceCollectives> device_comm;
};

// On cuda, steps are queued ahead of the GPU: the host reads batch i+1 while step i runs, and
// the state lives on the device. Each checkpoint and each return from run() waits for the
// queued steps and copies the state back, so state() is current whenever run() is not running,
// and its data position is the one after the last batch in it.
class Trainer {
 public:
  // Validates cfg; checks src.d_in() == cfg.d_in, and for device cuda that a GPU is usable
  // (Error with the reason otherwise). The source must outlive the trainer.
  Trainer(TrainConfig cfg, ActivationSource& src, TrainerOptions opts = {});
  ~Trainer();

  // Continues from a checkpoint: loads its state and seeks the source to its data position.
  // The checkpoint's config must match this trainer's in every field that shapes the run.
  void resume(const std::filesystem::path& checkpoint);
  // Continues from a state in memory (weights, moments, counters), checked against the config:
  // seeks the source to st.data_position, or, when that is empty, takes the source where it is.
  void start_from(TrainState st);
  // Starts from an existing SAE's weights (step 0, fresh moments and statistics). They work on raw
  // inputs: with expected_average_only_in the scaling factor s is estimated now (the batches a
  // fresh run would read) and unfolded into them (W_enc /= s, W_dec *= s, b_dec *= s).
  void start_from_sae(const Sae& sae);

  // Runs steps until done(), or max_steps more steps (-1: no limit), or should_stop(), or the
  // source runs dry (a short final batch is dropped; exhausted() says so). Estimates the scaling
  // factor first when needed. Writes the checkpoints TrainerOptions asks for. Returns the
  // number of steps run. If it throws, state() is still a consistent checkpointable state (on
  // cuda possibly older than the data read so far).
  int64_t run(int64_t max_steps = -1);
  // The source ran dry during the last run().
  bool exhausted() const { return exhausted_; }
  // sae_lens's fit loop runs while n_training_samples < training_tokens: TrainConfig::steps_to_run
  // steps from the start.
  bool done() const { return st_.n_training_samples >= cfg_.training_tokens; }

  void save_checkpoint(const std::filesystem::path& dir) const;
  // Writes a checkpoint to TrainerOptions::checkpoint_dir now. Returns false when it failed and
  // on_checkpoint_error was told (without it the error propagates).
  bool checkpoint();
  // The step of the checkpoint in checkpoint_dir written or resumed by this trainer (-1: none).
  int64_t last_checkpoint_step() const { return last_checkpoint_step_; }
  // Saves final_sae() with sparsity.safetensors (sharded: collective, rank 0 writes the directory).
  void save_final(const std::filesystem::path& dir) const;

  // Whether the run is input-bound: of the seconds spent in run() so far (in this process,
  // checkpoint writes left out), how many the device sat idle waiting for the next batch. CPU:
  // the time spent reading batches (the step runs on the same thread). GPU: the gaps between
  // steps on the GPU's own timeline (CUDA events), for the steps finished so far.
  struct InputWait {
    double waited_s = 0, total_s = 0;
    double fraction() const { return total_s > 0 ? waited_s / total_s : 0.0; }
  };
  InputWait input_wait();

  const TrainConfig& config() const { return cfg_; }
  const TrainState& state() const { return st_; }
  // The current (unfolded) SAE. Not available when sharded (no rank holds it): Error.
  Sae sae() const;
  // Sharded over several ranks (TrainerOptions::comm of size > 1).
  bool sharded() const;

 private:
  void ensure_scaling_factor();
  void adopt(TrainState st);
  int64_t run_steps(int64_t max_steps);
  void sync(bool report);
  TrainConfig cfg_;
  ActivationSource& src_;
  TrainerOptions opts_;
  TrainState st_;
  // Made from st_ at the first run() (after the scaling-factor estimate); steps st_ in place
  // (cpu) or a device copy of it (cuda). Dropped by resume().
  std::unique_ptr<detail::TrainBackend> backend_;
  bool exhausted_ = false;
  double host_data_s_ = 0, run_s_ = 0;  // for input_wait()
  // While run() loops: when the loop started and its checkpoint-writing seconds so far.
  bool looping_ = false;
  std::chrono::steady_clock::time_point loop0_;
  double saving_s_ = 0;
  int64_t last_checkpoint_step_ = -1;
};

}  // namespace topksae
