// Evaluation metrics over batches (include/topksae/metrics.h). Everything accumulates in double
// so that a million tokens sum without drift.
#include "topksae/metrics.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "topksae/error.h"

namespace topksae {

DensityHistogram density_histogram(const std::vector<float>& log10_density, int bins) {
  TOPKSAE_CHECK(bins >= 1, "histogram needs at least one bin, got ", bins);
  DensityHistogram h;
  h.counts.assign(size_t(bins), 0);
  for (float v : log10_density) {
    if (v <= -9.999f) ++h.never_fired;  // log10(0 + 1e-10)
    double t = (double(v) - h.lo) / (h.hi - h.lo) * bins;
    int b = std::clamp(int(std::floor(t)), 0, bins - 1);
    ++h.counts[size_t(b)];
  }
  return h;
}

MetricsAccumulator::MetricsAccumulator(int64_t d_in, int64_t d_sae)
    : d_in_(d_in), d_sae_(d_sae), sum_x_(size_t(d_in), 0.0), fired_(size_t(d_sae), 0) {}

void MetricsAccumulator::add(const float* x, const float* xhat, const cpu::TopKCodes& codes) {
  const int64_t B = codes.rows;
  TOPKSAE_CHECK(codes.d_sae == d_sae_, "codes have d_sae ", codes.d_sae, ", metrics expect ", d_sae_);
  if (B == 0) return;
  std::vector<double> batch_mean(size_t(d_in_), 0.0);  // [d_in], for sae_lens's legacy EV
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < d_in_; ++i) batch_mean[size_t(i)] += x[b * d_in_ + i];
  for (auto& m : batch_mean) m /= double(B);
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x + b * d_in_;
    const float* yb = xhat + b * d_in_;
    double err = 0, xx = 0, yy = 0, xy = 0, var_b = 0;
    for (int64_t i = 0; i < d_in_; ++i) {
      double xi = xb[i], yi = yb[i], r = yi - xi, c = xi - batch_mean[size_t(i)];
      err += r * r;
      xx += xi * xi;
      yy += yi * yi;
      xy += xi * yi;
      var_b += c * c;
      sum_x_[size_t(i)] += xi;
    }
    sq_err_ += err;
    sq_x_ += xx;
    sq_out_ += yy;
    dot_ += xy;
    double nx = std::sqrt(xx), ny = std::sqrt(yy);
    n_in_ += nx;
    n_out_ += ny;
    // torch's cosine_similarity clamps each norm at eps=1e-8; sae_lens's l2_ratio replaces a
    // near-zero input norm (< 1e-4) by 1.
    cos_ += xy / (std::max(nx, 1e-8) * std::max(ny, 1e-8));
    ratio_ += ny / (nx < 1e-4 ? 1.0 : nx);
    ev_legacy_ += 1.0 - err / var_b;
    for (int64_t s = 0; s < codes.k; ++s) {
      float v = codes.values[size_t(b * codes.k + s)];
      if (v != 0.f) {
        nnz_ += 1;
        l1_ += v;
        ++fired_[size_t(codes.indices[size_t(b * codes.k + s)])];
      }
    }
  }
  tokens_ += B;
}

EvalMetrics MetricsAccumulator::result(int histogram_bins) const {
  EvalMetrics m;
  m.tokens = tokens_;
  m.d_in = d_in_;
  m.d_sae = d_sae_;
  TOPKSAE_CHECK(tokens_ > 0, "no tokens were evaluated (empty input)");
  const double N = double(tokens_);
  m.l0 = nnz_ / N;
  m.l1 = l1_ / N;
  m.mse = sq_err_ / (N * double(d_in_));
  double mean_sq = 0;
  for (double s : sum_x_) mean_sq += (s / N) * (s / N);
  double total_var = sq_x_ - N * mean_sq;  // sum_b ||x_b - mean||^2
  m.explained_variance = total_var > 0 ? 1.0 - sq_err_ / total_var : NAN;
  m.cosine_similarity = cos_ / N;
  m.l2_norm_in = n_in_ / N;
  m.l2_norm_out = n_out_ / N;
  m.l2_ratio = ratio_ / N;
  m.relative_reconstruction_bias = dot_ != 0 ? sq_out_ / dot_ : NAN;
  m.saelens_mse = sq_err_ / N;
  m.saelens_explained_variance_legacy = ev_legacy_ / N;
  m.log10_density.resize(size_t(d_sae_));
  for (int64_t j = 0; j < d_sae_; ++j) {
    m.log10_density[size_t(j)] = float(std::log10(double(fired_[size_t(j)]) / N + 1e-10));
    m.dead += fired_[size_t(j)] == 0;
  }
  m.histogram = density_histogram(m.log10_density, histogram_bins);
  return m;
}

namespace {
// JSON has no NaN: write null.
nlohmann::json num(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }
}  // namespace

std::string EvalMetrics::to_json() const {
  nlohmann::json j;
  j["tokens"] = tokens;
  j["d_in"] = d_in;
  j["d_sae"] = d_sae;
  j["l0"] = num(l0);
  j["l1"] = num(l1);
  j["mse"] = num(mse);
  j["explained_variance"] = num(explained_variance);
  j["cosine_similarity"] = num(cosine_similarity);
  j["l2_norm_in"] = num(l2_norm_in);
  j["l2_norm_out"] = num(l2_norm_out);
  j["l2_ratio"] = num(l2_ratio);
  j["relative_reconstruction_bias"] = num(relative_reconstruction_bias);
  j["saelens_mse"] = num(saelens_mse);
  j["saelens_explained_variance_legacy"] = num(saelens_explained_variance_legacy);
  j["dead_features"] = dead;
  nlohmann::json h;
  h["log10_density_lo"] = histogram.lo;
  h["log10_density_hi"] = histogram.hi;
  h["counts"] = histogram.counts;
  h["never_fired"] = histogram.never_fired;
  j["feature_density_histogram"] = h;
  return j.dump(2);
}

std::string EvalMetrics::to_text() const {
  std::ostringstream os;
  os << std::setprecision(6);
  auto line = [&](const char* name, double v, const char* note = "") {
    os << "  " << std::left << std::setw(36) << name << v << note << "\n";
  };
  os << "tokens " << tokens << ", d_in " << d_in << ", d_sae " << d_sae << "\n";
  line("l0", l0);
  line("l1", l1);
  line("mse (per element)", mse);
  line("explained_variance", explained_variance);
  line("cosine_similarity", cosine_similarity);
  line("l2_norm_in", l2_norm_in);
  line("l2_norm_out", l2_norm_out);
  line("l2_ratio", l2_ratio);
  line("relative_reconstruction_bias", relative_reconstruction_bias);
  line("saelens_mse", saelens_mse, "   (sae_lens: sum over d_in / tokens)");
  line("saelens_explained_variance_legacy", saelens_explained_variance_legacy, "   (per-token ratio, batch mean)");
  os << "  " << std::left << std::setw(36) << "dead features (never fired)" << dead << " of " << d_sae << "\n";
  os << "feature density histogram (log10 density):\n";
  int64_t peak = 1;
  for (auto c : histogram.counts) peak = std::max(peak, c);
  for (size_t i = 0; i < histogram.counts.size(); ++i) {
    os << "  [" << std::right << std::setw(5) << std::fixed << std::setprecision(1) << histogram.bin_lo(i) << ", "
       << std::setw(5) << histogram.bin_lo(i + 1) << ") " << std::setw(8) << histogram.counts[i] << " "
       << std::string(size_t(40 * histogram.counts[i] / peak), '#') << "\n";
  }
  return os.str();
}

}  // namespace topksae
