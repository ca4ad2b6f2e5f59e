// Progress formatting, the JSONL log (append, and the cut a resumed run makes), and the HTML report
// (self-contained: no external URL, and every chart present).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "topksae/atomic_file.h"
#include "topksae/report.h"

namespace topksae {
namespace {
namespace fs = std::filesystem;

TEST(Report, ProgressLine) {
  ProgressSample s{.step = 250, .total_steps = 1000, .tokens = 250 * 4096, .loss = 0.0123, .l0 = 31.9,
                   .explained_variance = 0.912, .dead = 12, .d_sae = 1000};
  std::string bar = format_progress(s, 12345, 65, true);
  EXPECT_NE(bar.find("[######.................."), std::string::npos) << bar;
  EXPECT_NE(bar.find("25.0%"), std::string::npos) << bar;
  EXPECT_NE(bar.find("12.3k tok/s"), std::string::npos) << bar;
  EXPECT_NE(bar.find("L0 31.9"), std::string::npos) << bar;
  EXPECT_NE(bar.find("EV 0.912"), std::string::npos) << bar;
  EXPECT_NE(bar.find("dead 1.2%"), std::string::npos) << bar;
  EXPECT_NE(bar.find("ETA 1m05s"), std::string::npos) << bar;
  EXPECT_EQ(bar.find("data wait"), std::string::npos) << "not measured, not shown: " << bar;
  ProgressSample w = s;
  w.data_wait = 0.423;
  const std::string waiting = format_progress(w, 12345, 65, false);
  EXPECT_NE(waiting.find("| data wait 42% | ETA"), std::string::npos) << waiting;
  EXPECT_EQ(format_progress(s, 1, 1, false).find('['), std::string::npos);
  EXPECT_EQ(format_duration(3725), "1h02m");
  // not a terminal: plain lines, the last step always printed
  std::ostringstream os;
  ProgressPrinter p(os, false, 1000.0);
  p.update(s);
  s.step = 600;
  p.update(s);  // within the interval: nothing
  s.step = 1000;
  p.update(s);
  p.finish();
  std::string out = os.str();
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;
  EXPECT_EQ(out.find('\r'), std::string::npos);
}

TEST(Report, MetricsLogAppendsAndResumedRunsDropLaterSteps) {
  fs::path p = fs::temp_directory_path() / ("topksae_log_" + std::to_string(::getpid()) + ".jsonl");
  fs::remove(p);
  {
    MetricsLog log(p);
    for (int s = 0; s < 5; ++s) log.write(s, {{"losses/overall_loss", 1.0 / (s + 1)}, {"metrics/l0", 3.0}});
  }
  {
    MetricsLog log(p, 3);  // resumed at step 3: steps 3 and 4 were logged after that checkpoint
    log.write(3, {{"losses/overall_loss", 0.5}});
  }
  MetricsHistory h = read_metrics_log(p);
  EXPECT_EQ(h.steps, (std::vector<int64_t>{0, 1, 2, 3}));
  ASSERT_EQ(h.series["losses/overall_loss"].size(), 4u);
  EXPECT_DOUBLE_EQ(h.series["losses/overall_loss"][3].second, 0.5);
  EXPECT_EQ(h.series["metrics/l0"].size(), 3u);
  fs::remove(p);
}

TEST(Report, HtmlIsSelfContainedWithEveryChart) {
  ReportContent c;
  c.summary = {{"tokens", "1000"}};
  for (int s = 0; s < 2000; ++s) {  // more points than a chart draws
    c.history.steps.push_back(s);
    c.history.series["losses/overall_loss"].emplace_back(s, 1.0 / (s + 1));
    c.history.series["metrics/l0"].emplace_back(s, 8.0);
    c.history.series["metrics/explained_variance"].emplace_back(s, 1.0 - 1.0 / (s + 2));
    c.history.series["sparsity/dead_features"].emplace_back(s, s < 100 ? 0 : 3);
  }
  c.density = density_histogram({-10.f, -2.5f, -1.2f, -1.1f}, 20);
  c.recovery = ReportContent::Recovery{"recovered 2/3 <planted>", {0.99f, 0.95f, 0.3f}, {4, 1, 7}, {0.1, 0.01, 0.001}};
  std::string html = html_report(c);
  EXPECT_EQ(html.find("http://", html.find("<body")), html.find("http://www.w3.org/2000/svg", html.find("<body")))
      << "only the SVG namespace may name a URL";
  EXPECT_EQ(html.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  for (const char* t : {"losses/overall_loss", "metrics/l0", "metrics/explained_variance", "sparsity/dead_features",
                        "feature density histogram", "Recovery of the planted features", "&lt;planted&gt;"})
    EXPECT_NE(html.find(t), std::string::npos) << t;
  EXPECT_EQ(std::count(html.begin(), html.end(), '\n') > 5, true);
  size_t svgs = 0;
  for (size_t i = html.find("<svg"); i != std::string::npos; i = html.find("<svg", i + 1)) ++svgs;
  EXPECT_EQ(svgs, 5u);
}

}  // namespace
}  // namespace topksae
