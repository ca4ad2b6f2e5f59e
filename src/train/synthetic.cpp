// The synthetic activation source and the feature-recovery report (include/topksae/synthetic.h).
// Random numbers come from a counter-based splitmix64 stream started at a hash of (seed, row), so
// row i is the same whatever was read before it and on every platform (up to libm's log/cos/sin
// in the noise and Poisson draws).
#include "topksae/synthetic.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numbers>

#include "core/counter_rng.h"
#include "topksae/error.h"

namespace topksae {

namespace {

using detail::splitmix64_mix;

struct Stream {
  uint64_t state;
  uint64_t next() { return splitmix64_mix(state += 0x9e3779b97f4a7c15ull); }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  double normal() {                                               // Box-Muller, one of the pair
    const double u1 = 1.0 - uniform(), u2 = uniform();            // u1 in (0, 1]
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
};

constexpr uint64_t kDictSalt = 0x6a09e667f3bcc909ull;
constexpr uint64_t kRowSalt = 0xbb67ae8584caa73bull;

}  // namespace

void SyntheticConfig::validate() const {
  TOPKSAE_CHECK(d_in >= 1, "synthetic: d_in must be >= 1, got ", d_in);
  TOPKSAE_CHECK(n_features >= 1, "synthetic: n_features must be >= 1, got ", n_features);
  TOPKSAE_CHECK(max_freq > 0 && max_freq <= 1 && min_freq > 0 && min_freq <= max_freq,
                "synthetic: need 0 < min_freq <= max_freq <= 1, got min_freq ", min_freq, ", max_freq ", max_freq);
  TOPKSAE_CHECK(min_magnitude >= 0 && max_magnitude >= min_magnitude,
                "synthetic: need 0 <= min_magnitude <= max_magnitude, got ", min_magnitude, ", ", max_magnitude);
  TOPKSAE_CHECK(noise_std >= 0, "synthetic: noise_std must be >= 0, got ", noise_std);
  TOPKSAE_CHECK(n_rows >= -1, "synthetic: n_rows must be >= 0 or -1 (endless), got ", n_rows);
}

SyntheticSource::SyntheticSource(SyntheticConfig cfg) : cfg_(cfg) {
  cfg_.validate();
  const int64_t F = cfg_.n_features, d = cfg_.d_in;
  Stream rng{splitmix64_mix(cfg_.seed ^ kDictSalt)};
  dict_.resize(size_t(F * d));
  for (int64_t f = 0; f < F; ++f) {
    std::vector<double> v(static_cast<size_t>(d));
    double s = 0;
    do {
      s = 0;
      for (double& x : v) {
        x = rng.normal();
        s += x * x;
      }
    } while (s == 0);
    const double inv = 1.0 / std::sqrt(s);
    for (int64_t i = 0; i < d; ++i) dict_[size_t(f * d + i)] = float(v[size_t(i)] * inv);
  }
  freq_.resize(size_t(F));
  cdf_.resize(size_t(F));
  lambda_ = 0;
  for (int64_t f = 0; f < F; ++f) {
    const double t = F > 1 ? double(f) / double(F - 1) : 0.0;
    freq_[size_t(f)] = cfg_.max_freq * std::pow(cfg_.min_freq / cfg_.max_freq, t);
    lambda_ += freq_[size_t(f)];
    cdf_[size_t(f)] = lambda_;
  }
  for (double& c : cdf_) c /= lambda_;
}

void SyntheticSource::row(int64_t i, float* out) const {
  const int64_t d = cfg_.d_in;
  Stream rng{splitmix64_mix(splitmix64_mix(cfg_.seed ^ kRowSalt) ^ uint64_t(i))};
  // Number of active features ~ Poisson(lambda) (Knuth), then that many draws by frequency;
  // a repeated draw is skipped, so features fire close to independently at rate freq.
  const double L = std::exp(-lambda_);
  int64_t m = 0;
  for (double p = rng.uniform(); p > L; p *= rng.uniform()) ++m;
  std::fill(out, out + d, 0.f);
  std::vector<int64_t> chosen;
  chosen.reserve(size_t(m));
  for (int64_t a = 0; a < m; ++a) {
    const double u = rng.uniform();
    int64_t f = int64_t(std::upper_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
    f = std::min(f, cfg_.n_features - 1);
    const double mag = cfg_.min_magnitude + (cfg_.max_magnitude - cfg_.min_magnitude) * rng.uniform();
    if (std::find(chosen.begin(), chosen.end(), f) != chosen.end()) continue;
    chosen.push_back(f);
    const float* dir = dict_.data() + f * d;
    for (int64_t k = 0; k < d; ++k) out[k] += float(mag) * dir[k];
  }
  if (cfg_.noise_std > 0)
    for (int64_t k = 0; k < d; ++k) out[k] += float(cfg_.noise_std * rng.normal());
}

int64_t SyntheticSource::next(float* out, int64_t rows) {
  TOPKSAE_CHECK(rows >= 0, "synthetic: rows must be >= 0, got ", rows);
  if (cfg_.n_rows >= 0) rows = std::min(rows, cfg_.n_rows - pos_);
  const int64_t start = pos_;
#pragma omp parallel for schedule(static) if (rows * cfg_.d_in >= (int64_t(1) << 14))
  for (int64_t r = 0; r < rows; ++r) row(start + r, out + r * cfg_.d_in);
  pos_ += rows;
  return rows;
}

std::string SyntheticSource::position() const {
  nlohmann::ordered_json j;
  j["source"] = "synthetic";
  j["seed"] = cfg_.seed;
  j["d_in"] = cfg_.d_in;
  j["n_features"] = cfg_.n_features;
  j["row"] = pos_;
  return j.dump();
}

void SyntheticSource::seek(const std::string& position) {
  if (position.empty()) {  // the start
    pos_ = 0;
    return;
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(position);
    TOPKSAE_CHECK(j.at("source").get<std::string>() == "synthetic", "synthetic: cannot seek to a position of source '",
                  j.at("source").get<std::string>(), "'");
    TOPKSAE_CHECK(j.at("seed").get<uint64_t>() == cfg_.seed && j.at("d_in").get<int64_t>() == cfg_.d_in &&
                      j.at("n_features").get<int64_t>() == cfg_.n_features,
                  "synthetic: position ", position, " belongs to another synthetic source (", describe(), ")");
    const int64_t row = j.at("row").get<int64_t>();
    TOPKSAE_CHECK(row >= 0 && (cfg_.n_rows < 0 || row <= cfg_.n_rows), "synthetic: row ", row, " out of range");
    pos_ = row;
  } catch (const nlohmann::json::exception& e) {
    TOPKSAE_FAIL("synthetic: bad position '", position, "': ", e.what());
  }
}

std::string SyntheticSource::describe() const {
  return concat("synthetic(seed=", cfg_.seed, ", d_in=", cfg_.d_in, ", n_features=", cfg_.n_features,
                ", mean active=", lambda_, ")");
}

std::string RecoveryReport::summary() const {
  const int64_t F = int64_t(best_cos.size());
  const int64_t above = int64_t(std::llround(frac_above * double(F)));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100.0 * frac_above);
  char mm[32];
  std::snprintf(mm, sizeof mm, "%.3f", mmcs);
  return concat("recovered ", above, "/", F, " planted features (", buf, ") at cosine > ", threshold, "; MMCS ", mm);
}

RecoveryReport feature_recovery(const std::vector<float>& dictionary, int64_t n_features, const std::vector<float>& W_dec,
                                int64_t d_sae, int64_t d_in, double threshold) {
  TOPKSAE_CHECK(dictionary.size() == size_t(n_features * d_in) && W_dec.size() == size_t(d_sae * d_in),
                "feature_recovery: sizes do not match n_features=", n_features, ", d_sae=", d_sae, ", d_in=", d_in);
  std::vector<double> inv_norm(static_cast<size_t>(d_sae));
  for (int64_t j = 0; j < d_sae; ++j) {
    double s = 0;
    for (int64_t i = 0; i < d_in; ++i) s += double(W_dec[size_t(j * d_in + i)]) * W_dec[size_t(j * d_in + i)];
    inv_norm[size_t(j)] = s > 0 ? 1.0 / std::sqrt(s) : 0.0;
  }
  RecoveryReport r;
  r.threshold = threshold;
  r.best_cos.assign(size_t(n_features), 0.f);
  r.best_latent.assign(size_t(n_features), -1);
#pragma omp parallel for schedule(static)
  for (int64_t f = 0; f < n_features; ++f) {
    const float* a = dictionary.data() + f * d_in;
    double na = 0;
    for (int64_t i = 0; i < d_in; ++i) na += double(a[i]) * a[i];
    const double inv_a = na > 0 ? 1.0 / std::sqrt(na) : 0.0;
    double best = -2;
    int32_t arg = -1;
    for (int64_t j = 0; j < d_sae; ++j) {
      const float* w = W_dec.data() + j * d_in;
      double dot = 0;
      for (int64_t i = 0; i < d_in; ++i) dot += double(a[i]) * w[i];
      const double c = dot * inv_a * inv_norm[size_t(j)];
      if (c > best) best = c, arg = int32_t(j);
    }
    r.best_cos[size_t(f)] = float(best);
    r.best_latent[size_t(f)] = arg;
  }
  double sum = 0;
  int64_t above = 0;
  for (float c : r.best_cos) {
    sum += c;
    above += c > threshold;
  }
  r.mmcs = n_features > 0 ? sum / double(n_features) : 0.0;
  r.frac_above = n_features > 0 ? double(above) / double(n_features) : 0.0;
  return r;
}

}  // namespace topksae
