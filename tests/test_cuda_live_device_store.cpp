// The mixing buffer on the device (issue 21; src/data/device_rows.h): the gather kernel against its
// CPU twin, and a LiveStream whose rows live on the GPU serving exactly the rows, in exactly the
// order, of the host-store LiveStream (same ShuffleBuffer draws), through both next_device() and
// next(). Sizes are not multiples of the kernel's 256-thread blocks or of a warp.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <random>

#include "cuda_test_util.h"
#include "topksae/live_source.h"
#include "topksae/ops_cpu.h"
#include "topksae/ops_cuda.h"

namespace topksae::test {
namespace {

TEST(CudaGatherRows, MatchesTheCpuTwin) {
  SKIP_WITHOUT_GPU();
  const int64_t capacity = 301, d = 45, n = 37;
  const std::vector<float> rows = uniform(size_t(capacity * d), 11, 0.5f, 2.f);  // no zero anywhere
  std::vector<int64_t> slots(static_cast<size_t>(n));
  std::mt19937_64 rng(5);
  for (auto& s : slots) s = int64_t(rng() % uint64_t(capacity));
  slots[3] = capacity - 1;  // the last row, and a repeat
  slots[4] = capacity - 1;
  std::vector<float> want(size_t(n * d));
  cpu::gather_rows(rows.data(), d, slots.data(), n, want.data());
  DevVec<float> drows(rows), dout(size_t(n * d));
  DevVec<int64_t> dslots(slots);
  cuda::gather_rows(nullptr, drows.p(), d, dslots.p(), n, dout.p());
  const std::vector<float> got = dout.get();
  EXPECT_EQ(got, want);
  for (int64_t i = 0; i < n; ++i)  // the twin itself picked the right rows
    ASSERT_EQ(want[size_t(i * d + 7)], rows[size_t(slots[size_t(i)] * d + 7)]) << "row " << i;
}

// Row r holds r + 0.25 * c + 1 in column c: every row distinct, none zero.
std::vector<float> ramp_rows(int64_t n, int64_t d) {
  std::vector<float> x(size_t(n * d));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c) x[size_t(r * d + c)] = float(r) + 0.25f * float(c) + 1.f;
  return x;
}

TEST(CudaLiveDeviceStore, ServesTheHostBuffersRowsInOrder) {
  SKIP_WITHOUT_GPU();
  const int64_t d = 13, B = 7, N = 263;  // 37 whole batches and a short one: the end is served in order
  const std::vector<float> all = ramp_rows(N, d);
  LiveStream host(d, "buffer", 3, B, 9, N), dev(d, "buffer", 3, B, 9, N, Device::cuda);
  ASSERT_EQ(dev.queue().store(), Device::cuda);
  for (LiveStream* s : {&host, &dev}) {
    for (int64_t at = 0; at < N; at += 40) ASSERT_TRUE(s->queue().push(all.data() + at * d, std::min<int64_t>(40, N - at)));
    s->queue().finish();
  }
  DevVec<float> batch(size_t(B * d));
  std::vector<float> want(size_t(B * d)), got(size_t(B * d));
  int64_t batches = 0, moved = 0;
  for (;; ++batches) {
    const int64_t w = host.next(want.data(), B);
    // Alternate the device path (gather into a device batch) and the host path (through the GPU).
    int64_t g;
    if (batches % 3 != 2) {
      g = dev.next_device(batch.p(), B, nullptr);
      got = batch.get();
    } else {
      g = dev.next(got.data(), B);
    }
    ASSERT_EQ(g, w) << "batch " << batches;
    if (w < B) break;
    ASSERT_EQ(got, want) << "batch " << batches;
    for (int64_t r = 0; r < B; ++r) moved += want[size_t(r * d)] != float(batches * B + r) + 1.f;
  }
  EXPECT_EQ(batches, N / B);
  EXPECT_GT(moved, N / 2);  // the buffer did mix (not the rows in push order)
}

TEST(CudaLiveDeviceStore, ARowIsServedOnce) {
  SKIP_WITHOUT_GPU();
  const int64_t d = 5;
  LiveSource s(d, 64, Device::cuda);
  const std::vector<float> rows = ramp_rows(10, d);
  ASSERT_TRUE(s.push(rows.data(), 10));
  std::vector<int64_t> ids(4);
  ASSERT_EQ(s.next_ids(ids.data(), 4), 4);
  std::vector<float> out(size_t(4 * d));
  s.read_ids(ids.data(), 4, out.data());
  EXPECT_EQ(out, std::vector<float>(rows.begin(), rows.begin() + 4 * d));
  EXPECT_THROW(s.read_ids(ids.data(), 1, out.data()), Error);
}

}  // namespace
}  // namespace topksae::test
#endif  // TOPKSAE_HAS_CUDA
