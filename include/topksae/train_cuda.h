// The training step on the GPU: the CUDA twin of cpu::train_step (train.h), with the same config,
// state and metrics types. All state (parameters, Adam moments, dead-latent statistics) lives on
// the device; a step queues its kernels on the Context's stream and returns WITHOUT synchronising:
// the dead count, AuxK's k, the clipping factor and the metrics are computed on the device, and
// the metrics come back through pinned memory, read later by poll_metrics / drain_metrics. To size
// AuxK without waiting, the host bounds each step's dead count from the counters of a step at most
// DeadBound::kLag + 1 back (src/train/dead_bound.h): step() waits for the step 5 back to finish
// when the host runs further ahead than that.
// No header here needs CUDA.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "topksae/ops_cuda.h"
#include "topksae/train.h"

namespace topksae::cuda {

// How many steps ran AuxK each way (see TrainStep's aux_dense_cap).
struct AuxPathCounts {
  int64_t dense = 0;   // the dead latents compacted into a [B, n_dead] GEMM sub-problem
  int64_t gather = 0;  // per-entry gathers and dot products (more dead latents than the capacity)
  int64_t none = 0;    // no latent could be dead at that step
};

// Where the step keeps the gradients between the backward and Adam (TrainStepOptions::grad_storage).
//   stored: dense gradients of all four parameters beside the weights and both moments (16 bytes
//           per parameter, fp32);
//   fused:  no dense dW_enc / dW_dec: the sparse backward runs twice, first for the global gradient
//           norm (the clip needs it before any update), then recomputing each gradient value inside
//           Adam's update (12 bytes per parameter; the biases' gradients, n + d floats, are kept).
//           The same values as `stored`, bit for bit: the same sums in the same order.
//   automatic: stored when its plan fits the device's memory (with the plan's headroom), else fused.
enum class GradStorage { automatic, stored, fused };

// How a TrainStep is built (defaults: the automatic choices).
struct TrainStepOptions {
  // The encoder GEMM's precision (the AuxK GEMMs run in fp32 in fp32 mode, tf32 otherwise).
  Precision precision = Precision::fp32;
  // The most rows step() takes; -1: cfg.batch_size. Every buffer is sized for it.
  int64_t max_batch = -1;
  // How many dead latents AuxK's dense path holds (it costs batch x cap + cap x d_in floats of
  // device memory); a step whose dead count may exceed it uses the gather path. -1 picks
  // max(d_sae/8, 4096) capped at d_sae; 0 always gathers.
  int64_t aux_dense_cap = -1;
  // How the main top-k's dz dot products sweep W_dec (as gather_decode's threads_per_token: 16,
  // 32, 64 or 128 threads per row, 4 columns each; 0 picks by the L2 size; -1 uses one warp per
  // entry over whole rows). Sweeping needs d_in and d_sae multiples of 4; 0 falls back to whole
  // rows otherwise.
  int slab_threads = 0;
  // Rows per chunk of the forward's encoder GEMM + top-k: the pre-activations h exist for one
  // chunk at a time ([rows, d_sae] floats instead of [batch, d_sae]). 0 picks the most rows whose
  // h fits in kEncodeChunkBytes (ops_cuda.h); -1 takes the whole batch at once.
  int64_t encode_rows = 0;
  // Stored or fused gradients (GradStorage above); automatic picks fused only when stored does not fit.
  GradStorage grad_storage = GradStorage::automatic;
  // The encoder GEMM's library (precision.h): cublas (cublasGemmEx, today's path), lt (cublasLt,
  // the fastest of its heuristic's candidates, timed once per chunk shape and process when the
  // TrainStep is built) or automatic (the faster of the two, timed the same way). Without the
  // bias: the top-k selections add b_enc as they read h, so cublasLt's bias epilogue would save
  // no pass here (kernels/gemm_lt.h). cublas stays the default until a GPU run measures lt.
  EncoderGemm encoder_gemm = EncoderGemm::cublas;
  // Replay the step's device work as a CUDA graph (kernels/PERF_NOTES.md, "CUDA graph of the
  // step"): from the compacted dead list to the clip factor, captured once per key (batch rows,
  // AuxK path and shapes) after one direct step with that key, and replayed (a few keys kept). The
  // per-step host values stay outside it: the host's dead-count bound and the sparsity window
  // (before), Adam's learning rate and step (after). Needs a Context on a created stream (CUDA
  // cannot capture the legacy default stream); sets a cuBLAS workspace on its handle while alive.
  // The same values as without, bit for bit. Off until a GPU run measures it.
  bool cuda_graph = false;
};

// What the CUDA graph did (TrainStepOptions::cuda_graph): steps whose body ran directly (the first
// of each key), graphs captured, steps replayed from a graph.
struct GraphCounts {
  int64_t direct = 0;
  int64_t captured = 0;
  int64_t replayed = 0;
};

// A fresh state made on the device instead of uploaded, for shapes whose host copy would take tens
// of GiB and minutes to make (the one-card ceiling, 4096 x 1,310,720: 40 GiB of weights and 80 GiB
// of zero moments): W_enc, W_dec by init_params_counter (below; MATH.md's law, NOT the numbers
// of TrainState::initial for the same seed), zero b_dec, moments and counters except as given here.
struct DeviceInit {
  std::vector<float> b_enc;          // [d_sae], or empty: zeros
  std::vector<int64_t> since_fired;  // [d_sae], or empty: zeros (e.g. a bench's dead latents)
};

// W_enc [d_in, d_sae] and W_dec [d_sae, d_in] (device memory) as cpu::init_params_counter<float>
// makes them (train.h), seeded by cfg.seed; the row norms are summed in double in another order,
// so a value may differ from the CPU twin's in its last bit.
void init_params_counter(Context& ctx, const TrainConfig& cfg, float* W_enc, float* W_dec);

class TrainStep {
 public:
  // Uploads st (parameters, moments, statistics) and sizes every buffer for opts.max_batch rows,
  // so step() never allocates.
  TrainStep(Context& ctx, const TrainConfig& cfg, const TrainState& st, const TrainStepOptions& opts = {});
  // The same with a fresh state made on the device (DeviceInit above): step 0, no scaling factor.
  TrainStep(Context& ctx, const TrainConfig& cfg, const DeviceInit& init, const TrainStepOptions& opts = {});
  ~TrainStep();
  TrainStep(const TrainStep&) = delete;
  TrainStep& operator=(const TrainStep&) = delete;

