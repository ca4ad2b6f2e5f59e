// CPU twin of init_params (MATH.md, Initialisation). The random numbers come from
// std::mt19937_64 (its output sequence is fixed by the C++ standard) mapped to [0, 1) by our own
// 53-bit rule, not by std::uniform_real_distribution (whose algorithm is implementation-defined),
// so the same seed gives the same weights with every compiler and standard library. The row
// norms are computed in double; the result is then rounded to T.
#include <cmath>
#include <random>

#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae::cpu {

template <typename T>
Params<T> init_params(const TrainConfig& cfg) {
  cfg.sae_config().validate();
  const int64_t d = cfg.d_in, n = cfg.d_sae;
  std::mt19937_64 rng(cfg.seed);
  // kaiming_uniform_ on [n, d_in]: fan_in = d_in, gain sqrt(2): bound sqrt(6 / d_in).
  const double bound = std::sqrt(6.0 / double(d));
  std::vector<double> w(static_cast<size_t>(n * d));  // [n, d_in]
  for (double& x : w) {
    const double u01 = double(rng() >> 11) * 0x1.0p-53;  // [0, 1)
    x = bound * (2.0 * u01 - 1.0);
  }
  if (cfg.decoder_init_norm) {
    for (int64_t j = 0; j < n; ++j) {
      double* row = w.data() + j * d;
      double s = 0;
      for (int64_t i = 0; i < d; ++i) s += row[i] * row[i];
      const double f = *cfg.decoder_init_norm / std::sqrt(s);
      for (int64_t i = 0; i < d; ++i) row[i] *= f;
    }
  }
  Params<T> p = Params<T>::zeros(d, n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < d; ++i) {
      const T v = T(w[size_t(j * d + i)]);
      p.W_dec[size_t(j * d + i)] = v;
      p.W_enc[size_t(i * n + j)] = v;  // W_enc = W_dec^T, a copy
    }
  return p;
}

template Params<float> init_params<float>(const TrainConfig&);
template Params<double> init_params<double>(const TrainConfig&);

}  // namespace topksae::cpu
