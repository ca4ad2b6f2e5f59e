// The counter-based initialisation on the device (cuda::init_params_counter, kernels/train/
// init_params.cu) against its CPU twin (cpu::init_params_counter), and a TrainStep built from
// DeviceInit against one uploaded from the twin's state: the same steps. d_in 300 is not a multiple
// of the kernel's 256 threads, so every block's last pass is partial.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cmath>
#include <string>

#include "cuda_test_util.h"
#include "topksae/error.h"
#include "topksae/train.h"
#include "topksae/train_cuda.h"

namespace topksae::test {
namespace {

TrainConfig init_config() {
  TrainConfig cfg;
  cfg.d_in = 300;
  cfg.d_sae = 77;
  cfg.k = 6;
  cfg.batch_size = 23;
  cfg.lr = 3e-3;
  cfg.dead_feature_window = 3;
  cfg.training_tokens = 23 * 100;
  cfg.seed = 19;
  return cfg;
}

// |a - b| within 2 float ulps of b: the row norm's double sum runs in another order on the device.
void expect_close_ulps(const std::vector<float>& got, const std::vector<float>& ref, const char* what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  int64_t bad = 0;
  for (size_t i = 0; i < ref.size(); ++i)
    if (!(std::abs(got[i] - ref[i]) <= 2 * std::abs(ref[i]) * 0x1.0p-23f)) ++bad;
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << ref.size() << " values differ by more than 2 ulps";
}

TEST(CudaInitParams, CounterInitMatchesCpuTwin) {
  SKIP_WITHOUT_GPU();
  for (bool with_norm : {true, false}) {
    SCOPED_TRACE(with_norm ? "decoder_init_norm 0.1" : "no decoder_init_norm");
    TrainConfig cfg = init_config();
    if (!with_norm) cfg.decoder_init_norm.reset();
    const Params<float> ref = cpu::init_params_counter<float>(cfg);
    cuda::Context ctx;
    DevVec<float> W_enc(size_t(cfg.d_in * cfg.d_sae)), W_dec(size_t(cfg.d_sae * cfg.d_in));
    cuda::init_params_counter(ctx, cfg, W_enc.p(), W_dec.p());
    ctx.synchronize();
    const std::vector<float> enc = W_enc.get(), dec = W_dec.get();
    expect_close_ulps(dec, ref.W_dec, "W_dec");
    // W_enc = W_dec^T exactly on the device too.
    int64_t mismatched = 0;
    for (int64_t j = 0; j < cfg.d_sae; ++j)
      for (int64_t i = 0; i < cfg.d_in; ++i)
        mismatched += enc[size_t(i * cfg.d_sae + j)] != dec[size_t(j * cfg.d_in + i)];
    EXPECT_EQ(mismatched, 0);
    // Not a zero or constant fill: the rows have the law's norm (or its spread without one).
    double s0 = 0;
    for (int64_t i = 0; i < cfg.d_in; ++i) s0 += double(dec[size_t(i)]) * dec[size_t(i)];
    if (with_norm) EXPECT_NEAR(std::sqrt(s0), 0.1, 1e-6);
    else EXPECT_NEAR(std::sqrt(s0 / double(cfg.d_in)), std::sqrt(6.0 / 300) / std::sqrt(3.0), 0.02);
  }
}

TEST(CudaInitParams, TrainStepFromDeviceInitEqualsUploadedTwin) {
  SKIP_WITHOUT_GPU();
  const TrainConfig cfg = init_config();
  cuda::DeviceInit init;
  init.b_enc = randn(size_t(cfg.d_sae), 5, 0.05f);
  init.since_fired.resize(size_t(cfg.d_sae));
  for (int64_t j = 0; j < cfg.d_sae; ++j) init.since_fired[size_t(j)] = j % 5;  // some dead at once: AuxK runs
  TrainState twin = TrainState::initial(cfg);
  twin.params = cpu::init_params_counter<float>(cfg);
  twin.params.b_enc = init.b_enc;
  twin.stats.since_fired = init.since_fired;

  cuda::Context ctx;
  cuda::TrainStep dev(ctx, cfg, init, {.precision = cuda::Precision::fp32});
  cuda::TrainStep up(ctx, cfg, twin, {.precision = cuda::Precision::fp32});
  TrainState s0;
  dev.download(&s0);
  expect_close_ulps(s0.params.W_dec, twin.params.W_dec, "W_dec at step 0");
  EXPECT_EQ(s0.params.b_enc, init.b_enc);
  EXPECT_EQ(s0.stats.since_fired, init.since_fired);
  for (float v : s0.adam_m.W_enc) ASSERT_EQ(v, 0.f);
  for (float v : s0.adam_v.W_dec) ASSERT_EQ(v, 0.f);
  EXPECT_FALSE(s0.scaling_factor.has_value());

  const int steps = 4;
  const size_t per = size_t(cfg.batch_size * cfg.d_in);
  DevVec<float> dx(randn(per * steps, 7, 1.f));
  for (int t = 0; t < steps; ++t) {
    dev.step(dx.p() + t * per, cfg.batch_size);
    up.step(dx.p() + t * per, cfg.batch_size);
  }
  const std::vector<StepMetrics> md = dev.drain_metrics(), mu = up.drain_metrics();
  ASSERT_EQ(md.size(), size_t(steps));
  ASSERT_EQ(mu.size(), size_t(steps));
  bool aux = false;
  for (int t = 0; t < steps; ++t) {
    SCOPED_TRACE(::testing::Message() << "step " << t);
    EXPECT_NEAR(md[size_t(t)].overall_loss, mu[size_t(t)].overall_loss, 1e-6 * mu[size_t(t)].overall_loss);
    EXPECT_EQ(md[size_t(t)].dead_features, mu[size_t(t)].dead_features);
    aux = aux || mu[size_t(t)].auxiliary_reconstruction_loss > 0;
  }
  EXPECT_TRUE(aux) << "AuxK never ran";
  TrainState a, b;
  dev.download(&a);
  up.download(&b);
  EXPECT_NE(a.params.W_dec, s0.params.W_dec) << "the weights did not move";
  for (size_t i = 0; i < b.params.W_dec.size(); ++i)
    ASSERT_NEAR(a.params.W_dec[i], b.params.W_dec[i], 1e-5) << "W_dec element " << i;
  EXPECT_EQ(a.stats.since_fired, b.stats.since_fired);
}

TEST(CudaInitParams, DeviceInitDefaultsToZerosAndRejectsWrongSizes) {
  SKIP_WITHOUT_GPU();
  const TrainConfig cfg = init_config();
  cuda::Context ctx;
  auto message = [&](const cuda::DeviceInit& init) -> std::string {
    try {
      cuda::TrainStep t(ctx, cfg, init);
    } catch (const Error& e) {
      return e.what();
    }
    return "(accepted)";
  };
  // Empty b_enc and since_fired mean zeros (not whatever the fresh allocation held).
  {
    cuda::TrainStep fresh(ctx, cfg, cuda::DeviceInit{});
    TrainState st;
    fresh.download(&st);
    EXPECT_EQ(st.stats.since_fired, std::vector<int64_t>(size_t(cfg.d_sae), 0));
    EXPECT_EQ(st.params.b_enc, std::vector<float>(size_t(cfg.d_sae), 0.f));
    EXPECT_NE(st.params.W_dec, std::vector<float>(st.params.W_dec.size(), 0.f));
  }
  cuda::DeviceInit bad;
  bad.b_enc.resize(size_t(cfg.d_sae - 1));
  EXPECT_NE(message(bad).find("b_enc has 76 entries, not d_sae=77"), std::string::npos) << message(bad);
  bad.b_enc.clear();
  bad.since_fired.resize(3);
  EXPECT_NE(message(bad).find("since_fired has 3 entries, not d_sae=77"), std::string::npos) << message(bad);
}

}  // namespace
}  // namespace topksae::test
#endif
