// The exact global top-k of latent-sharded training: a rank's k best candidates contain every
// one of its latents that can be in the global top-k, so merging the R lists by the same total
// order gives the unsharded selection, ties included. Payload: R * B * kk * 8 bytes per rank.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "dist/sharded_train.h"

namespace topksae::dist {

namespace {
// MATH.md's order: larger value first, equal values to the lower index; NaN ranks below every
// number (as cpu::topk_select); padding (kNoLatent) below everything.
inline float key(float v) { return std::isnan(v) ? -INFINITY : v; }
inline bool before(const Candidate& a, const Candidate& c) {
  const float ka = key(a.value), kc = key(c.value);
  return ka > kc || (ka == kc && a.latent < c.latent);
}
}  // namespace

void sharded_topk(Collectives& comm, const ShardRange& r, const float* h, int64_t B, int64_t m, const int32_t* local,
                  int64_t n_local, int64_t kk, ShardedWorkspace* ws, int32_t* out, float* val) {
  const int R = comm.size();
  const int64_t take = std::min(kk, n_local);
  ws->cand.resize(size_t(B * kk));  // [B, kk] this rank's offer
#pragma omp parallel if (B * n_local >= (int64_t(1) << 18))
  {
    std::vector<Candidate> row;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const float* hr = h + b * m;
      row.resize(size_t(n_local));
      for (int64_t c = 0; c < n_local; ++c) {
        const int32_t jl = local ? local[c] : int32_t(c);
        row[size_t(c)] = {hr[jl], int32_t(r.lo + jl)};
      }
      if (take < n_local) std::nth_element(row.begin(), row.begin() + (take - 1), row.end(), before);
      Candidate* dst = ws->cand.data() + b * kk;
      std::copy(row.begin(), row.begin() + take, dst);
      std::fill(dst + take, dst + kk, Candidate{-INFINITY, kNoLatent});
    }
  }
  ws->gathered.resize(size_t(R) * size_t(B * kk));  // [R, B, kk]
  comm.all_gather(ws->cand.data(), ws->cand.size() * sizeof(Candidate), ws->gathered.data());
#pragma omp parallel if (int64_t(R) * B * kk >= (int64_t(1) << 16))
  {
    std::vector<Candidate> row;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      row.clear();
      for (int q = 0; q < R; ++q) {
        const Candidate* src = ws->gathered.data() + (int64_t(q) * B + b) * kk;
        row.insert(row.end(), src, src + kk);
      }
      std::partial_sort(row.begin(), row.begin() + kk, row.end(), before);
      for (int64_t s = 0; s < kk; ++s) {
        out[b * kk + s] = row[size_t(s)].latent;
        val[b * kk + s] = row[size_t(s)].value;
      }
    }
  }
}

}  // namespace topksae::dist
