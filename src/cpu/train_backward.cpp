// CPU twin of train_backward (MATH.md, Backward). One thread owns one latent j at a time and
// walks its entries (the tokens that selected it, top-k or AuxK, in ascending b), so every
// gradient is a race-free sum in a fixed order:
//   dW_dec[j]    = sum z_bj g_b + sum za_bj ga_b
//   dh_bj        = (g_b . W_dec[j]) [h_bj > 0]  (top-k entry)  |  ga_b . W_dec[j]  (AuxK entry)
//   dW_enc[:, j] = sum u_b dh_bj,  db_enc[j] = sum dh_bj
// and then db_dec = sum_b g_b + sum_b ga_b - a * sum_b du_b, where
//   sum_b du_b = sum_b sum_j dh_bj W_enc[:, j] = W_enc @ db_enc   (no per-token du needed).
// A latent that is in both S_b and T_b has two entries for b: its contributions add.
// With rescale_acts_by_decoder_norm the coefficient of W_dec[j] is relu(h n_j) / n_j, which is
// relu(h) as a function: its derivative in h is [h > 0] and its derivative through n_j = ||W_dec[j]||
// is zero, so the same formulas hold with the forward's z and za (the FD test checks this).
#include <algorithm>

#include "cpu/train_detail.h"
#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae::cpu {

template <typename T>
void train_backward(const TrainConfig& cfg, const Params<T>& p, const TrainForward<T>& f, Params<T>* grad) {
  const int64_t d = f.d_in, n = f.d_sae, k = f.k, ka = f.k_aux, B = f.B;
  const int64_t per_row = k + ka;
  TOPKSAE_CHECK(d == cfg.d_in && n == cfg.d_sae, "train_backward: forward state does not match the config");
  TOPKSAE_CHECK(f.lat_ptr.size() == size_t(n + 1), "train_backward: call train_forward first");
  auto resize = [](std::vector<T>& v, size_t sz) { v.assign(sz, T(0)); };
  resize(grad->W_enc, size_t(d * n));
  resize(grad->b_enc, size_t(n));
  resize(grad->W_dec, size_t(n * d));
  resize(grad->b_dec, size_t(d));

#pragma omp parallel if (int64_t(f.lat_entry.size()) * d >= detail::kParallelMin)
  {
    std::vector<T> acc_enc(static_cast<size_t>(d));  // dW_enc[:, j], contiguous while accumulating
#pragma omp for schedule(dynamic, 16)
    for (int64_t j = 0; j < n; ++j) {
      const int64_t e0 = f.lat_ptr[size_t(j)], e1 = f.lat_ptr[size_t(j + 1)];
      if (e0 == e1) continue;
      const T* wd = p.W_dec.data() + j * d;
      T* gwd = grad->W_dec.data() + j * d;
      std::fill(acc_enc.begin(), acc_enc.end(), T(0));
      T db = 0;
      for (int64_t e = e0; e < e1; ++e) {
        const int64_t id = f.lat_entry[size_t(e)];
        const int64_t b = id / per_row, sl = id % per_row;
        const bool aux = sl >= k;
        const T act = aux ? f.za[size_t(b * ka + (sl - k))] : f.z[size_t(b * k + sl)];
        const T* gv = aux ? f.ga.data() + b * d : f.g.data() + b * d;
        const T dot = detail::dot(gv, wd, d);
        // Top-k entry: ReLU gradient [h > 0] (0 at 0, as torch); z > 0 iff h > 0.
        const T dh = aux ? dot : (act > T(0) ? dot : T(0));
        if (act != T(0)) detail::axpy(act, gv, gwd, d);
        if (dh != T(0)) {
          detail::axpy(dh, f.u.data() + b * d, acc_enc.data(), d);
          db += dh;
        }
      }
      for (int64_t i = 0; i < d; ++i) grad->W_enc[size_t(i * n + j)] = acc_enc[size_t(i)];
      grad->b_enc[size_t(j)] = db;
    }
  }

  // db_dec: column sums of g and ga, minus a * W_enc @ db_enc (parallel over the d_in outputs).
  const bool a = cfg.apply_b_dec_to_input;
#pragma omp parallel for schedule(static) if ((B + n) * d >= detail::kParallelMin)
  for (int64_t i = 0; i < d; ++i) {
    T s = 0;
    for (int64_t b = 0; b < B; ++b) s += f.g[size_t(b * d + i)];
    if (ka > 0)
      for (int64_t b = 0; b < B; ++b) s += f.ga[size_t(b * d + i)];
    if (a) {
      T du = 0;
      const T* we = p.W_enc.data() + i * n;
      for (int64_t j = 0; j < n; ++j) du += we[j] * grad->b_enc[size_t(j)];
      s -= du;
    }
    grad->b_dec[size_t(i)] = s;
  }
}

template void train_backward<float>(const TrainConfig&, const Params<float>&, const TrainForward<float>&, Params<float>*);
template void train_backward<double>(const TrainConfig&, const Params<double>&, const TrainForward<double>&,
                                     Params<double>*);

}  // namespace topksae::cpu
