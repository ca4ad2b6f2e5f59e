// The mixing buffer on the device (issue 21; src/data/device_rows.h): the gather kernel against its
// CPU twin, and a LiveStream whose rows live on the GPU serving exactly the rows, in exactly the
// order, of the host-store LiveStream (same ShuffleBuffer draws), through both next_device() and
// next(); rows pushed from device memory (push_device) served as those pushed from the host, the
// producer's memory held until copied; and a CUDA Trainer reading the device store training
// bit-identically to one reading the host store (same metrics, same weights). Sizes are not
// multiples of the kernel's 256-thread blocks or of a warp.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <random>

#include "cuda_test_util.h"
#include "topksae/live_source.h"
#include "topksae/ops_cpu.h"
#include "topksae/ops_cuda.h"
#include "topksae/train.h"

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

TEST(CudaLiveDeviceStore, DevicePushesServeAsHostPushes) {
  SKIP_WITHOUT_GPU();
  const int64_t d = 13, B = 7, N = 131;
  const std::vector<float> all = ramp_rows(N, d);
  DevVec<float> dall(all);
  LiveStream host(d, "buffer", 2, B, 4, N), dev(d, "buffer", 2, B, 4, N, Device::cuda);
  auto released = std::make_shared<int>(0);
  for (int64_t at = 0; at < N; at += 30) {
    const int64_t n = std::min<int64_t>(30, N - at);
    ASSERT_TRUE(host.queue().push(all.data() + at * d, n));
    // Alternate device and host pushes into the device store.
    if ((at / 30) % 2 == 0) {
      std::shared_ptr<void> hold(new int(0), [released](void* p) {
        ++*released;
        delete static_cast<int*>(p);
      });
      ASSERT_TRUE(dev.queue().push_device(dall.p() + at * d, n, nullptr, std::move(hold)));
    } else {
      ASSERT_TRUE(dev.queue().push(all.data() + at * d, n));
    }
  }
  host.queue().finish();
  dev.queue().finish();
  DevVec<float> batch(size_t(B * d));
  std::vector<float> want(size_t(B * d));
  int64_t batches = 0;
  while (host.next(want.data(), B) == B) {
    ASSERT_EQ(dev.next_device(batch.p(), B, nullptr), B) << "batch " << batches;
    ASSERT_EQ(batch.get(), want) << "batch " << batches;
    ++batches;
  }
  EXPECT_EQ(batches, N / B);
  EXPECT_EQ(*released, 3);  // pushes 0, 2, 4: held until their copies ran, then let go
}

TEST(CudaLiveDeviceStore, RefusesDevicePushesWithAHostStore) {
  SKIP_WITHOUT_GPU();
  LiveSource s(4, 16);
  DevVec<float> rows(size_t(8));
  EXPECT_THROW(s.push_device(rows.p(), 2, nullptr, {}), Error);
}

TrainConfig small_cfg() {
  TrainConfig c;
  c.d_in = 37;
  c.d_sae = 203;
  c.k = 5;
  c.batch_size = 29;
  c.training_tokens = 29 * 14;
  c.lr = 3e-3;
  c.lr_warm_up_steps = 3;
  c.dead_feature_window = 2;  // AuxK from step 3 on
  c.feature_sampling_window = 7;
  c.normalize_activations = Normalize::expected_average_only_in;  // the estimate reads through the store
  c.n_batches_for_norm_estimate = 2;
  c.seed = 23;
  return c;
}

// The Trainer on the GPU reading the device store (next_device, the backend's device batch path)
// against the same Trainer reading the host store (pinned staging): the same rows in the same
// order, so the same training, bit for bit under the emulation (which runs kernels sequentially; a
// GPU's float atomics could reorder sums, hence the 1e-6 there).
TEST(CudaLiveDeviceStore, TrainsAsTheHostStore) {
  SKIP_WITHOUT_GPU();
  const TrainConfig c = small_cfg();
  const int64_t N = 29 * 22;  // the estimate's 2 batches, 14 steps, and what the buffer keeps back
  const std::vector<float> rows = uniform(size_t(N * c.d_in), 3, -1.f, 1.f);
  struct Run {
    std::vector<StepMetrics> log;
    TrainState st;
  };
  auto train = [&](Device store) {
    Run r;
    LiveStream s(c.d_in, "buffer", 4, c.batch_size, c.seed, N, store);
    EXPECT_TRUE(s.queue().push(rows.data(), N));
    s.queue().finish();
    TrainerOptions o;
    o.device = Device::cuda;
    o.on_step = [&r](const StepMetrics& m) { r.log.push_back(m); };
    Trainer t(c, s, o);
    EXPECT_EQ(s.serves_device(), store == Device::cuda);
    t.run();
    r.st = t.state();
    return r;
  };
  const Run h = train(Device::cpu), dv = train(Device::cuda);
  ASSERT_EQ(h.log.size(), size_t(14));
  ASSERT_EQ(dv.log.size(), h.log.size());
  ASSERT_TRUE(h.st.scaling_factor.has_value());
  EXPECT_EQ(*dv.st.scaling_factor, *h.st.scaling_factor);
#ifdef TOPKSAE_CUDA_EMU
  const double tol = 0;
#else
  const double tol = 1e-6;
#endif
  bool aux = false;
  for (size_t i = 0; i < h.log.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "step " << i);
    EXPECT_NEAR(dv.log[i].overall_loss, h.log[i].overall_loss, tol * std::abs(h.log[i].overall_loss));
    EXPECT_NEAR(dv.log[i].mse_loss, h.log[i].mse_loss, tol * std::abs(h.log[i].mse_loss));
    EXPECT_NEAR(dv.log[i].auxiliary_reconstruction_loss, h.log[i].auxiliary_reconstruction_loss,
                tol * std::abs(h.log[i].auxiliary_reconstruction_loss));
    EXPECT_EQ(dv.log[i].l0, h.log[i].l0);
    aux = aux || h.log[i].auxiliary_reconstruction_loss > 0;
  }
  EXPECT_TRUE(aux);
  EXPECT_GT(h.log.back().overall_loss, 0.0);
  for (auto member : {&Params<float>::W_enc, &Params<float>::b_enc, &Params<float>::W_dec, &Params<float>::b_dec}) {
    const std::vector<float>& a = dv.st.params.*member;
    const std::vector<float>& b = h.st.params.*member;
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < a.size(); ++j) ASSERT_NEAR(a[j], b[j], tol * (1 + std::abs(b[j]))) << "element " << j;
  }
}

}  // namespace
}  // namespace topksae::test
#endif  // TOPKSAE_HAS_CUDA
