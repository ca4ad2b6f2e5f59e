// CPU twin of the input/output normalisation (sae_lens run_time_activation_norm_fn_in/out).
#include <cmath>

#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu {

void normalize_in(Normalize mode, const float* x, int64_t B, int64_t d_in, float* out, NormStats* stats) {
  if (stats) {
    stats->scale.assign(size_t(B), 1.f);
    stats->shift.assign(size_t(B), 0.f);
  }
  if (mode == Normalize::none || mode == Normalize::expected_average_only_in) {
    if (out != x)
      for (int64_t i = 0; i < B * d_in; ++i) out[i] = x[i];
    return;
  }
  if (mode == Normalize::layer_norm)
    TOPKSAE_CHECK(d_in >= 2, "layer_norm normalisation needs d_in >= 2 (unbiased std), got ", d_in);
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b) {
    const float* xr = x + b * d_in;
    float* o = out + b * d_in;
    if (mode == Normalize::constant_norm_rescale) {
      double ss = 0;
      for (int64_t i = 0; i < d_in; ++i) ss += double(xr[i]) * xr[i];
      const float c = float(std::sqrt(double(d_in)) / std::sqrt(ss));
      for (int64_t i = 0; i < d_in; ++i) o[i] = xr[i] * c;
      if (stats) stats->scale[size_t(b)] = c;
    } else {  // layer_norm: (x - mu) / (std + 1e-5), std unbiased over (x - mu)
      double sum = 0;
      for (int64_t i = 0; i < d_in; ++i) sum += xr[i];
      const float mu = float(sum / double(d_in));
      double ss = 0;
      for (int64_t i = 0; i < d_in; ++i) {
        const double d = double(xr[i] - mu);
        ss += d * d;
      }
      const float sd = float(std::sqrt(ss / double(d_in - 1)));
      const float denom = sd + 1e-5f;
      for (int64_t i = 0; i < d_in; ++i) o[i] = (xr[i] - mu) / denom;
      if (stats) {
        stats->scale[size_t(b)] = sd;
        stats->shift[size_t(b)] = mu;
      }
    }
  }
}

void normalize_out(Normalize mode, float* xhat, int64_t B, int64_t d_in, const NormStats& stats) {
  if (mode == Normalize::none || mode == Normalize::expected_average_only_in) return;
  TOPKSAE_CHECK(stats.scale.size() == size_t(B) && stats.shift.size() == size_t(B),
                "normalize_out: statistics for ", stats.scale.size(), " rows, batch has ", B);
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b) {
    float* o = xhat + b * d_in;
    const float s = stats.scale[size_t(b)], m = stats.shift[size_t(b)];
    if (mode == Normalize::constant_norm_rescale)
      for (int64_t i = 0; i < d_in; ++i) o[i] /= s;
    else
      for (int64_t i = 0; i < d_in; ++i) o[i] = o[i] * s + m;
  }
}

}  // namespace topksae::cpu
