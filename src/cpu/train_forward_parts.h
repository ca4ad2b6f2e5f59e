// The pieces of the training forward (MATH.md, Training forward and losses) that do not depend
// on how the latents are laid out: cpu::train_forward (all latents) and the latent-sharded
// forward (src/dist/sharded_forward.cpp, a block of them, with the reconstructions summed over
// ranks) both call these, so a change to the math reaches both paths. Each works on a
// TrainForward's global [B, d_in] buffers, or on one block of latents' [B, n] h.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/train_detail.h"
#include "topksae/train.h"

namespace topksae::cpu::detail {

// xs = s * x and u = xs - a * b_dec, [B, d_in] (a = apply_b_dec_to_input).
template <typename T>
void scale_and_center(const TrainConfig& cfg, const Params<T>& p, const T* x, int64_t B, double scaling_factor,
                      TrainForward<T>* f) {
  const int64_t d = cfg.d_in;
  const T s = T(scaling_factor);
  const T a = cfg.apply_b_dec_to_input ? T(1) : T(0);
  f->xs.resize(size_t(B * d));
  f->u.resize(size_t(B * d));
#pragma omp parallel for schedule(static) if (B * d >= kParallelMin)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < d; ++i) {
      const T v = scaling_factor == 1.0 ? x[b * d + i] : s * x[b * d + i];
      f->xs[size_t(b * d + i)] = v;
      f->u[size_t(b * d + i)] = v - a * p.b_dec[size_t(i)];
    }
}

// rescale_acts_by_decoder_norm (sae_lens 6.14) over n latents whose W_dec rows are p.W_dec [n, d]
// and whose pre-activations are h [B, n]: f->dec_norm [n] = ||W_dec[j]||, h *= dec_norm, and
// inv_norm [n] = 1 / dec_norm (the decode multiplies by it, as sae_lens does, rather than
// dividing). Without the option: dec_norm and inv_norm empty, h unchanged.
template <typename T>
void rescale_by_decoder_norm(const TrainConfig& cfg, const Params<T>& p, int64_t B, int64_t n, TrainForward<T>* f,
                             std::vector<T>* inv_norm) {
  const int64_t d = cfg.d_in;
  const bool rescale = cfg.rescale_acts_by_decoder_norm;
  f->dec_norm.resize(rescale ? size_t(n) : 0);
  inv_norm->assign(rescale ? size_t(n) : 0, T(0));
  if (!rescale) return;
  for (int64_t j = 0; j < n; ++j) {
    T s2 = 0;
    for (int64_t i = 0; i < d; ++i) s2 += p.W_dec[size_t(j * d + i)] * p.W_dec[size_t(j * d + i)];
    f->dec_norm[size_t(j)] = std::sqrt(s2);
    (*inv_norm)[size_t(j)] = T(1) / f->dec_norm[size_t(j)];
  }
#pragma omp parallel for schedule(static) if (B * n >= kParallelMin)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < n; ++j) f->h[size_t(b * n + j)] *= f->dec_norm[size_t(j)];
}

// From f->xs and f->xhat [B, d_in]: the MSE and explained variance (in double) and the loss
// gradient g = (2/B) (xhat - xs).
template <typename T>
void reconstruction_loss(TrainForward<T>* f) {
  const int64_t B = f->B, d = f->d_in;
  std::vector<double> col_mean(static_cast<size_t>(d), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < d; ++i) col_mean[size_t(i)] += double(f->xs[size_t(b * d + i)]);
  for (double& m : col_mean) m /= double(B);
  double sq_err = 0, sq_var = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < d; ++i) {
      const double xs = double(f->xs[size_t(b * d + i)]);
      const double e = double(f->xhat[size_t(b * d + i)]) - xs;
      const double c = xs - col_mean[size_t(i)];
      sq_err += e * e;
      sq_var += c * c;
    }
  f->mse_loss = sq_err / double(B);
  f->explained_variance = 1.0 - (sq_err / double(B)) / (sq_var / double(B));
  const T g_scale = T(2.0 / double(B));
  f->g.resize(size_t(B * d));
  for (int64_t e = 0; e < B * d; ++e) f->g[size_t(e)] = g_scale * (f->xhat[size_t(e)] - f->xs[size_t(e)]);
}

// AuxK's sizes from the dead count (over the whole model): k_aux = min(d_in / 2, n_dead), scale =
// min(n_dead / (d_in / 2), 1); both 0 without dead latents. Sizes aux_idx, za [B, k_aux] and
// ehat, ga [B, d_in] (empty when k_aux is 0).
template <typename T>
void size_aux(int64_t n_dead, TrainForward<T>* f) {
  const int64_t B = f->B, d = f->d_in, k_aux0 = d / 2;
  f->n_dead = n_dead;
  f->aux_loss = 0;
  f->aux_scale = n_dead > 0 ? std::min(double(n_dead) / double(k_aux0), 1.0) : 0.0;
  f->k_aux = n_dead > 0 ? std::min(k_aux0, n_dead) : 0;
  const int64_t ka = f->k_aux;
  f->aux_idx.resize(size_t(B * ka));
  f->za.resize(size_t(B * ka));
  f->ehat.resize(size_t(ka ? B * d : 0));
  f->ga.resize(size_t(ka ? B * d : 0));
}

// From f->ehat, the AuxK reconstruction: r = stopgrad(xs - xhat), L_aux = coef * scale *
// mean_b ||ehat_b - r_b||^2 and its gradient ga = (2 coef scale / B) (ehat - r), [B, d_in].
template <typename T>
void aux_loss(const TrainConfig& cfg, TrainForward<T>* f) {
  const int64_t B = f->B, d = f->d_in;
  const double c = cfg.aux_loss_coefficient * f->aux_scale;
  const T ga_scale = T(2.0 * c / double(B));
  double sq = 0;
  for (int64_t e = 0; e < B * d; ++e) {
    const T r = f->xs[size_t(e)] - f->xhat[size_t(e)];
    const T diff = f->ehat[size_t(e)] - r;
    sq += double(diff) * double(diff);
    f->ga[size_t(e)] = ga_scale * diff;
  }
  f->aux_loss = c * sq / double(B);
}

}  // namespace topksae::cpu::detail
