// Latent sharding: rank r of R holds latents [lo, hi) of d_sae, with lo = r * ceil(d_sae / R)
// (R need not divide d_sae; the last rank holds fewer). Its part of the model is a TrainState of
// the same type with d_sae replaced by hi - lo: W_enc [d_in, hi-lo] (its columns), b_enc [hi-lo],
// W_dec [hi-lo, d_in] (its rows), the Adam moments of those, since_fired / act_freq [hi-lo], and
// the replicated b_dec [d_in] with its moments. The split is defined here and nowhere else.
#pragma once
#include <cstdint>

#include "topksae/train.h"

namespace topksae::dist {

struct ShardRange {
  int64_t lo = 0, hi = 0;  // global latent indices [lo, hi)
  int rank = 0, ranks = 1;
  int64_t size() const { return hi - lo; }
};

// Throws Error when some rank would hold no latent (R too large for d_sae).
ShardRange shard_range(int64_t d_sae, int rank, int ranks);

// The config a shard's arrays have: cfg with d_sae = r.size() (everything else unchanged).
TrainConfig shard_config(const TrainConfig& cfg, const ShardRange& r);

// Rank r's part of full parameters [d_in, d_sae] / [d_sae] / [d_sae, d_in] / [d_in].
Params<float> slice_params(const Params<float>& full, int64_t d_in, int64_t d_sae, const ShardRange& r);

// The rank's part of the freshly initialised state. The initialisation is drawn for the whole
// model (one seeded stream, so the SAE is the one a single process would train) and sliced; the
// full draw is held only here, once, before training starts.
TrainState initial_shard_state(const TrainConfig& cfg, const ShardRange& r);

}  // namespace topksae::dist
