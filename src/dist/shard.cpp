// The latent split of sharded training (shard.h) and slicing a whole state into a rank's part.
#include "dist/shard.h"

#include <algorithm>

#include "topksae/error.h"

namespace topksae::dist {

ShardRange shard_range(int64_t d_sae, int rank, int ranks) {
  TOPKSAE_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "shard_range: rank ", rank, " of ", ranks);
  const int64_t per = (d_sae + ranks - 1) / ranks;
  TOPKSAE_CHECK(per * (ranks - 1) < d_sae, "d_sae=", d_sae, " cannot be split over ", ranks,
                " ranks so that every rank holds a latent (blocks of ", per, "); use fewer ranks");
  ShardRange r;
  r.rank = rank;
  r.ranks = ranks;
  r.lo = per * rank;
  r.hi = std::min(d_sae, r.lo + per);
  return r;
}

TrainConfig shard_config(const TrainConfig& cfg, const ShardRange& r) {
  TrainConfig c = cfg;
  c.d_sae = r.size();
  return c;
}

Params<float> slice_params(const Params<float>& full, int64_t d_in, int64_t d_sae, const ShardRange& r) {
  const int64_t m = r.size();
  TOPKSAE_CHECK(full.W_enc.size() == size_t(d_in * d_sae) && full.W_dec.size() == size_t(d_sae * d_in),
                "slice_params: shapes do not match d_in=", d_in, ", d_sae=", d_sae);
  Params<float> p;
  p.W_enc.resize(size_t(d_in * m));  // [d_in, m]: columns lo..hi of each row
  for (int64_t i = 0; i < d_in; ++i)
    std::copy(full.W_enc.begin() + i * d_sae + r.lo, full.W_enc.begin() + i * d_sae + r.hi, p.W_enc.begin() + i * m);
  p.b_enc.assign(full.b_enc.begin() + r.lo, full.b_enc.begin() + r.hi);                  // [m]
  p.W_dec.assign(full.W_dec.begin() + r.lo * d_in, full.W_dec.begin() + r.hi * d_in);    // [m, d_in]
  p.b_dec = full.b_dec;                                                                  // [d_in]
  return p;
}

TrainState initial_shard_state(const TrainConfig& cfg, const ShardRange& r) {
  TrainState st;
  cfg.validate();
  st.params = slice_params(cpu::init_params<float>(cfg), cfg.d_in, cfg.d_sae, r);
  st.adam_m = Params<float>::zeros(cfg.d_in, r.size());
  st.adam_v = Params<float>::zeros(cfg.d_in, r.size());
  st.stats = SparsityStats::zeros(r.size());
  return st;
}

}  // namespace topksae::dist
