// cpu::train_forward with the latents sharded (docs/scaling.md): local encode h = u @ W_enc[:, shard]
// + b_enc[shard]; the global top-k by all-gather of candidates; each rank decodes the kept
// entries it owns into a partial reconstruction, and an all-reduce sums them (rank 0 starts its
// partial from b_dec, so xhat = b_dec + sum z W_dec as in the unsharded decode); the same for
// AuxK over the dead latents of all ranks (k_aux = min(d_in/2, dead over all ranks), the scale
// from the global dead count). Losses, g and ga are then computed identically on every rank.
#include <algorithm>
#include <cmath>

#include "cpu/train_forward_parts.h"
#include "dist/sharded_train.h"
#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::dist {

namespace {

using cpu::detail::kParallelMin;

// partial[b] (+)= sum over slots s whose latent is in the shard: val[b, s] * W_dec[latent - lo].
// Fills the local idx/coef of the shard's TrainForward ((0, 0) where another rank owns the slot).
void local_decode(const ShardRange& r, const Params<float>& p, const int32_t* glob, const float* coef_in, int64_t B,
                  int64_t kk, int64_t d, int32_t* local_idx, float* local_coef, float* partial) {
#pragma omp parallel for schedule(static) if (B * kk * d >= kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    float* o = partial + b * d;
    for (int64_t s = 0; s < kk; ++s) {
      const int64_t j = glob[b * kk + s];
      const bool mine = j >= r.lo && j < r.hi;
      local_idx[b * kk + s] = mine ? int32_t(j - r.lo) : 0;
      const float v = mine ? coef_in[b * kk + s] : 0.f;
      local_coef[b * kk + s] = v;
      if (v == 0.f) continue;
      const float* w = p.W_dec.data() + (j - r.lo) * d;
#pragma omp simd
      for (int64_t i = 0; i < d; ++i) o[i] += v * w[i];
    }
  }
}

// partial = b_dec on rank 0, zeros elsewhere [B, d].
void start_partial(const ShardRange& r, const Params<float>& p, int64_t B, int64_t d, std::vector<float>* partial) {
  partial->assign(size_t(B * d), 0.f);
  if (r.rank == 0)
    for (int64_t b = 0; b < B; ++b) std::copy(p.b_dec.begin(), p.b_dec.end(), partial->begin() + b * d);
}

}  // namespace

