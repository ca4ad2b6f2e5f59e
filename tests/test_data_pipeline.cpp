// The fast data path (issue 18): the mixing buffer that shuffles row ids must hand out exactly the
// rows, in exactly the order, of sae_lens's buffer of rows (a transcription of which is the
// reference here); PrefetchSource's gather threads must not change the stream, whatever their
// number and however the requests are cut; a bad row fails its batch and leaves the position
// before it; and the trainer reports how long the device waited for data.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include "test_util.h"
#include "topksae/error.h"
#include "topksae/file_source.h"
#include "topksae/npy.h"
#include "topksae/prefetch.h"
#include "topksae/shuffle_buffer.h"
#include "topksae/synthetic.h"
#include "topksae/train.h"

namespace topksae {
namespace {
namespace fs = std::filesystem;

// x[r, i] = r + i / 100: a row's first value is its id.
void write_coded(const fs::path& p, int64_t rows, int64_t d, const std::set<int64_t>& bad = {}) {
  std::vector<float> v(size_t(rows * d));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < d; ++i) v[size_t(r * d + i)] = float(r) + float(i) / 100.f;
  for (int64_t r : bad) v[size_t(r * d + d - 1)] = NAN;
  write_npy(p, DType::f32, {rows, d}, v.data());
}

std::vector<int64_t> codes(const std::vector<float>& rows, int64_t n, int64_t d) {
  std::vector<int64_t> c;
  for (int64_t r = 0; r < n; ++r) c.push_back(std::lround(rows[size_t(r * d)]));
  return c;
}

// sae_lens's mixing buffer over whole rows, as this project implemented it before it shuffled ids
// (the same seeding and Fisher-Yates draws): the served row ids, all of them, in order.
std::vector<int64_t> reference_order(int64_t N, int64_t buffer, int64_t batch, uint64_t seed, bool loop,
                                     int64_t max_rows, const std::set<int64_t>& bad = {}) {
  auto below = [](std::mt19937_64& rng, uint64_t n) { return uint64_t((unsigned __int128)rng() * n >> 64); };
  std::vector<int64_t> stored, served;
  int64_t cursor = 0, refills = 0;
  bool done = false;
  auto pull = [&](int64_t want) {  // FileSource::next_indexed with skip_nonfinite
    int64_t got = 0;
    while (got < want) {
      if (cursor == N) {
        if (!loop) break;
        cursor = 0;
      }
      if (!bad.count(cursor)) {
        stored.push_back(cursor);
        ++got;
      }
      ++cursor;
    }
    return got;
  };
  while (int64_t(served.size()) < max_rows) {
    while (!done && int64_t(stored.size()) < buffer)
      if (pull(batch) < batch) done = true;
    const int64_t n = int64_t(stored.size());
    if (n < buffer) {
      // Only once the source ran dry: the rest in order, in whole batches; a partial one is dropped.
      served.insert(served.end(), stored.begin(), stored.begin() + n / batch * batch);
      break;
    }
    {
      std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + uint64_t(refills));
      // The rows themselves were swapped; a row and its id move together.
      for (int64_t i = n - 1; i > 0; --i) {
        int64_t j = int64_t(below(rng, uint64_t(i + 1)));
        if (j != i) std::swap(stored[size_t(i)], stored[size_t(j)]);
      }
      ++refills;
    }
    const int64_t serve = std::max<int64_t>(1, n / (2 * batch)) * batch;
    served.insert(served.end(), stored.begin(), stored.begin() + serve);
    stored.erase(stored.begin(), stored.begin() + serve);
  }
  if (int64_t(served.size()) > max_rows) served.resize(size_t(max_rows));
  return served;
}