  // One sae_lens step on raw rows x [B, d_in] (DEVICE memory, B <= max_batch): sparsity-window
  // reset, forward with the dead mask of the step before, bookkeeping, sparse backward, clip,
  // fused Adam at cpu::lr_at(step). Queues work and returns; x must stay valid until the stream
  // reaches this step. Blocks only while the step 5 back is unfinished, or if more than
  // kMetricsRing steps have metrics nobody collected.
  void step(const float* x, int64_t B);

  // Metrics of the steps whose copy has landed, oldest first; never blocks.
  std::vector<StepMetrics> poll_metrics();
  // Waits for every queued step, then returns all uncollected metrics.
  std::vector<StepMetrics> drain_metrics();

  // Synchronises and writes the device state into *st (for checkpoints). data_position and
  // scaling_factor are those of the state given at construction (the step reads no data source).
  void download(TrainState* st);
  // The gradients of the last step BEFORE clipping, in the layouts of Params (tests). Throws in
  // the fused mode (grad_storage() == fused), which stores no dense gradient.
  void download_grads(Params<float>* grad);

  int64_t steps_done() const;  // completed + queued steps (the host's count; no sync)
  Precision precision() const;
  // Peak bytes this object allocated on the device (parameters, moments, step buffers).
  size_t device_bytes() const;
  // The bytes a TrainStep with these arguments would allocate, without allocating them (the
  // same plan the constructor follows; device_bytes() of the object equals it).
  static size_t planned_bytes(Context& ctx, const TrainConfig& cfg, const TrainStepOptions& opts = {});
  int64_t encode_rows() const;           // the resolved encode_rows
  int64_t aux_dense_capacity() const;    // the resolved aux_dense_cap
  int slab_threads() const;              // the resolved slab_threads (0: whole rows)
  GradStorage grad_storage() const;      // the resolved grad_storage (stored or fused)
  EncoderGemm encoder_gemm() const;      // as given
  AuxPathCounts aux_path_counts() const;  // of the steps queued so far
  GraphCounts graph_counts() const;      // zeros without cuda_graph

  static constexpr int kMetricsRing = 64;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace topksae::cuda
