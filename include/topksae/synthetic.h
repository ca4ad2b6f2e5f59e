// Synthetic activations with a known answer: a planted dictionary of unit-norm feature directions
// in d_in; each token is a sparse non-negative combination of them (feature frequencies log-spaced
// over orders of magnitude, random magnitudes) plus small Gaussian noise. Every row is a pure
// function of (seed, row index), so position()/seek() resume exactly and any two runs agree.
// The recovery report says how well an SAE's decoder rows found the planted directions.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "topksae/data.h"

namespace topksae {

struct SyntheticConfig {
  int64_t d_in = 64;
  int64_t n_features = 512;  // planted directions
  uint64_t seed = 0;
  // Per-token firing probability of feature i, log-spaced from max_freq (feature 0) down to
  // min_freq (the last feature).
  double max_freq = 0.05;
  double min_freq = 0.001;
  // Magnitude of an active feature ~ U(min_magnitude, max_magnitude).
  double min_magnitude = 0.5;
  double max_magnitude = 2.0;
  double noise_std = 0.01;  // i.i.d. N(0, noise_std^2) per dimension
  int64_t n_rows = -1;      // rows before the source runs dry; -1: endless
  void validate() const;    // throws Error naming the bad field
};

class SyntheticSource : public ActivationSource {
 public:
  explicit SyntheticSource(SyntheticConfig cfg);
  int64_t d_in() const override { return cfg_.d_in; }
  int64_t next(float* out, int64_t rows) override;
  // {"source":"synthetic","seed":S,"d_in":D,"n_features":F,"row":R}
  std::string position() const override;
  void seek(const std::string& position) override;  // Error if it names another source
  std::string describe() const override;

  const SyntheticConfig& config() const { return cfg_; }
  const std::vector<float>& dictionary() const { return dict_; }  // [n_features, d_in], unit rows
  const std::vector<double>& frequencies() const { return freq_; }  // [n_features]
  // Row i of the stream into out [d_in] (what next() returns at that position).
  void row(int64_t i, float* out) const;

 private:
  SyntheticConfig cfg_;
  std::vector<float> dict_;    // [n_features, d_in]
  std::vector<double> freq_;   // [n_features]
  std::vector<double> cdf_;    // [n_features] cumulative freq / sum(freq), for sampling
  double lambda_ = 0;          // expected active features per token = sum(freq)
  int64_t pos_ = 0;
};

// For each planted feature, the best cosine similarity with any decoder row.
struct RecoveryReport {
  std::vector<float> best_cos;        // [n_features]
  std::vector<int32_t> best_latent;   // [n_features] the decoder row that achieved it
  double mmcs = 0;                    // mean of best_cos
  double threshold = 0.9;
  double frac_above = 0;              // fraction of features with best_cos > threshold
  // "recovered 243/256 planted features (94.9%) at cosine > 0.9; MMCS 0.962"
  std::string summary() const;
};
// dictionary [n_features, d_in]; W_dec [d_sae, d_in]. Zero rows have cosine 0.
RecoveryReport feature_recovery(const std::vector<float>& dictionary, int64_t n_features, const std::vector<float>& W_dec,
                                int64_t d_sae, int64_t d_in, double threshold = 0.9);

}  // namespace topksae
