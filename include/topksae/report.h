// Reporting a training run: the progress line (a bar on a terminal, plain periodic lines
// otherwise), the JSONL metrics log under sae_lens's metric names, and the self-contained HTML
// report written at the end (inline SVG, no network resources).
#pragma once
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "topksae/metrics.h"

namespace topksae {

// What the progress line shows for one step (filled from the trainer's StepMetrics).
struct ProgressSample {
  int64_t step = 0;         // steps completed, this one included
  int64_t total_steps = 0;
  int64_t tokens = 0;       // tokens trained on so far
  double loss = 0, l0 = 0, explained_variance = 0;
  int64_t dead = 0, d_sae = 1;
  // Share of the time the device waited for data (Trainer::input_wait); < 0: not shown.
  double data_wait = -1;
};

// "[#####.....]  42.0% step 420/1000 | 12.3k tok/s | loss 0.0123 | L0 31.9 | EV 0.912 | dead 1.2% |
// data wait 3% | ETA 1m05s"
// (the bar only when `bar`).
std::string format_progress(const ProgressSample& s, double tokens_per_s, double eta_s, bool bar);
std::string format_duration(double seconds);  // "1h02m", "3m05s", "12s"

class ProgressPrinter {
 public:
  // tty: redraw one line with '\r' (at most ~10 times a second); otherwise print a plain line every
  // `plain_every_s` seconds and at the last step.
  ProgressPrinter(std::ostream& os, bool tty, double plain_every_s = 10.0);
  // Starts the clock for tokens/s and ETA (tokens already trained: a resumed run). Optional:
  // without it the first update() starts the clock.
  void begin(int64_t tokens_done);
  void update(const ProgressSample& s);
  // Ends the bar's line (tty). Call before printing anything else.
  void finish();

 private:
  std::ostream& os_;
  bool tty_;
  double every_s_;
  using clock = std::chrono::steady_clock;
  clock::time_point start_, last_print_;
  int64_t start_tokens_ = -1;
  bool drawn_ = false;
};

// One JSON object per line: {"step": s, "<sae_lens name>": value, ...}.
class MetricsLog {
 public:
  // Opens `path` for appending. keep_below_step >= 0 (a resumed run): lines of steps >= it (logged
  // after the checkpoint the run resumes from) are dropped first, so no step appears twice.
  MetricsLog(const std::filesystem::path& path, int64_t keep_below_step = -1);
  void write(int64_t step, const std::vector<std::pair<std::string, double>>& values);
  void flush() { out_.flush(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::ofstream out_;
};

// A series per metric name, read back from a JSONL metrics log (non-numeric values skipped).
struct MetricsHistory {
  std::vector<int64_t> steps;
  std::map<std::string, std::vector<std::pair<int64_t, double>>> series;  // name -> (step, value)
};
MetricsHistory read_metrics_log(const std::filesystem::path& path);

// What the HTML report shows besides the curves.
struct ReportContent {
  std::string title = "topksae training report";
  std::vector<std::pair<std::string, std::string>> summary;  // key, value rows
  MetricsHistory history;
  std::optional<DensityHistogram> density;  // feature-density histogram at the end of training
  // Synthetic runs: the recovery of the planted dictionary.
  struct Recovery {
    std::string summary;
    std::vector<float> best_cos;       // [n_features]
    std::vector<int32_t> best_latent;  // [n_features]
    std::vector<double> frequency;     // [n_features] planted firing probability
  };
  std::optional<Recovery> recovery;
};
// A line chart as inline SVG; log_y plots log10 of positive values.
std::string svg_line_chart(const std::string& title, const std::vector<std::pair<int64_t, double>>& points, bool log_y);
std::string svg_histogram(const std::string& title, const DensityHistogram& h);
std::string html_report(const ReportContent& c);
void write_html_report(const std::filesystem::path& path, const ReportContent& c);

}  // namespace topksae
