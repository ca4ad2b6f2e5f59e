// The self-contained HTML report (include/topksae/report.h): inline SVG charts and tables, no
// scripts, fonts or other network resources, so it opens offline in any browser.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "topksae/atomic_file.h"
#include "topksae/report.h"

namespace topksae {

namespace {
std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string num(double v, int prec = 4) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*g", prec, v);
  return buf;
}

constexpr int W = 640, H = 260, ML = 64, MR = 16, MT = 28, MB = 36;
}  // namespace

std::string svg_line_chart(const std::string& title, const std::vector<std::pair<int64_t, double>>& points, bool log_y) {
  // Keep finite (and, on a log axis, positive) points; average into at most 800 buckets.
  std::vector<std::pair<double, double>> pts;
  for (auto& [x, y] : points)
    if (std::isfinite(y) && (!log_y || y > 0)) pts.emplace_back(double(x), log_y ? std::log10(y) : y);
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
     << " " << H << "\" role=\"img\"><title>" << esc(title) << "</title>"
     << "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
     << "<text x=\"" << ML << "\" y=\"18\" font-size=\"14\" font-family=\"sans-serif\">" << esc(title)
     << (log_y ? " (log scale)" : "") << "</text>";
  if (pts.empty()) {
    os << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" text-anchor=\"middle\" font-family=\"sans-serif\">no data</text></svg>";
    return os.str();
  }
  const size_t max_pts = 800;
  if (pts.size() > max_pts) {
    std::vector<std::pair<double, double>> b;
    size_t per = (pts.size() + max_pts - 1) / max_pts;
    for (size_t i = 0; i < pts.size(); i += per) {
      double sx = 0, sy = 0;
      size_t n = std::min(per, pts.size() - i);
      for (size_t j = i; j < i + n; ++j) sx += pts[j].first, sy += pts[j].second;
      b.emplace_back(sx / double(n), sy / double(n));
    }
    pts.swap(b);
  }
  double x0 = pts.front().first, x1 = pts.back().first, y0 = pts[0].second, y1 = pts[0].second;
  for (auto& p : pts) y0 = std::min(y0, p.second), y1 = std::max(y1, p.second);
  if (x1 <= x0) x1 = x0 + 1;
  if (y1 <= y0) y0 -= 0.5, y1 += 0.5;
  double pad = 0.05 * (y1 - y0);
  const bool non_negative = !log_y && y0 >= 0;
  y0 -= pad;
  y1 += pad;
  if (non_negative && y0 < 0) y0 = 0;  // counts and losses: no negative axis
  auto X = [&](double x) { return ML + (x - x0) / (x1 - x0) * (W - ML - MR); };
  auto Y = [&](double y) { return MT + (y1 - y) / (y1 - y0) * (H - MT - MB); };
  os << "<g font-family=\"sans-serif\" font-size=\"11\" fill=\"#444\">";
  for (int i = 0; i <= 4; ++i) {
    double y = y0 + (y1 - y0) * i / 4;
    os << "<line x1=\"" << ML << "\" x2=\"" << W - MR << "\" y1=\"" << Y(y) << "\" y2=\"" << Y(y)
       << "\" stroke=\"#e4e4e4\"/><text x=\"" << ML - 6 << "\" y=\"" << Y(y) + 4 << "\" text-anchor=\"end\">"
       << num(log_y ? std::pow(10.0, y) : y, 3) << "</text>";
  }
  for (int i = 0; i <= 4; ++i) {
    double x = x0 + (x1 - x0) * i / 4;
    os << "<text x=\"" << X(x) << "\" y=\"" << H - MB + 16 << "\" text-anchor=\"middle\">" << num(std::round(x), 6)
       << "</text>";
  }
  os << "<text x=\"" << (ML + W - MR) / 2 << "\" y=\"" << H - 4 << "\" text-anchor=\"middle\">step</text></g>";
  os << "<polyline fill=\"none\" stroke=\"#1f6fb4\" stroke-width=\"1.5\" points=\"";
  for (auto& p : pts) os << num(X(p.first), 6) << "," << num(Y(p.second), 6) << " ";
  os << "\"/><rect x=\"" << ML << "\" y=\"" << MT << "\" width=\"" << W - ML - MR << "\" height=\"" << H - MT - MB
     << "\" fill=\"none\" stroke=\"#888\"/></svg>";
  return os.str();
}

