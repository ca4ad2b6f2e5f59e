// The progress line and the JSONL metrics log (include/topksae/report.h).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/report.h"

namespace topksae {

std::string format_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  int64_t t = int64_t(std::llround(s));
  char buf[32];
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t % 3600 / 60));
  else if (t >= 60) std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else std::snprintf(buf, sizeof buf, "%llds", (long long)t);
  return buf;
}

namespace {
std::string si(double v) {
  char buf[32];
  if (v >= 1e9) std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}
}  // namespace

std::string format_progress(const ProgressSample& s, double tokens_per_s, double eta_s, bool bar) {
  std::ostringstream os;
  double frac = s.total_steps > 0 ? std::clamp(double(s.step) / double(s.total_steps), 0.0, 1.0) : 0.0;
  if (bar) {
    const int width = 24;
    int filled = int(frac * width);
    os << "[" << std::string(size_t(filled), '#') << std::string(size_t(width - filled), '.') << "] ";
  }
  char buf[256], wait[40] = "";
  if (s.data_wait >= 0) std::snprintf(wait, sizeof wait, " | data wait %.0f%%", 100 * s.data_wait);
  std::snprintf(buf, sizeof buf,
                "%5.1f%% step %lld/%lld | %s tok/s | loss %.4g | L0 %.1f | EV %.3f | dead %.1f%%%s | ETA %s",
                100 * frac, (long long)s.step, (long long)s.total_steps, si(tokens_per_s).c_str(), s.loss, s.l0,
                s.explained_variance, 100.0 * double(s.dead) / double(std::max<int64_t>(s.d_sae, 1)), wait,
                format_duration(eta_s).c_str());
  os << buf;
  return os.str();
}

ProgressPrinter::ProgressPrinter(std::ostream& os, bool tty, double plain_every_s)
    : os_(os), tty_(tty), every_s_(plain_every_s), start_(clock::now()), last_print_(start_) {}

void ProgressPrinter::begin(int64_t tokens_done) {
  start_tokens_ = tokens_done;
  start_ = clock::now();
}

void ProgressPrinter::update(const ProgressSample& s) {
  auto now = clock::now();
  if (start_tokens_ < 0) {
    // Measure speed from the first step seen (a resumed run starts mid-way).
    start_tokens_ = s.tokens;
    start_ = now;
  }
  double since = std::chrono::duration<double>(now - last_print_).count();
  bool last = s.step >= s.total_steps;
  if (drawn_ && !last && since < (tty_ ? 0.1 : every_s_)) return;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double tps = elapsed > 0 ? double(s.tokens - start_tokens_) / elapsed : 0;
  double tokens_left = s.total_steps > s.step && s.step > 0 ? double(s.total_steps - s.step) * double(s.tokens) / double(s.step) : 0;
  double eta = tps > 0 ? tokens_left / tps : NAN;
  if (tty_) os_ << "\r" << format_progress(s, tps, eta, true) << "\x1b[K" << std::flush;
  else os_ << format_progress(s, tps, eta, false) << "\n" << std::flush;
  last_print_ = now;
  drawn_ = true;
}

void ProgressPrinter::finish() {
  if (tty_ && drawn_) os_ << "\n" << std::flush;
  drawn_ = false;
}

// ---- JSONL log ----------------------------------------------------------------------------------

MetricsLog::MetricsLog(const std::filesystem::path& path, int64_t keep_below_step) : path_(path) {
  if (keep_below_step >= 0 && std::filesystem::exists(path)) {
    std::string text = read_small_file(path, size_t(1) << 30), kept, line;
    std::istringstream is(text);
    while (std::getline(is, line)) {
      if (line.empty()) continue;
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", int64_t(-1)) >= keep_below_step) continue;
      } catch (const std::exception&) {
        continue;  // a line cut short by the interruption
      }
      kept += line + "\n";
    }
    write_file_atomic(path, kept);
  }
  out_.open(path, std::ios::app);
  TOPKSAE_CHECK(out_.good(), path.string(), ": cannot open the metrics log for writing");
}

void MetricsLog::write(int64_t step, const std::vector<std::pair<std::string, double>>& values) {
  nlohmann::json j;
  j["step"] = step;
  for (auto& [k, v] : values) j[k] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
  out_ << j.dump() << "\n";
  TOPKSAE_CHECK(out_.good(), path_.string(), ": cannot write the metrics log (disk full?)");
}

MetricsHistory read_metrics_log(const std::filesystem::path& path) {
  MetricsHistory h;
  std::string text = read_small_file(path, size_t(1) << 30), line;
  std::istringstream is(text);
  while (std::getline(is, line)) {
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      continue;
    }
    if (!j.is_object() || !j.contains("step")) continue;
    int64_t step = j["step"].get<int64_t>();
    h.steps.push_back(step);
    for (auto& [k, v] : j.items())
      if (k != "step" && v.is_number()) h.series[k].emplace_back(step, v.get<double>());
  }
  return h;
}

}  // namespace topksae
