// Evaluation metrics of an SAE on a set of tokens (shared/spec/MATH.md "Evaluation metrics"),
// computed on the UNSCALED input x and the output xhat, accumulated over batches in double.
// The clear definitions come first; sae_lens's own variants are kept under their own names
// (prefixed saelens_) because they do not mean what their names suggest.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "topksae/ops_cpu.h"

namespace topksae {

// Histogram of log10(feature density + 1e-10) over the latents, as sae_lens plots it.
struct DensityHistogram {
  double lo = -10, hi = 0;           // bin edges span [lo, hi]; bins of equal width
  std::vector<int64_t> counts;       // [bins]
  int64_t never_fired = 0;           // latents with density 0 (they sit in the first bin too)
  double bin_lo(size_t i) const { return lo + (hi - lo) * double(i) / double(counts.size()); }
};
// log10_density [d_sae]: log10(density + 1e-10) per latent (the sparsity.safetensors values).
DensityHistogram density_histogram(const std::vector<float>& log10_density, int bins = 20);

struct EvalMetrics {
  int64_t tokens = 0, d_in = 0, d_sae = 0;
  double l0 = 0;                 // mean number of non-zero latents per token
  double l1 = 0;                 // mean sum of latent values per token
  double mse = 0;                // mean over tokens and d_in of (xhat - x)^2 (per element)
  double explained_variance = 0; // 1 - sum_b ||x_b - xhat_b||^2 / sum_b ||x_b - mean(x)||^2
  double cosine_similarity = 0;  // mean over tokens of cos(x_b, xhat_b)
  double l2_norm_in = 0, l2_norm_out = 0;  // mean ||x_b||, mean ||xhat_b||
  double l2_ratio = 0;           // mean over tokens of ||xhat_b|| / ||x_b||
  double relative_reconstruction_bias = 0;  // mean ||xhat||^2 / mean <x, xhat>
  // sae_lens's variants, named apart:
  double saelens_mse = 0;        // sae_lens "mse": sum over d_in, mean over tokens (not per element)
  double saelens_explained_variance_legacy = 0;  // mean over tokens of 1 - ||r_b||^2/||x_b - batch mean||^2
  // Per latent: log10(fraction of tokens on which it fired + 1e-10), and the dead count (never fired).
  std::vector<float> log10_density;  // [d_sae]
  int64_t dead = 0;
  DensityHistogram histogram;
  std::string to_json() const;   // every field above, histogram included (not the per-latent vector)
  std::string to_text() const;   // aligned "name  value" lines for a terminal
};

// Streams batches in; result() at any time.
class MetricsAccumulator {
 public:
  MetricsAccumulator(int64_t d_in, int64_t d_sae);
  // x, xhat [B, d_in] unscaled; codes: the top-k codes of x (values after ReLU).
  void add(const float* x, const float* xhat, const cpu::TopKCodes& codes);
  EvalMetrics result(int histogram_bins = 20) const;

 private:
  int64_t d_in_, d_sae_, tokens_ = 0;
  double nnz_ = 0, l1_ = 0, sq_err_ = 0, sq_x_ = 0, cos_ = 0, n_in_ = 0, n_out_ = 0, ratio_ = 0;
  double sq_out_ = 0, dot_ = 0, ev_legacy_ = 0;
  std::vector<double> sum_x_;       // [d_in] for the global mean
  std::vector<int64_t> fired_;      // [d_sae] tokens on which each latent was non-zero
};

}  // namespace topksae