TEST(DataPipeline, IdShufflingServesTheRowBufferOrder) {
  test::TempDir t{"topksae_pipe"};
  struct Case {
    int64_t N, buffer, batch;
    uint64_t seed;
    bool loop;
    std::set<int64_t> bad;
  };
  const Case cases[] = {{203, 40, 10, 7, false, {}},       {150, 30, 8, 3, false, {}},
                        {97, 35, 7, 11, true, {}},         {300, 64, 16, 42, false, {5, 77, 78, 299}},
                        {61, 61, 61, 1, true, {}},         {500, 100, 9, 5, true, {0, 250}}};
  for (const Case& c : cases) {
    SCOPED_TRACE(concat("N ", c.N, " buffer ", c.buffer, " batch ", c.batch, " seed ", c.seed));
    const fs::path p = t.path / concat("x", c.N, "_", c.bad.size(), ".npy");
    write_coded(p, c.N, 3, c.bad);
    const int64_t want_rows = c.loop ? 4 * c.N : c.N;
    const std::vector<int64_t> want = reference_order(c.N, c.buffer, c.batch, c.seed, c.loop, want_rows, c.bad);
    ASSERT_GT(want.size(), size_t(c.batch));
    ShuffleBuffer sb(std::make_unique<FileSource>(FileDataset::open(p),
                                                  FileSourceOptions{.skip_nonfinite = !c.bad.empty(), .loop = c.loop}),
                     c.buffer, c.batch, c.seed);
    std::vector<float> out(size_t(c.batch * 3));
    std::vector<int64_t> got;
    while (got.size() < want.size()) {
      const int64_t n = sb.next(out.data(), c.batch);
      const auto cs = codes(out, n, 3);
      got.insert(got.end(), cs.begin(), cs.end());
      if (n < c.batch) break;
    }
    got.resize(std::min(got.size(), want.size()));
    EXPECT_EQ(got, want);
  }
}

// The same stream through PrefetchSource, for several gather-thread counts and request sizes
// that cut batches and refills anywhere; positions taken mid-way resume it exactly.
TEST(DataPipeline, GatherThreadsKeepTheStreamAndItsPositions) {
  test::TempDir t{"topksae_pipe"};
  const int64_t N = 1000, d = 37, batch = 50, buffer = 200;
  write_coded(t.path / "x.npy", N, d);
  auto shuffled = [&] {
    return std::make_unique<ShuffleBuffer>(std::make_unique<FileSource>(FileDataset::open(t.path / "x.npy")), buffer,
                                           batch, 9);
  };
  std::vector<float> ref(size_t(N * d));
  const int64_t total = shuffled()->next(ref.data(), N);
  ASSERT_EQ(total, N / batch * batch);
  const std::vector<int64_t> want = codes(ref, total, d);
  for (int threads : {1, 2, 3, 5}) {
    SCOPED_TRACE(concat(threads, " gather threads"));
    PrefetchSource p(shuffled(), batch, 4, threads);
    std::vector<float> got(size_t(N * d));
    int64_t at = 0, cut = 0;
    const int64_t cuts[] = {7, 50, 23, 120, 1, 64};
    std::string pos_at_300;
    while (at < total) {
      if (at >= 300 && pos_at_300.empty()) {
        pos_at_300 = p.position();
        PrefetchSource q(shuffled(), batch, 4, threads);
        q.seek(pos_at_300);
        std::vector<float> rest(size_t((total - at) * d));
        EXPECT_EQ(q.next(rest.data(), total - at), total - at);
        EXPECT_EQ(codes(rest, total - at, d), std::vector<int64_t>(want.begin() + at, want.end()));
      }
      const int64_t n = p.next(got.data() + at * d, std::min(cuts[cut++ % 6], total - at));
      ASSERT_GT(n, 0);
      at += n;
    }
    EXPECT_EQ(p.next(got.data(), 10), 0);
    EXPECT_EQ(codes(got, total, d), want);
    // every value of every row, not only the first
    EXPECT_ALLCLOSE(got.data(), ref.data(), size_t(total * d), 0.0, 0.0);
  }
}

TEST(DataPipeline, ABadRowFailsItsBatchAndLeavesThePositionBeforeIt) {
  test::TempDir t{"topksae_pipe"};
  const int64_t N = 400, d = 5, batch = 20, buffer = 80;
  write_coded(t.path / "x.npy", N, d, {250});
  PrefetchSource p(std::make_unique<ShuffleBuffer>(
                       std::make_unique<FileSource>(FileDataset::open(t.path / "x.npy")), buffer, batch, 4),
                   batch, 4, 3);
  std::vector<float> out(size_t(batch * d));
  std::string before;
  int64_t good = 0;
  try {
    for (;;) {
      before = p.position();
      ASSERT_EQ(p.next(out.data(), batch), batch) << "the data ran out before the bad row was served";
      good += batch;
    }
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x.npy row 250"), std::string::npos) << e.what();
  }
  EXPECT_GT(good, 0);
  EXPECT_EQ(p.position(), before) << "the failed batch moved the position";
  EXPECT_THROW(p.next(out.data(), batch), Error);  // the same batch again, the same error
  // Skipping: row 250 never comes, the rest all do.
  PrefetchSource s(std::make_unique<ShuffleBuffer>(
                       std::make_unique<FileSource>(FileDataset::open(t.path / "x.npy"),
                                                    FileSourceOptions{.skip_nonfinite = true}),
                       buffer, batch, 4),
                   batch, 4, 3);
  std::set<int64_t> seen;
  int64_t n;
  while ((n = s.next(out.data(), batch)) > 0)
    for (int64_t c : codes(out, n, d)) EXPECT_TRUE(seen.insert(c).second) << "row " << c << " twice";
  EXPECT_EQ(seen.count(250), 0u);
  EXPECT_EQ(seen.size(), size_t((N - 1) / batch * batch));
}

