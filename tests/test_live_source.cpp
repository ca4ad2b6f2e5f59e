// The live stream behind topksae.Trainer (include/topksae/live_source.h): rows pushed by one
// thread reach the reader in order; the mixing buffer over it hands out exactly what ShuffleBuffer
// over the same rows from a file does; a full queue holds the producer back; abort wakes a
// waiting reader; a finished reader makes push() return false.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>

#include "test_util.h"
#include "topksae/file_source.h"
#include "topksae/live_source.h"
#include "topksae/npy.h"
#include "topksae/shuffle_buffer.h"

namespace topksae {
namespace {

// Row r holds r + 0.25 * c in column c: every row and every column distinct, none zero.
std::vector<float> rows_from(int64_t row0, int64_t n, int64_t d) {
  std::vector<float> x(size_t(n * d));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c) x[size_t(r * d + c)] = float(row0 + r) + 0.25f * float(c) + 1.f;
  return x;
}

TEST(LiveStream, InOrderAcrossUnevenPushes) {
  const int64_t d = 3, B = 8, N = 83;
  LiveStream s(d, "none", 0, B, 1, 2 * B);
  const std::vector<float> all = rows_from(0, N, d);
  std::thread producer([&] {
    for (int64_t at = 0; at < N;) {
      const int64_t n = std::min<int64_t>(N - at, 1 + at % 11);  // chunks of 1..11 rows
      ASSERT_TRUE(s.queue().push(all.data() + at * d, n));
      at += n;
    }
    s.queue().finish();
  });
  std::vector<float> got(size_t(N * d), 0.f), batch(size_t(B * d));
  int64_t at = 0, n;
  while ((n = s.next(batch.data(), B)) == B) {
    std::copy(batch.begin(), batch.end(), got.begin() + at * d);
    at += n;
  }
  producer.join();
  EXPECT_EQ(at, N / B * B);
  EXPECT_EQ(n, N % B);  // the end of the stream: what is left, then the Trainer drops it
  EXPECT_ALLCLOSE(got.data(), all.data(), size_t(at * d), 0.0, 0.0);
  EXPECT_NONZERO(got);
  EXPECT_EQ(s.position(), R"({"rows_taken":83,"shuffle":"none","source":"live"})");
}

TEST(LiveStream, MixesExactlyAsShuffleBufferOverAFile) {
  const int64_t d = 4, B = 10, N = 237, buffer_batches = 4;
  test::TempDir t{"topksae_live"};
  const std::vector<float> all = rows_from(0, N, d);
  write_npy(t.path / "x.npy", DType::f32, {N, d}, all.data());
  ShuffleBuffer ref(std::make_unique<FileSource>(FileDataset::open(t.path / "x.npy")), buffer_batches * B, B, 9);
  LiveStream live(d, "buffer", buffer_batches, B, 9, 3 * B);
  std::thread producer([&] {
    for (int64_t at = 0; at < N; at += 7) live.queue().push(all.data() + at * d, std::min<int64_t>(7, N - at));
    live.queue().finish();
  });
  std::vector<float> a(size_t(B * d)), b(size_t(B * d));
  int64_t batches = 0, in_order = 0;
  for (;;) {
    const int64_t na = ref.next(a.data(), B), nb = live.next(b.data(), B);
    ASSERT_EQ(na, nb);
    if (na < B) break;
    EXPECT_ALLCLOSE(b.data(), a.data(), a.size(), 0.0, 0.0);
    in_order += std::lround(b[0]) - 1 == batches * B;
    ++batches;
  }
  producer.join();
  EXPECT_EQ(batches, N / B);
  EXPECT_LT(in_order, batches / 2) << "the buffer did not mix";
}

TEST(LiveSource, FullQueueHoldsTheProducerAndAbortWakesTheReader) {
  const int64_t d = 2;
  LiveSource q(d, 5);
  const std::vector<float> x = rows_from(0, 5, d);
  ASSERT_TRUE(q.push(x.data(), 5));
  std::atomic<int> ticks{0};
  std::atomic<bool> pushed{false};
  std::thread producer([&] {
    q.push(x.data(), 1, [&] { ++ticks; });  // waits: 5 rows queued, capacity 5
    pushed = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(pushed);
  EXPECT_GT(ticks, 0);  // the producer's callback ran while it waited (Ctrl-C checks)
  std::vector<float> out(size_t(3 * d));
  EXPECT_EQ(q.next(out.data(), 3), 3);  // room: the producer goes on
  producer.join();
  EXPECT_TRUE(pushed);
  EXPECT_EQ(out[0], 1.f);
  // A reader waiting for more rows than are queued (3 queued, 10 wanted) is woken by abort().
  std::thread aborter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    q.abort();
  });
  std::vector<float> big(size_t(10 * d));
  EXPECT_THROW(q.next(big.data(), 10), LiveSource::Aborted);
  aborter.join();
  EXPECT_FALSE(q.push(x.data(), 1));  // rows after an abort are dropped
  const int64_t taken_by_next = 0;  // row 0 went out through next(): it is not held for read_ids
  EXPECT_THROW(q.read_ids(&taken_by_next, 1, out.data()), Error);
}

// The mixing buffer's side: next_ids() moves rows into the id store, read_ids() hands each out once.
TEST(LiveSource, IdsAreHeldUntilReadOnce) {
  const int64_t d = 3;
  LiveSource q(d, 16);
  const std::vector<float> x = rows_from(0, 6, d);  // distinct values per row and column
  ASSERT_TRUE(q.push(x.data(), 6));
  std::vector<int64_t> ids(4);
  ASSERT_EQ(q.next_ids(ids.data(), 4), 4);
  EXPECT_EQ(ids, (std::vector<int64_t>{0, 1, 2, 3}));
  const int64_t pick[2] = {3, 1};  // out of order, as a shuffled buffer reads them
  std::vector<float> out(size_t(2 * d), -1.f);
  q.read_ids(pick, 2, out.data());
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + d), std::vector<float>(x.begin() + 3 * d, x.begin() + 4 * d));
  EXPECT_EQ(std::vector<float>(out.begin() + d, out.end()), std::vector<float>(x.begin() + d, x.begin() + 2 * d));
  EXPECT_THROW(q.read_ids(pick, 1, out.data()), Error);  // read once: row 3 is gone
  ASSERT_EQ(q.next_ids(ids.data(), 2), 2);               // freed slots are reused for rows 4, 5
  EXPECT_EQ(ids[0], 4);
  const int64_t rest[4] = {5, 0, 4, 2};
  std::vector<float> all(size_t(4 * d), -1.f);
  q.read_ids(rest, 4, all.data());
  EXPECT_EQ(all[0], x[size_t(5 * d)]);
  EXPECT_EQ(all[size_t(2 * d)], x[size_t(4 * d)]);
  EXPECT_EQ(all[size_t(3 * d + 2)], x[size_t(2 * d + 2)]);
  EXPECT_THROW(q.undo_next_ids(), Error);
}

TEST(LiveSource, ProducerTickExceptionPropagatesAndDoneReaderDropsRows) {
  const int64_t d = 2;
  LiveSource q(d, 1);
  const std::vector<float> x = rows_from(0, 2, d);
  ASSERT_TRUE(q.push(x.data(), 2));
  EXPECT_THROW(q.push(x.data(), 1, [] { throw Error("interrupted"); }), Error);
  q.consumer_done();
  EXPECT_FALSE(q.push(x.data(), 1));
  q.wait_idle();            // returns at once: the reader has stopped
  q.wait_consumer_done();
  LiveSource other(d, 4);
  EXPECT_THROW(other.seek(R"({"source":"shuffle"})"), Error);
  other.seek(R"({"source":"live","rows_taken":12})");
  EXPECT_EQ(other.rows_taken(), 12);
  EXPECT_THROW(LiveSource(0, 1), Error);
  EXPECT_THROW(LiveStream(d, "random", 4, 8, 1, 8), Error);
}

}  // namespace
}  // namespace topksae
