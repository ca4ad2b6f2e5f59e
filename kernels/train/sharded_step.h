// The latent-sharded CUDA training step (docs/scaling.md, "The CUDA sharded step"): the GPU twin
// of dist::sharded_train_step (src/dist/sharded_step.cpp), one rank of R, each on its own GPU with
// its block of latents [lo, hi) (dist::shard_range), the collectives over dist::DeviceCollectives
// (NCCL). The kernels are kernels/train's launchers run on the shard (n = the shard's latents)
// plus the few glue kernels in sharded_step.cu; everything stays on the device (the dead count,
// AuxK's k and scale, the clip factor, the metrics), as in cuda::TrainStep: a step queues its work
// and returns, the metrics come back through pinned memory.
//
// What this first version simplifies, against cuda::TrainStep:
//   * AuxK runs on the gather path only (no dense compacted sub-problem on the shards);
//   * gradients are stored (no fused mode): 16 bytes per parameter of the shard;
//   * precision fp32 or tf32 (bf16 is refused);
//   * the dz dot products are computed for all B x k (and B x k_aux) global entries on every rank,
//     the not-owned ones discarded (their sort key is the shard size, so the per-latent sums never
//     see them): the dz work does not shrink with R.
// Proven only under the CUDA emulation with NCCL emulated over MPI (tests/mpi/
// cuda_sharded_equivalence.cpp); no GPU has run it yet.
// No header here needs CUDA.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dist/device_collectives.h"
#include "dist/shard.h"
#include "topksae/train.h"
#include "topksae/train_cuda.h"

namespace topksae::cuda {

class ShardedTrainStep {
 public:
  // Collective over comm (every rank, the same cfg; st is this rank's part of the state, as
  // dist::initial_shard_state or load_sharded_checkpoint give it). Uploads st and sizes every
  // buffer for opts.max_batch rows. Only opts.precision (fp32 / tf32), max_batch, encode_rows,
  // slab_threads and encoder_gemm are honoured (the header's list of simplifications).
  ShardedTrainStep(Context& ctx, dist::DeviceCollectives& comm, const TrainConfig& cfg, const TrainState& st,
                   const TrainStepOptions& opts = {});
  ~ShardedTrainStep();
  ShardedTrainStep(const ShardedTrainStep&) = delete;
  ShardedTrainStep& operator=(const ShardedTrainStep&) = delete;

  // One step on x [B, d_in] (DEVICE memory of comm.device(), the same batch on every rank).
  // Collective: every rank calls it in the same order. Queues work and returns, as TrainStep::step.
  void step(const float* x, int64_t B);
  // The global metrics (identical on every rank), oldest first; as TrainStep's.
  std::vector<StepMetrics> poll_metrics();
  std::vector<StepMetrics> drain_metrics();
  // Synchronises and writes this rank's part of the state into *st (dist/shard.h's layout).
  void download(TrainState* st);

  // Tests: the last step's global selections, after drain_metrics(): top [B, k] (global latents,
  // in MATH.md's order) and aux [B, k_aux] (AuxK's global latents, empty when AuxK did not run).
  struct Selections {
    std::vector<int32_t> top, aux;
    int64_t k_aux = 0;
  };
  Selections last_selections();

  const dist::ShardRange& range() const;
  int64_t steps_done() const;
  size_t device_bytes() const;  // what this object allocated on the device

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace topksae::cuda