std::string svg_histogram(const std::string& title, const DensityHistogram& h) {
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W
     << " " << H << "\" role=\"img\"><title>" << esc(title) << "</title><rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>"
     << "<text x=\"" << ML << "\" y=\"18\" font-size=\"14\" font-family=\"sans-serif\">" << esc(title) << "</text>";
  int64_t peak = 1;
  for (auto c : h.counts) peak = std::max(peak, c);
  const double pw = W - ML - MR, ph = H - MT - MB, bw = pw / double(std::max<size_t>(h.counts.size(), 1));
  os << "<g font-family=\"sans-serif\" font-size=\"11\" fill=\"#444\">";
  for (size_t i = 0; i < h.counts.size(); ++i) {
    double bh = ph * double(h.counts[i]) / double(peak);
    os << "<rect x=\"" << num(ML + bw * double(i) + 1, 6) << "\" y=\"" << num(MT + ph - bh, 6) << "\" width=\""
       << num(std::max(bw - 2, 1.0), 6) << "\" height=\"" << num(bh, 6) << "\" fill=\"#1f6fb4\"><title>["
       << num(h.bin_lo(i), 3) << ", " << num(h.bin_lo(i + 1), 3) << "): " << h.counts[i] << " latents</title></rect>";
    if (h.counts[i] > 0)
      os << "<text x=\"" << num(ML + bw * (double(i) + 0.5), 6) << "\" y=\"" << num(MT + ph - bh - 3, 6)
         << "\" text-anchor=\"middle\">" << h.counts[i] << "</text>";
  }
  for (size_t i = 0; i <= h.counts.size(); i += std::max<size_t>(1, h.counts.size() / 10))
    os << "<text x=\"" << num(ML + bw * double(i), 6) << "\" y=\"" << H - MB + 16 << "\" text-anchor=\"middle\">"
       << num(h.bin_lo(i), 3) << "</text>";
  os << "<text x=\"" << (ML + W - MR) / 2 << "\" y=\"" << H - 4
     << "\" text-anchor=\"middle\">log10 feature density (fraction of tokens a latent fires on)</text></g>"
     << "<rect x=\"" << ML << "\" y=\"" << MT << "\" width=\"" << pw << "\" height=\"" << ph
     << "\" fill=\"none\" stroke=\"#888\"/></svg>";
  return os.str();
}

std::string html_report(const ReportContent& c) {
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << esc(c.title)
     << "</title>\n<style>body{font-family:sans-serif;max-width:1360px;margin:24px auto;color:#222}"
        "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        ".charts{display:flex;flex-wrap:wrap;gap:12px}.charts svg{border:1px solid #ddd}"
        "details{margin:8px 0}</style></head><body>\n<h1>"
     << esc(c.title) << "</h1>\n<table>";
  for (auto& [k, v] : c.summary) os << "<tr><th>" << esc(k) << "</th><td>" << esc(v) << "</td></tr>";
  os << "</table>\n<h2>Training curves</h2>\n<div class=\"charts\">";
  struct Chart {
    const char* key;
    const char* title;
    bool log;
  };
  const Chart charts[] = {{"losses/overall_loss", "loss (losses/overall_loss)", true},
                          {"losses/mse_loss", "MSE loss (losses/mse_loss)", true},
                          {"metrics/l0", "L0 (metrics/l0)", false},
                          {"metrics/explained_variance", "explained variance (metrics/explained_variance)", false},
                          {"sparsity/dead_features", "dead latents (sparsity/dead_features)", false},
                          {"losses/auxiliary_reconstruction_loss", "AuxK loss (losses/auxiliary_reconstruction_loss)", false},
                          {"details/current_learning_rate", "learning rate (details/current_learning_rate)", false},
                          {"perf/data_wait_fraction", "share of the time the device waited for data (perf/data_wait_fraction)", false}};
  for (auto& ch : charts) {
    auto it = c.history.series.find(ch.key);
    if (it == c.history.series.end()) continue;
    os << svg_line_chart(ch.title, it->second, ch.log) << "\n";
  }
  os << "</div>\n";
  if (c.density) {
    os << "<h2>Feature density</h2>\n<p>" << c.density->never_fired
       << " latents never fired in the last sampling window.</p>\n"
       << svg_histogram("feature density histogram", *c.density) << "\n";
  }
  if (c.recovery) {
    const auto& r = *c.recovery;
    os << "<h2>Recovery of the planted features</h2>\n<p>" << esc(r.summary) << "</p>\n";
    // Best cosine by bands, then the per-feature table (folded away: it can be long).
    const double edges[] = {0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01};
    os << "<table><tr><th>best cosine</th><th>planted features</th></tr>";
    for (size_t b = 0; b + 1 < std::size(edges); ++b) {
      int64_t n = 0;
      for (float v : r.best_cos) n += v >= edges[b] && v < edges[b + 1];
      if (b == 0)
        for (float v : r.best_cos) n += v < 0;
      os << "<tr><td>[" << num(edges[b]) << ", " << (b + 2 == std::size(edges) ? std::string("1]") : num(edges[b + 1]) + ")")
         << "</td><td>" << n << "</td></tr>";
    }
    os << "</table>\n<details><summary>every planted feature</summary><table><tr><th>feature</th><th>firing "
          "probability</th><th>best cosine</th><th>best latent</th></tr>";
    for (size_t i = 0; i < r.best_cos.size(); ++i)
      os << "<tr><td>" << i << "</td><td>" << (i < r.frequency.size() ? num(r.frequency[i], 3) : "") << "</td><td>"
         << num(r.best_cos[i], 4) << "</td><td>" << (i < r.best_latent.size() ? std::to_string(r.best_latent[i]) : "")
         << "</td></tr>";
    os << "</table></details>\n";
  }
  os << "<p style=\"color:#888\">Written by topksae. Metric names are sae_lens's.</p></body></html>\n";
  return os.str();
}

void write_html_report(const std::filesystem::path& path, const ReportContent& c) {
  write_file_atomic(path, html_report(c));
}

}  // namespace topksae
