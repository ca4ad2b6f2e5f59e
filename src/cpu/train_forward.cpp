// CPU twin of train_forward (MATH.md, Training forward and losses): scale, encode, top-k, sparse
// decode, MSE; AuxK over the latents that were dead before this step; the loss gradients g, ga
// and the latent-major transpose of the selection for the backward. The only [B, d_sae] buffer
// is h; the decodes walk the k (+ k_aux) selected rows of W_dec per token.
#include <algorithm>
#include <cmath>

#include "cpu/train_detail.h"
#include "cpu/train_forward_parts.h"
#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae::cpu {

namespace {

// out[b] = b_dec + sum_s val[b, s] * W_dec[idx[b, s]], out [B, d]; idx/val [B, kk].
template <typename T>
void sparse_decode(const Params<T>& p, const int32_t* idx, const T* val, int64_t B, int64_t kk, int64_t d, T* out) {
#pragma omp parallel for schedule(static) if (B * kk * d >= detail::kParallelMin)
  for (int64_t b = 0; b < B; ++b) {
    T* o = out + b * d;
    std::copy(p.b_dec.begin(), p.b_dec.end(), o);
    for (int64_t s = 0; s < kk; ++s) {
      const T v = val[b * kk + s];
      if (v == T(0)) continue;
      detail::axpy(v, p.W_dec.data() + int64_t(idx[b * kk + s]) * d, o, d);
    }
  }
}

}  // namespace

template <typename T>
void train_forward(const TrainConfig& cfg, const Params<T>& p, const T* x, int64_t B, double scaling_factor,
                   const uint8_t* dead, TrainForward<T>* f) {
  const int64_t d = cfg.d_in, n = cfg.d_sae, k = cfg.k;
  TOPKSAE_CHECK(B >= 1, "train_forward: batch must have >= 1 rows, got ", B);
  TOPKSAE_CHECK(k >= 1 && k <= n, "train_forward: k=", k, " must be in [1, d_sae=", n, "]");
  TOPKSAE_CHECK(p.W_enc.size() == size_t(d * n) && p.W_dec.size() == size_t(n * d) && p.b_enc.size() == size_t(n) &&
                    p.b_dec.size() == size_t(d),
                "train_forward: parameter shapes do not match d_in=", d, ", d_sae=", n);
  f->B = B, f->d_in = d, f->d_sae = n, f->k = k;

  // xs = s * x; u = xs - a * b_dec.
  detail::scale_and_center(cfg, p, x, B, scaling_factor, f);

  // h = u @ W_enc + b_enc.
  f->h.resize(size_t(B * n));
#pragma omp parallel for schedule(static) if (B * n >= detail::kParallelMin)
  for (int64_t b = 0; b < B; ++b) std::copy(p.b_enc.begin(), p.b_enc.end(), f->h.begin() + b * n);
  detail::gemm_acc(f->u.data(), p.W_enc.data(), f->h.data(), B, d, n);

  // rescale_acts_by_decoder_norm (sae_lens 6.14): hidden_pre = h * ||W_dec[j]||; the decode
  // multiplies the activations by inv_norm = 1 / ||W_dec[j]||.
  const bool rescale = cfg.rescale_acts_by_decoder_norm;
  std::vector<T> inv_norm;
  detail::rescale_by_decoder_norm(cfg, p, B, n, f, &inv_norm);

  // Top-k on the raw h, ReLU after.
  f->idx.resize(size_t(B * k));
  f->z.resize(size_t(B * k));
#pragma omp parallel if (B * n >= detail::kParallelMin)
  {
    std::vector<int32_t> order;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      const T* hr = f->h.data() + b * n;
      detail::select_top(hr, static_cast<const int32_t*>(nullptr), n, k, order, f->idx.data() + b * k);
      for (int64_t sl = 0; sl < k; ++sl) {
        const int32_t j = f->idx[size_t(b * k + sl)];
        const T zj = std::max(hr[j], T(0));
        f->z[size_t(b * k + sl)] = rescale ? zj * inv_norm[size_t(j)] : zj;
      }
    }
  }
  int64_t nnz = 0;
  for (const T& v : f->z) nnz += v != T(0);
  f->nnz = nnz;

  // xhat = z @ W_dec + b_dec over the selected rows only.
  f->xhat.resize(size_t(B * d));
  sparse_decode(p, f->idx.data(), f->z.data(), B, k, d, f->xhat.data());

  // MSE, explained variance (losses in double); g = (2/B) (xhat - xs).
  detail::reconstruction_loss(f);

  // AuxK over the dead latents.
  std::vector<int32_t> dead_list;
  if (dead)
    for (int64_t j = 0; j < n; ++j)
      if (dead[j]) dead_list.push_back(int32_t(j));
  detail::size_aux(int64_t(dead_list.size()), f);
  const int64_t ka = f->k_aux;
  if (ka > 0) {
#pragma omp parallel if (B * f->n_dead >= detail::kParallelMin)
    {
      std::vector<int32_t> order;
#pragma omp for schedule(static)
      for (int64_t b = 0; b < B; ++b) {
        const T* hr = f->h.data() + b * n;
        detail::select_top(hr, dead_list.data(), f->n_dead, ka, order, f->aux_idx.data() + b * ka);
        for (int64_t sl = 0; sl < ka; ++sl) {
          const int32_t j = f->aux_idx[size_t(b * ka + sl)];
          f->za[size_t(b * ka + sl)] = rescale ? hr[j] * inv_norm[size_t(j)] : hr[j];
        }
      }
    }
    sparse_decode(p, f->aux_idx.data(), f->za.data(), B, ka, d, f->ehat.data());
    detail::aux_loss(cfg, f);  // r = stopgrad(xs - xhat); L_aux = coef * scale * mean_b ||ehat_b - r_b||^2
  }
  f->loss = f->mse_loss + f->aux_loss;

  // Latent-major transpose of the selection (counting sort by latent, stable in b).
  const int64_t per_row = k + ka;
  f->lat_ptr.assign(size_t(n + 1), 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t sl = 0; sl < k; ++sl) ++f->lat_ptr[size_t(f->idx[size_t(b * k + sl)]) + 1];
    for (int64_t sl = 0; sl < ka; ++sl) ++f->lat_ptr[size_t(f->aux_idx[size_t(b * ka + sl)]) + 1];
  }
  for (int64_t j = 0; j < n; ++j) f->lat_ptr[size_t(j + 1)] += f->lat_ptr[size_t(j)];
  f->lat_entry.resize(size_t(B * per_row));
  std::vector<int64_t> fill(f->lat_ptr.begin(), f->lat_ptr.end() - 1);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t sl = 0; sl < k; ++sl) f->lat_entry[size_t(fill[size_t(f->idx[size_t(b * k + sl)])]++)] = b * per_row + sl;
    for (int64_t sl = 0; sl < ka; ++sl)
      f->lat_entry[size_t(fill[size_t(f->aux_idx[size_t(b * ka + sl)])]++)] = b * per_row + k + sl;
  }
}

template void train_forward<float>(const TrainConfig&, const Params<float>&, const float*, int64_t, double,
                                   const uint8_t*, TrainForward<float>*);
template void train_forward<double>(const TrainConfig&, const Params<double>&, const double*, int64_t, double,
                                    const uint8_t*, TrainForward<double>*);

}  // namespace topksae::cpu
