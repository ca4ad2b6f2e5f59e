// CPU twins of init_params and init_params_counter (MATH.md, Initialisation).
// init_params draws from std::mt19937_64 (its output sequence is fixed by the C++ standard) mapped
// to [0, 1) by our own 53-bit rule, not by std::uniform_real_distribution (whose algorithm is
// implementation-defined), so the same seed gives the same weights with every compiler and
// standard library. init_params_counter draws element (j, i) of W_dec from the counter-based
// stream of src/core/counter_rng.h instead, so its CUDA twin (kernels/train/init_params.cu) can
// make any row on any thread: different numbers from init_params for the same seed, the same law.
// Both work one row at a time (the row norm in double, then rounded to T), so a 4096 x 2^20 model
// needs no [d_sae, d_in] double buffer beside its weights.
#include <cmath>
#include <random>
#include <vector>

#include "core/counter_rng.h"
#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae::cpu {

namespace {
// Rows j = 0..n-1 of W_dec in order, each drawn by draw_row(j, row [d_in] of U[0, 1) values),
// mapped to U(-sqrt(6/d_in), sqrt(6/d_in)) (kaiming_uniform_ on [n, d_in], gain sqrt(2)), scaled
// to decoder_init_norm, then copied into W_dec [n, d_in] and W_enc = W_dec^T [d_in, n].
template <typename T, typename DrawRow>
Params<T> init_by_rows(const TrainConfig& cfg, DrawRow draw_row) {
  cfg.sae_config().validate();
  const int64_t d = cfg.d_in, n = cfg.d_sae;
  const double bound = std::sqrt(6.0 / double(d));
  Params<T> p = Params<T>::zeros(d, n);
  std::vector<double> row(static_cast<size_t>(d));  // [d_in]
  for (int64_t j = 0; j < n; ++j) {
    draw_row(j, row.data());
    double s = 0;
    for (double& x : row) {
      x = bound * (2.0 * x - 1.0);
      s += x * x;
    }
    const double f = cfg.decoder_init_norm ? *cfg.decoder_init_norm / std::sqrt(s) : 1.0;
    for (int64_t i = 0; i < d; ++i) {
      const T v = T(row[size_t(i)] * f);
      p.W_dec[size_t(j * d + i)] = v;
      p.W_enc[size_t(i * n + j)] = v;  // W_enc = W_dec^T, a copy
    }
  }
  return p;
}
}  // namespace

template <typename T>
Params<T> init_params(const TrainConfig& cfg) {
  std::mt19937_64 rng(cfg.seed);
  return init_by_rows<T>(cfg, [&](int64_t, double* row) {
    for (int64_t i = 0; i < cfg.d_in; ++i) row[i] = double(rng() >> 11) * 0x1.0p-53;  // [0, 1)
  });
}

template <typename T>
Params<T> init_params_counter(const TrainConfig& cfg) {
  const uint64_t seed = uint64_t(cfg.seed);
  return init_by_rows<T>(cfg, [&](int64_t j, double* row) {
    for (int64_t i = 0; i < cfg.d_in; ++i) row[i] = detail::counter_u01(seed, uint64_t(j * cfg.d_in + i));
  });
}

template Params<float> init_params<float>(const TrainConfig&);
template Params<double> init_params<double>(const TrainConfig&);
template Params<float> init_params_counter<float>(const TrainConfig&);
template Params<double> init_params_counter<double>(const TrainConfig&);

}  // namespace topksae::cpu