void sharded_forward(Collectives& comm, const TrainConfig& cfg, const ShardRange& r, const Params<float>& p,
                     const float* x, int64_t B, double scaling_factor, int64_t n_dead_global, ShardedWorkspace* ws) {
  const int64_t d = cfg.d_in, m = r.size(), k = cfg.k;
  TOPKSAE_CHECK(B >= 1, "sharded_forward: batch must have >= 1 rows, got ", B);
  TOPKSAE_CHECK(k >= 1 && k <= cfg.d_sae, "sharded_forward: k=", k, " must be in [1, d_sae=", cfg.d_sae, "]");
  TOPKSAE_CHECK(p.W_enc.size() == size_t(d * m) && p.W_dec.size() == size_t(m * d) && p.b_enc.size() == size_t(m) &&
                    p.b_dec.size() == size_t(d),
                "sharded_forward: the shard's parameters do not match d_in=", d, ", latents [", r.lo, ", ", r.hi, ")");
  TrainForward<float>* f = &ws->fwd;
  f->B = B, f->d_in = d, f->d_sae = m, f->k = k;

  // xs = s * x; u = xs - a * b_dec (every rank the same).
  cpu::detail::scale_and_center(cfg, p, x, B, scaling_factor, f);

  // h = u @ W_enc[:, shard] + b_enc[shard], [B, m].
  f->h.resize(size_t(B * m));
  for (int64_t b = 0; b < B; ++b) std::copy(p.b_enc.begin(), p.b_enc.end(), f->h.begin() + b * m);
  cpu::gemm(f->u.data(), p.W_enc.data(), f->h.data(), B, d, m, 1.f);

  // rescale_acts_by_decoder_norm: per-latent, so local.
  const bool rescale = cfg.rescale_acts_by_decoder_norm;
  std::vector<float> inv_norm;  // [m]
  cpu::detail::rescale_by_decoder_norm(cfg, p, B, m, f, &inv_norm);

  // Global top-k, then z = relu(h) (/ norm) for the entries this rank owns.
  ws->top_idx.resize(size_t(B * k));
  std::vector<float> val(size_t(B * k));
  sharded_topk(comm, r, f->h.data(), B, m, nullptr, m, k, ws, ws->top_idx.data(), val.data());
  for (int64_t e = 0; e < B * k; ++e) {
    const int64_t j = ws->top_idx[size_t(e)];
    const float zj = std::max(val[size_t(e)], 0.f);
    val[size_t(e)] = rescale && j >= r.lo && j < r.hi ? zj * inv_norm[size_t(j - r.lo)] : zj;
  }
  f->idx.resize(size_t(B * k));
  f->z.resize(size_t(B * k));
  start_partial(r, p, B, d, &ws->partial);
  local_decode(r, p, ws->top_idx.data(), val.data(), B, k, d, f->idx.data(), f->z.data(), ws->partial.data());
  comm.all_reduce_sum(ws->partial.data(), ws->partial.size());
  f->xhat = ws->partial;
  int64_t nnz = 0;  // this rank's entries; the step reduces it
  for (const float& v : f->z) nnz += v != 0.f;
  f->nnz = nnz;

  // MSE, explained variance, g (as cpu::train_forward; identical on every rank).
  cpu::detail::reconstruction_loss(f);

  // AuxK over the dead latents of all ranks.
  cpu::detail::size_aux(n_dead_global, f);
  const int64_t ka = f->k_aux;
  ws->aux_idx.resize(size_t(B * ka));
  if (ka > 0) {
    std::vector<int32_t> dead_list;  // shard-local, ascending
    for (int64_t j = 0; j < m; ++j)
      if (ws->dead[size_t(j)]) dead_list.push_back(int32_t(j));
    std::vector<float> aval(size_t(B * ka));
    sharded_topk(comm, r, f->h.data(), B, m, dead_list.data(), int64_t(dead_list.size()), ka, ws, ws->aux_idx.data(),
                 aval.data());
    for (int64_t e = 0; e < B * ka; ++e) {  // za = h (no ReLU; / norm when rescaling)
      const int64_t j = ws->aux_idx[size_t(e)];
      if (rescale && j >= r.lo && j < r.hi) aval[size_t(e)] *= inv_norm[size_t(j - r.lo)];
    }
    start_partial(r, p, B, d, &ws->partial);
    local_decode(r, p, ws->aux_idx.data(), aval.data(), B, ka, d, f->aux_idx.data(), f->za.data(), ws->partial.data());
    comm.all_reduce_sum(ws->partial.data(), ws->partial.size());
    f->ehat = ws->partial;
    cpu::detail::aux_loss(cfg, f);
  }
  f->loss = f->mse_loss + f->aux_loss;

  // Latent-major transpose of this rank's entries (as cpu::train_forward: stable in b, top-k
  // slots before AuxK slots), so cpu::train_backward sums each latent in the unsharded order.
  const int64_t per_row = k + ka;
  auto owned = [&](const std::vector<int32_t>& glob, int64_t e) { return glob[size_t(e)] >= r.lo && glob[size_t(e)] < r.hi; };
  f->lat_ptr.assign(size_t(m + 1), 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t sl = 0; sl < k; ++sl)
      if (owned(ws->top_idx, b * k + sl)) ++f->lat_ptr[size_t(f->idx[size_t(b * k + sl)]) + 1];
    for (int64_t sl = 0; sl < ka; ++sl)
      if (owned(ws->aux_idx, b * ka + sl)) ++f->lat_ptr[size_t(f->aux_idx[size_t(b * ka + sl)]) + 1];
  }
  for (int64_t j = 0; j < m; ++j) f->lat_ptr[size_t(j + 1)] += f->lat_ptr[size_t(j)];
  f->lat_entry.resize(size_t(f->lat_ptr[size_t(m)]));
  std::vector<int64_t> fill(f->lat_ptr.begin(), f->lat_ptr.end() - 1);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t sl = 0; sl < k; ++sl)
      if (owned(ws->top_idx, b * k + sl))
        f->lat_entry[size_t(fill[size_t(f->idx[size_t(b * k + sl)])]++)] = b * per_row + sl;
    for (int64_t sl = 0; sl < ka; ++sl)
      if (owned(ws->aux_idx, b * ka + sl))
        f->lat_entry[size_t(fill[size_t(f->aux_idx[size_t(b * ka + sl)])]++)] = b * per_row + k + sl;
  }
}

}  // namespace topksae::dist