// A source that takes its time: the trainer must report that the device waited for it.
class SlowSource : public ActivationSource {
 public:
  explicit SlowSource(SyntheticConfig c, int delay_ms = 150) : inner_(c), delay_ms_(delay_ms) {}
  int64_t d_in() const override { return inner_.d_in(); }
  int64_t next(float* out, int64_t rows) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms_));
    return inner_.next(out, rows);
  }
  std::string position() const override { return inner_.position(); }
  void seek(const std::string& p) override { inner_.seek(p); }
  std::string describe() const override { return "slow " + inner_.describe(); }

 private:
  SyntheticSource inner_;
  int delay_ms_;
};

TEST(DataPipeline, TrainerReportsTheShareOfTimeSpentWaitingForData) {
  SyntheticConfig sc;
  sc.d_in = 16;
  sc.n_features = 32;
  TrainConfig c;
  c.d_in = 16;
  c.d_sae = 32;
  c.k = 2;
  c.batch_size = 8;
  c.training_tokens = 8 * 6;
  SlowSource slow(sc);
  // What the CLI's progress line and metrics log read while the run goes on.
  Trainer* self = nullptr;
  std::vector<Trainer::InputWait> during;
  TrainerOptions o;
  o.on_step = [&](const StepMetrics&) { during.push_back(self->input_wait()); };
  Trainer t(c, slow, o);
  self = &t;
  EXPECT_EQ(t.input_wait().total_s, 0.0);
  EXPECT_EQ(t.run(), 6);
  ASSERT_EQ(during.size(), 6u);
  EXPECT_GT(during[2].total_s, 0.0);
  EXPECT_GT(during[2].fraction(), 0.5) << "mid-run: " << during[2].waited_s << " s of " << during[2].total_s;
  EXPECT_LE(during[2].total_s, during[5].total_s);
  const Trainer::InputWait w = t.input_wait();
  EXPECT_GE(w.waited_s, 6 * 0.149);  // six reads of at least 150 ms
  EXPECT_LE(w.waited_s, w.total_s);
  EXPECT_GT(w.fraction(), 0.5) << w.waited_s << " s of " << w.total_s;
  EXPECT_LE(w.fraction(), 1.0);
}

// The same on the GPU, where the waiting is read off the GPU's timeline (the gaps between steps,
// kernels/device_wait_clock.h) rather than the host's reading time.
TEST(CudaTrainerInputWait, ASlowSourceShowsAsGapsBetweenSteps) {
  SKIP_WITHOUT_GPU();
  SyntheticConfig sc;
  sc.d_in = 16;
  sc.n_features = 32;
  TrainConfig c;
  c.d_in = 16;
  c.d_sae = 32;
  c.k = 2;
  c.batch_size = 8;
  c.training_tokens = 8 * 6;
  // 300 ms reads: under the CUDA emulation the step's setup and the steps are host time, which a
  // loaded machine stretches; the reads must still dominate for the check below to mean "input-bound".
  SlowSource slow(sc, 300);
  TrainerOptions o;
  o.device = Device::cuda;
  Trainer t(c, slow, o);
  EXPECT_EQ(t.run(), 6);
  const Trainer::InputWait w = t.input_wait();
  // Five gaps (none before the first step) of at least the 300 ms read each.
  EXPECT_GE(w.waited_s, 5 * 0.299) << w.waited_s << " s of " << w.total_s;
  EXPECT_LE(w.waited_s, w.total_s);
  EXPECT_GT(w.fraction(), 0.5) << w.waited_s << " s of " << w.total_s;
}

}  // namespace
}  // namespace topksae
