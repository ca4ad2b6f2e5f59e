// The CUDA training step's fused gradient mode (cuda::GradStorage::fused: no dense gradient, a norm
// pass then an Adam pass over the same sparse sums) against the stored mode and the CPU trainer:
// every step's metrics and the final parameters and moments bit for bit equal to the stored mode
// whenever the two runs' gradient norms are (the norm's double block sums are added with atomics,
// whose order a GPU does not fix; the emulation runs them in order), and close to the CPU twin with
// the 20-step test's tolerances (test_cuda_train.cpp runs those cases in the fused mode too).
// Shapes cover both AuxK paths, the bf16 copy of W_enc, the slab dz, apply_b_dec_to_input off.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "cuda_test_util.h"
#include "topksae/error.h"
#include "topksae/train.h"
#include "topksae/train_cuda.h"
#include "train/dead_bound.h"

namespace topksae::test {
namespace {

TrainConfig base_config() {
  TrainConfig cfg;
  cfg.d_in = 37;  // AuxK's k = 18
  cfg.d_sae = 203;
  cfg.k = 5;
  cfg.batch_size = 19;
  cfg.lr = 3e-3;
  cfg.dead_feature_window = 3;
  cfg.feature_sampling_window = 7;
  cfg.training_tokens = 19 * 100;
  cfg.seed = 11;
  return cfg;
}

// Non-zero biases, a scaling factor, and since_fired values that make some latents dead at once.
TrainState start_state(const TrainConfig& cfg) {
  TrainState st = TrainState::initial(cfg);
  st.params.b_enc = randn(size_t(cfg.d_sae), 31, 0.05f);
  st.params.b_dec = randn(size_t(cfg.d_in), 32, 0.1f);
  st.scaling_factor = 1.3;
  for (int64_t j = 0; j < cfg.d_sae; ++j) st.stats.since_fired[size_t(j)] = j % 6;
  return st;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_same_params(const Params<float>& got, const Params<float>& ref, const char* what) {
  SCOPED_TRACE(what);
  EXPECT_TRUE(same_bits(got.W_enc, ref.W_enc)) << "W_enc";
  EXPECT_TRUE(same_bits(got.b_enc, ref.b_enc)) << "b_enc";
  EXPECT_TRUE(same_bits(got.W_dec, ref.W_dec)) << "W_dec";
  EXPECT_TRUE(same_bits(got.b_dec, ref.b_dec)) << "b_dec";
}

// A capacity that makes both AuxK paths run within the test's steps (computed in the test).
constexpr int64_t kMixedCap = -2;

struct FusedCase {
  const char* name;
  int64_t d_in, d_sae;
  int64_t aux_cap;  // TrainStepOptions::aux_dense_cap, or kMixedCap
  cuda::Precision prec;
  bool apply_b_dec;
  int slab_threads;
  double clip_scale;  // multiplies x: > 1 makes the gradient norm exceed 1 (the clip acts)
};
class CudaTrainFused : public ::testing::TestWithParam<FusedCase> {};

TEST_P(CudaTrainFused, SameBitsAsStoredGradients) {
  SKIP_WITHOUT_GPU();
  const FusedCase& fc = GetParam();
  TrainConfig cfg = base_config();
  cfg.d_in = fc.d_in;
  cfg.d_sae = fc.d_sae;
  cfg.apply_b_dec_to_input = fc.apply_b_dec;
  // A fixed capacity: a window above DeadBound::kLag, so the host's dead-count bound varies
  // around the capacity and both AuxK paths run (with window 3 the bound is always d_sae).
  if (fc.aux_cap == kMixedCap) cfg.dead_feature_window = 10;
  const int steps = 6;
  const size_t per = size_t(cfg.batch_size * cfg.d_in);
  std::vector<float> x = randn(per * steps, 41, 1.f);
  for (float& e : x) e *= float(fc.clip_scale);
  TrainState st0 = start_state(cfg);
  if (fc.aux_cap == kMixedCap)
    for (int64_t j = 0; j < cfg.d_sae; ++j) st0.stats.since_fired[size_t(j)] = j % 14;

  cuda::Context ctx;
  DevVec<float> dx(x);
  int64_t cap = fc.aux_cap;
  if (cap == kMixedCap) {
    // Steps 0..kLag are sized by the first state's near-dead count, step kLag+1 (the last here)
    // by the count after step 0 (DeadBound): a capacity at the smaller makes the larger gather.
    static_assert(train_detail::DeadBound::kLag + 2 == 6, "the last step is the first one sized by a step's count");
    const int64_t b0 = train_detail::DeadBound::count_near(st0.stats.since_fired, cfg.dead_feature_window);
    TrainState cst = st0;
    cpu::TrainWorkspace ws;
    cpu::train_step(cfg, &cst, x.data(), cfg.batch_size, &ws);
    const int64_t b1 = train_detail::DeadBound::count_near(cst.stats.since_fired, cfg.dead_feature_window);
    ASSERT_NE(b0, b1) << "the bounds must differ for both paths to run";
    cap = std::min(b0, b1);
  }
  cuda::TrainStepOptions o{.precision = fc.prec, .aux_dense_cap = cap, .slab_threads = fc.slab_threads};
  o.grad_storage = cuda::GradStorage::stored;
  cuda::TrainStep stored(ctx, cfg, st0, o);
  o.grad_storage = cuda::GradStorage::fused;
  cuda::TrainStep fused(ctx, cfg, st0, o);
  EXPECT_EQ(stored.grad_storage(), cuda::GradStorage::stored);
  EXPECT_EQ(fused.grad_storage(), cuda::GradStorage::fused);
  for (int t = 0; t < steps; ++t) {
    stored.step(dx.p() + t * per, cfg.batch_size);
    fused.step(dx.p() + t * per, cfg.batch_size);
  }
  const std::vector<StepMetrics> ms = stored.drain_metrics(), mf = fused.drain_metrics();
  ASSERT_EQ(ms.size(), size_t(steps));
  ASSERT_EQ(mf.size(), size_t(steps));
  bool same_norms = true, clipped = false, aux = false;
  for (int t = 0; t < steps; ++t) {
    SCOPED_TRACE(::testing::Message() << "step " << t);
    const StepMetrics &a = ms[size_t(t)], &b = mf[size_t(t)];
    // The forward is shared code: equal losses while the parameters are equal.
    EXPECT_EQ(a.overall_loss, b.overall_loss);
    EXPECT_EQ(a.mse_loss, b.mse_loss);
    EXPECT_EQ(a.auxiliary_reconstruction_loss, b.auxiliary_reconstruction_loss);
    EXPECT_EQ(a.dead_features, b.dead_features);
    EXPECT_LE(std::abs(a.grad_norm - b.grad_norm), 1e-12 * a.grad_norm);
    same_norms = same_norms && a.grad_norm == b.grad_norm;
    clipped = clipped || a.grad_norm > 1.0;
    aux = aux || a.auxiliary_reconstruction_loss > 0;
  }
  EXPECT_TRUE(aux) << "AuxK never ran: the dead blocks were not exercised";
  const cuda::AuxPathCounts pf = fused.aux_path_counts();
  EXPECT_EQ(pf.dense, stored.aux_path_counts().dense);
  EXPECT_EQ(pf.gather, stored.aux_path_counts().gather);
  if (fc.aux_cap == kMixedCap) {
    EXPECT_GT(pf.dense, 0) << "gather " << pf.gather << ", none " << pf.none;
    EXPECT_GT(pf.gather, 0);
  }
  if (fc.clip_scale > 1) EXPECT_TRUE(clipped) << "the clip never acted";
  TrainState gs, gf;
  stored.download(&gs);
  fused.download(&gf);
  EXPECT_NONZERO(gf.params.W_enc);
  EXPECT_NONZERO(gf.adam_v.W_dec);
  if (same_norms) {
    expect_same_params(gf.params, gs.params, "parameters");
    expect_same_params(gf.adam_m, gs.adam_m, "adam m");
    expect_same_params(gf.adam_v, gs.adam_v, "adam v");
  } else {
    // A GPU summed the norm's block sums in another order: a clip factor one float apart at most.
    EXPECT_ALLCLOSE(gf.params.W_enc.data(), gs.params.W_enc.data(), gs.params.W_enc.size(), 1e-7, 1e-5);
    EXPECT_ALLCLOSE(gf.params.W_dec.data(), gs.params.W_dec.data(), gs.params.W_dec.size(), 1e-7, 1e-5);
  }
  EXPECT_EQ(gf.stats.since_fired, gs.stats.since_fired);
  EXPECT_EQ(gf.stats.act_freq, gs.stats.act_freq);
  Params<float> g;
  EXPECT_THROW(fused.download_grads(&g), Error);
  EXPECT_NO_THROW(stored.download_grads(&g));
}

INSTANTIATE_TEST_SUITE_P(
    Cuda, CudaTrainFused,
    ::testing::Values(FusedCase{"dense_clipped", 37, 203, -1, cuda::Precision::fp32, true, 0, 40.0},
                      FusedCase{"mixed_cap", 37, 203, kMixedCap, cuda::Precision::fp32, false, 0, 3.0},
                      FusedCase{"bf16", 37, 203, -1, cuda::Precision::bf16, true, 0, 1.0},
                      // float4 slabs for the main dz (d_in, d_sae multiples of 4), more latents
                      // than one grad_enc block of 32 holds many times over.
                      FusedCase{"slabs", 260, 204, -1, cuda::Precision::fp32, true, 32, 1.0},
                      FusedCase{"tf32_gather", 40, 331, 0, cuda::Precision::tf32, false, -1, 5.0}),
    [](const ::testing::TestParamInfo<FusedCase>& i) { return std::string(i.param.name); });

// planned_bytes equals the allocation in the fused mode too, and is the stored plan less the
// dense gradient plus the biases' gradients and (dense AuxK) the second dead block.
TEST(CudaTrainFusedPlan, PlannedBytesMatchTheAllocation) {
  SKIP_WITHOUT_GPU();
  const TrainConfig cfg = base_config();
  cuda::Context ctx;
  const int64_t d = cfg.d_in, n = cfg.d_sae, P = 2 * d * n + n + d;
  for (int64_t cap : {int64_t(-1), int64_t(0), int64_t(64)}) {
    SCOPED_TRACE(::testing::Message() << "aux_dense_cap " << cap);
    const cuda::TrainStepOptions fo{.aux_dense_cap = cap, .grad_storage = cuda::GradStorage::fused};
    const cuda::TrainStepOptions so{.aux_dense_cap = cap, .grad_storage = cuda::GradStorage::stored};
    const size_t planned = cuda::TrainStep::planned_bytes(ctx, cfg, fo);
    cuda::TrainStep step(ctx, cfg, start_state(cfg), fo);
    EXPECT_EQ(step.device_bytes(), planned);
    const int64_t resolved_cap = cap < 0 ? n : cap;
    EXPECT_EQ(cuda::TrainStep::planned_bytes(ctx, cfg, so) - planned, size_t(P - (n + d) - resolved_cap * d) * 4);
  }
  // Automatic at this size: stored (it fits the device many times over).
  cuda::TrainStep autos(ctx, cfg, start_state(cfg));
  EXPECT_EQ(autos.grad_storage(), cuda::GradStorage::stored);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTrainFused, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
