// One sae_lens training step with the latents sharded over R ranks (docs/scaling.md's algorithm
// table), on the CPU, over a dist::Collectives. Each rank calls it with the same batch and its
// own part of the state (dist/shard.h); afterwards every rank holds its part of the state the
// single-process cpu::train_step would have produced (up to float summation order) and the same
// global metrics.
#pragma once
#include <cstdint>
#include <vector>

#include "dist/collectives.h"
#include "dist/shard.h"
#include "topksae/train.h"

namespace topksae::dist {

// A (value, global latent) top-k candidate as it travels in the all-gather.
struct Candidate {
  float value;
  int32_t latent;  // kNoLatent pads a rank's list when it has fewer candidates than asked for
};
inline constexpr int32_t kNoLatent = INT32_MAX;

// Scratch reused across steps.
struct ShardedWorkspace {
  // The rank-local forward, in TrainForward's layout so cpu::train_backward and
  // cpu::update_dead_stats run on it unchanged: d_sae = the shard's latents, h [B, shard],
  // idx/z [B, k] hold the shard-local index and z of the global top-k entries this rank owns
  // (z = 0 and idx 0 where another rank owns the slot), aux_idx/za the same for AuxK, and
  // lat_ptr/lat_entry cover the local entries only. xs, u, xhat, ehat, g, ga [B, d_in] and the
  // losses are global (identical on every rank); n_dead, k_aux, aux_scale are global too.
  TrainForward<float> fwd;
  std::vector<int32_t> top_idx;  // [B, k] the global top-k latents (what cpu::train_forward's idx holds)
  std::vector<int32_t> aux_idx;  // [B, k_aux] the global AuxK latents
  Params<float> grad;            // the shard's gradients
  std::vector<uint8_t> dead;     // [shard]
  std::vector<Candidate> cand, gathered;
  std::vector<float> partial;    // [B, d_in]
};

// Global top-kk per row: each rank offers its best kk of h [B, m] over the latents `local`
// (shard-local indices, ascending; null: all m), the lists are all-gathered and merged in
// MATH.md's order (larger value first, equal values to the lower global index, NaN last), so the
// result equals the unsharded top-kk ties included. out [B, kk] global latent indices, val [B, kk].
void sharded_topk(Collectives& comm, const ShardRange& r, const float* h, int64_t B, int64_t m, const int32_t* local,
                  int64_t n_local, int64_t kk, ShardedWorkspace* ws, int32_t* out, float* val);

// The forward of cpu::train_forward, sharded. n_dead_global: the dead latents over all ranks
// (their mask on this rank is ws->dead, used only when n_dead_global > 0).
void sharded_forward(Collectives& comm, const TrainConfig& cfg, const ShardRange& r, const Params<float>& p,
                     const float* x, int64_t B, double scaling_factor, int64_t n_dead_global, ShardedWorkspace* ws);

// cpu::train_step, sharded: st is this rank's part of the state.
StepMetrics sharded_train_step(Collectives& comm, const TrainConfig& cfg, const ShardRange& r, TrainState* st,
                               const float* x, int64_t B, ShardedWorkspace* ws);

}  // namespace topksae::dist
