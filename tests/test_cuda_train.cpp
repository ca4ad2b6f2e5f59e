// The CUDA training step against the CPU trainer (cpu::train_step): the first step's gradients
// (with AuxK active from the start), then 20 steps in fp32 (losses to 1e-5 relative, metrics,
// statistics, weights), and the tf32 / bf16 modes loosely. Sizes are not multiples of any block.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <algorithm>
#include <cmath>
#include <tuple>

#include "cuda_test_util.h"
#include "precision_check.h"
#include "topksae/error.h"
#include "topksae/train.h"
#include "topksae/train_cuda.h"
#include "train/dead_bound.h"

namespace topksae::test {
namespace {

TrainConfig small_config() {
  TrainConfig cfg;
  cfg.d_in = 37;        // d_in // 2 = 18: AuxK's k
  cfg.d_sae = 203;
  cfg.k = 5;
  cfg.batch_size = 19;  // 95 selections per step over 203 latents: many stay dead
  cfg.lr = 1e-3;
  cfg.dead_feature_window = 3;
  cfg.feature_sampling_window = 7;  // sparsity metrics at steps 6 and 13
  cfg.training_tokens = 19 * 100;
  cfg.seed = 5;
  return cfg;
}

// Initial state with non-zero biases (so every term of the backward is exercised), a scaling
// factor, and since_fired values that make ~3/7 of the latents dead at the first step.
TrainState initial_state(const TrainConfig& cfg) {
  TrainState st = TrainState::initial(cfg);
  st.params.b_enc = randn(size_t(cfg.d_sae), 77, 0.05f);
  st.params.b_dec = randn(size_t(cfg.d_in), 78, 0.1f);
  st.scaling_factor = 1.7;
  for (int64_t j = 0; j < cfg.d_sae; ++j) st.stats.since_fired[size_t(j)] = j % 7;
  return st;
}

std::vector<float> batches(const TrainConfig& cfg, int steps) {
  return randn(size_t(steps * cfg.batch_size * cfg.d_in), 99, 1.f);
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

void expect_params_close(const Params<float>& got, const Params<float>& ref, double atol, double rtol,
                         const char* what) {
  SCOPED_TRACE(what);
  EXPECT_ALLCLOSE(got.W_enc.data(), ref.W_enc.data(), ref.W_enc.size(), atol, rtol) << "W_enc";
  EXPECT_ALLCLOSE(got.b_enc.data(), ref.b_enc.data(), ref.b_enc.size(), atol, rtol) << "b_enc";
  EXPECT_ALLCLOSE(got.W_dec.data(), ref.W_dec.data(), ref.W_dec.size(), atol, rtol) << "W_dec";
  EXPECT_ALLCLOSE(got.b_dec.data(), ref.b_dec.data(), ref.b_dec.size(), atol, rtol) << "b_dec";
}

// Both values of apply_b_dec_to_input (the b_dec gradient's W_enc @ db_enc term exists only with
// it); the second run also sizes the step for more rows than it is given (max_batch > B).
// Instantiated as Cuda/...: tools/gpu_check.sh runs --gtest_filter='Cuda*' on the full names.
// Each also with AuxK's dense path (aux_dense_cap -1) and its gather path (0), and with the encoder
// GEMM through cuBLAS and through cublasLt (TrainStepOptions::encoder_gemm).
class CudaTrainFirstStep : public ::testing::TestWithParam<std::tuple<bool, int64_t, cuda::EncoderGemm>> {};

// One step from `st` on the GPU against the CPU: losses, gradient norm and all four gradients.
void expect_first_step_matches_cpu(const TrainConfig& cfg, const TrainState& st, int64_t aux_cap, int64_t max_batch,
                                   cuda::EncoderGemm how = cuda::EncoderGemm::cublas) {
  const std::vector<float> x = batches(cfg, 1);
  TrainState cst = st;
  cpu::TrainWorkspace ws;
  const StepMetrics cm = cpu::train_step(cfg, &cst, x.data(), cfg.batch_size, &ws);
  ASSERT_GT(ws.fwd.k_aux, 0) << "the test needs AuxK active in its first step";

  cuda::Context ctx;
  cuda::TrainStep gpu(ctx, cfg, st, {.max_batch = max_batch, .aux_dense_cap = aux_cap, .encoder_gemm = how});
  EXPECT_EQ(gpu.encoder_gemm(), how);
  DevVec<float> dx(x);
  gpu.step(dx.p(), cfg.batch_size);
  const std::vector<StepMetrics> gm = gpu.drain_metrics();
  ASSERT_EQ(gm.size(), 1u);
  EXPECT_EQ(gpu.aux_path_counts().dense, aux_cap != 0 ? 1 : 0);
  EXPECT_EQ(gpu.aux_path_counts().gather, aux_cap == 0 ? 1 : 0);
  EXPECT_LE(rel(gm[0].grad_norm, cm.grad_norm), 1e-5);
  EXPECT_LE(rel(gm[0].overall_loss, cm.overall_loss), 1e-5);
  EXPECT_LE(rel(gm[0].auxiliary_reconstruction_loss, cm.auxiliary_reconstruction_loss), 1e-5);
  EXPECT_GT(cm.auxiliary_reconstruction_loss, 0.0);

  // GPU gradients are before clipping, the CPU workspace's after: scale by the clip factor.
  Params<float> g;
  gpu.download_grads(&g);
  const float c = float(std::min(1.0, 1.0 / (gm[0].grad_norm + 1e-6)));
  for (auto* v : {&g.W_enc, &g.b_enc, &g.W_dec, &g.b_dec})
    for (float& e : *v) e *= c;
  EXPECT_NONZERO(g.W_enc);
  EXPECT_NONZERO(g.W_dec);
  EXPECT_NONZERO(g.b_enc);
  EXPECT_NONZERO(g.b_dec);
  expect_params_close(g, ws.grad, 1e-6, 1e-4, "gradients");
}

TEST_P(CudaTrainFirstStep, GradientsMatchCpu) {
  SKIP_WITHOUT_GPU();
  TrainConfig cfg = small_config();
  const bool b_dec_in = std::get<0>(GetParam());
  const int64_t cap = std::get<1>(GetParam());
  cfg.apply_b_dec_to_input = b_dec_in;
  expect_first_step_matches_cpu(cfg, initial_state(cfg), cap, b_dec_in ? -1 : cfg.batch_size + 13,
                                std::get<2>(GetParam()));
}
INSTANTIATE_TEST_SUITE_P(Cuda, CudaTrainFirstStep,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(-1, 0),
                                            ::testing::Values(cuda::EncoderGemm::cublas, cuda::EncoderGemm::lt)));

// Hot latents: 40 latents with a large b_enc win every token's top-k (k = 40), so the 32 latents
// of grad_enc_kernel's first block own 32 x 70 = 2240 entries, more than the block stages in
// shared memory (kEncStage = 2048: its global-memory path), and each hot latent 70 entries, more
// than one 32-entry chunk of grad_dec_kernel's warp. The other blocks take the staged path.
class CudaTrainHotLatents : public ::testing::TestWithParam<int64_t> {};

TEST_P(CudaTrainHotLatents, GradientsMatchCpu) {
  SKIP_WITHOUT_GPU();
  TrainConfig cfg = small_config();
  cfg.k = 40;
  cfg.batch_size = 70;
  cfg.training_tokens = 70 * 100;
  TrainState st = initial_state(cfg);
  for (int64_t j = 0; j < 40; ++j) st.params.b_enc[size_t(j)] = 5.f + 0.01f * float(j);
  expect_first_step_matches_cpu(cfg, st, GetParam(), -1);
}
INSTANTIATE_TEST_SUITE_P(Cuda, CudaTrainHotLatents, ::testing::Values(-1, 0));

// 20 steps against the CPU with each AuxK path. `window` is the dead-feature window; cap is
// aux_dense_cap, where kMixedCap means: a capacity between the smallest and largest dead-count
// bound of the run (computed from the CPU run), so that both paths take turns.
constexpr int64_t kMixedCap = -2;
// Windows >= 5 (> DeadBound::kLag), so the bound is below d_sae and varies.
struct AuxCase {
  const char* name;
  int64_t window, cap;
  bool poll;   // poll metrics after each step (else the host learns only what the bound needs)
  bool fresh;  // start with since_fired all 0: no latent can be dead in the first steps (no AuxK)
  int64_t encode_rows = 0;  // TrainStepOptions::encode_rows (0: auto, the whole batch at this size)
  cuda::GradStorage storage = cuda::GradStorage::automatic;  // automatic: stored at this size
  cuda::EncoderGemm egemm = cuda::EncoderGemm::cublas;  // TrainStepOptions::encoder_gemm
};
class CudaTrainSteps : public ::testing::TestWithParam<AuxCase> {};

TEST_P(CudaTrainSteps, TwentyStepsFp32MatchCpu) {
  SKIP_WITHOUT_GPU();
  TrainConfig cfg = small_config();
  cfg.dead_feature_window = GetParam().window;
  const int steps = 20;
  const std::vector<float> x = batches(cfg, steps);
  const size_t per = size_t(cfg.batch_size * cfg.d_in);

  TrainState cst = initial_state(cfg);
  // A spread of since values (some dead, some about to be), or none fired yet.
  for (int64_t j = 0; j < cfg.d_sae; ++j)
    cst.stats.since_fired[size_t(j)] = GetParam().fresh ? 0 : j % (cfg.dead_feature_window + 4);
  const TrainState st0 = cst;
  cpu::TrainWorkspace ws;
  std::vector<StepMetrics> cm;
  // The host's dead-count bound at each step when it only learns what it must wait for
  // (DeadBound: the count of the step kLag+1 back), from the CPU's counters.
  const int64_t lag = train_detail::DeadBound::kLag;
  std::vector<int64_t> near_after, bound_at;
  for (int t = 0; t < steps; ++t) {
    bound_at.push_back(t <= lag ? train_detail::DeadBound::count_near(st0.stats.since_fired, cfg.dead_feature_window)
                                : near_after[size_t(t - 1 - lag)]);
    cm.push_back(cpu::train_step(cfg, &cst, x.data() + t * per, cfg.batch_size, &ws));
    near_after.push_back(train_detail::DeadBound::count_near(cst.stats.since_fired, cfg.dead_feature_window));
  }
  int64_t cap = GetParam().cap;
  if (cap == kMixedCap) {
    std::vector<int64_t> sorted = bound_at;
    std::sort(sorted.begin(), sorted.end());
    cap = sorted[sorted.size() / 2];
    ASSERT_LT(sorted.front(), sorted.back()) << "the bounds must vary for both paths to run";
    if (cap == sorted.back()) --cap;
    ASSERT_GT(cap, 0) << "a mixed capacity of 0 would mean 'gather only'";
  }
  cuda::AuxPathCounts expect;
  for (int64_t b : bound_at) {
    const int64_t resolved = cap < 0 ? cfg.d_sae : cap;  // the auto capacity holds all 203 latents
    if (b == 0) ++expect.none;
    else if (b <= resolved) ++expect.dense;
    else ++expect.gather;
  }

  cuda::Context ctx;
  cuda::TrainStep gpu(ctx, cfg, st0,
                      {.aux_dense_cap = cap, .encode_rows = GetParam().encode_rows, .grad_storage = GetParam().storage,
                       .encoder_gemm = GetParam().egemm});
  EXPECT_EQ(gpu.encode_rows(), GetParam().encode_rows > 0 ? GetParam().encode_rows : cfg.batch_size);
  DevVec<float> dx(x);
  std::vector<StepMetrics> gm;
  for (int t = 0; t < steps; ++t) {
    gpu.step(dx.p() + t * per, cfg.batch_size);
    if (GetParam().poll)
      for (auto& m : gpu.poll_metrics()) gm.push_back(m);  // never blocks
  }
  EXPECT_EQ(gpu.steps_done(), steps);
  for (auto& m : gpu.drain_metrics()) gm.push_back(m);
  ASSERT_EQ(gm.size(), size_t(steps));
  const cuda::AuxPathCounts got = gpu.aux_path_counts();
  if (GetParam().poll) {
    // Which step's count bounds a step now depends on timing; the numbers above must not. The
    // auto capacity holds every latent here, so the gather path is never needed.
    EXPECT_EQ(got.dense + got.gather + got.none, steps);
    EXPECT_EQ(got.gather, 0);
    EXPECT_GT(got.dense, 0);
  } else {
    EXPECT_EQ(got.dense, expect.dense);
    EXPECT_EQ(got.gather, expect.gather);
    EXPECT_EQ(got.none, expect.none);
  }
  if (GetParam().cap == kMixedCap) {
    EXPECT_GT(expect.dense, 0);
    EXPECT_GT(expect.gather, 0);
  }
  if (GetParam().fresh) {
    EXPECT_GT(expect.none, 0) << "the fresh run should start without AuxK";
    EXPECT_GT(expect.dense + expect.gather, 0) << "and reach it within 20 steps";
  }

  bool saw_aux = false, saw_sparsity = false;
  for (int t = 0; t < steps; ++t) {
    SCOPED_TRACE(::testing::Message() << "step " << t);
    const StepMetrics &g = gm[size_t(t)], &c = cm[size_t(t)];
    EXPECT_EQ(g.step, t);
    EXPECT_LE(rel(g.overall_loss, c.overall_loss), 1e-5) << g.overall_loss << " vs " << c.overall_loss;
    EXPECT_LE(rel(g.mse_loss, c.mse_loss), 1e-5);
    if (c.auxiliary_reconstruction_loss > 0) {
      saw_aux = true;
      EXPECT_LE(rel(g.auxiliary_reconstruction_loss, c.auxiliary_reconstruction_loss), 1e-5);
    } else {
      EXPECT_EQ(g.auxiliary_reconstruction_loss, 0.0);
    }
    EXPECT_NEAR(g.l0, c.l0, 1e-12);
    EXPECT_NEAR(g.explained_variance, c.explained_variance, 1e-5);
    EXPECT_EQ(g.dead_features, c.dead_features);
    EXPECT_NEAR(g.mean_passes_since_fired, c.mean_passes_since_fired, 1e-9);
    EXPECT_LE(rel(g.grad_norm, c.grad_norm), 1e-4);
    EXPECT_EQ(g.lr_used, c.lr_used);
    EXPECT_EQ(g.current_learning_rate, c.current_learning_rate);
    EXPECT_EQ(g.n_training_samples, c.n_training_samples);
    EXPECT_EQ(g.has_sparsity, c.has_sparsity);
    if (c.has_sparsity) {
      saw_sparsity = true;
      EXPECT_NEAR(g.mean_log10_feature_sparsity, c.mean_log10_feature_sparsity, 1e-5);
      EXPECT_EQ(g.below_1e_5, c.below_1e_5);
      EXPECT_EQ(g.below_1e_6, c.below_1e_6);
    }
  }
  EXPECT_TRUE(saw_aux) << "AuxK never ran: the test lost its point";
  EXPECT_TRUE(saw_sparsity);

  TrainState gst;
  gpu.download(&gst);
  EXPECT_EQ(gst.step, cst.step);
  EXPECT_EQ(gst.n_training_samples, cst.n_training_samples);
  EXPECT_EQ(gst.stats.since_fired, cst.stats.since_fired);
  EXPECT_EQ(gst.stats.act_freq, cst.stats.act_freq);
  EXPECT_EQ(gst.stats.n_frac_active, cst.stats.n_frac_active);
  EXPECT_EQ(gst.scaling_factor, cst.scaling_factor);
  EXPECT_NONZERO(gst.params.W_enc);
  expect_params_close(gst.params, cst.params, 1e-5, 1e-3, "parameters");
  expect_params_close(gst.adam_m, cst.adam_m, 1e-6, 1e-3, "adam m");
  expect_params_close(gst.adam_v, cst.adam_v, 1e-8, 1e-3, "adam v");

  // Resuming from the downloaded state continues exactly like the CPU (one more step).
  const std::vector<float> x2 = randn(per, 1234);
  const StepMetrics c21 = cpu::train_step(cfg, &cst, x2.data(), cfg.batch_size, &ws);
  cuda::TrainStep resumed(ctx, cfg, gst, {.aux_dense_cap = cap, .grad_storage = GetParam().storage,
                                                    .encoder_gemm = GetParam().egemm});
  DevVec<float> dx2(x2);
  resumed.step(dx2.p(), cfg.batch_size);
  const auto g21 = resumed.drain_metrics();
  ASSERT_EQ(g21.size(), 1u);
  EXPECT_EQ(g21[0].step, steps);
  EXPECT_LE(rel(g21[0].overall_loss, c21.overall_loss), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Cuda, CudaTrainSteps,
                         ::testing::Values(AuxCase{"dense", 10, -1, false, false},
                                           AuxCase{"gather", 10, 0, false, false},
                                           AuxCase{"dense_polled", 10, -1, true, false},
                                           AuxCase{"mixed", 10, kMixedCap, false, false},
                                           AuxCase{"fresh", 6, -1, false, true},
                                           // The forward's GEMM + top-k in chunks of 4 rows (19 = 4 x 4 + 3).
                                           AuxCase{"dense_chunked", 10, -1, false, false, 4},
                                           AuxCase{"gather_chunked", 10, 0, false, false, 4},
                                           AuxCase{"mixed_chunked", 10, kMixedCap, false, false, 4},
                                           // No stored gradient (a norm pass, then Adam inside the backward).
                                           // Both AuxK paths take turns (test_cuda_train_fused.cpp has more).
                                           AuxCase{"mixed_chunked_fused", 10, kMixedCap, false, false, 4,
                                                   cuda::GradStorage::fused},
                                           // The encoder GEMM through cublasLt (each chunk shape selected once).
                                           AuxCase{"mixed_chunked_lt", 10, kMixedCap, false, false, 4,
                                                   cuda::GradStorage::automatic, cuda::EncoderGemm::lt}),
                         [](const ::testing::TestParamInfo<AuxCase>& i) { return std::string(i.param.name); });

// The main top-k's dz swept over column slabs of W_dec (needs d_in and d_sae multiples of 4): each
// width against the CPU (first step's gradients, then 6 steps' losses), rows not a multiple of the
// 8..1 rows per block, several slabs with a partial last one. -1 is the whole-row kernel.
class CudaTrainSlabs : public ::testing::TestWithParam<int> {};

TEST_P(CudaTrainSlabs, MatchCpu) {
  SKIP_WITHOUT_GPU();
  TrainConfig cfg = small_config();
  cfg.d_in = 260;   // 5, 3, 2 or 1 slabs of 64..512 columns, the last partial
  cfg.d_sae = 204;  // W_dec's offset n * (d + 1) in the flat parameters: a multiple of 4
  const TrainState st0 = initial_state(cfg);
  const int steps = 6;
  const std::vector<float> x = batches(cfg, steps);
  const size_t per = size_t(cfg.batch_size * cfg.d_in);
  TrainState cst = st0;
  cpu::TrainWorkspace ws;
  std::vector<StepMetrics> cm;
  Params<float> first_grad;
  for (int t = 0; t < steps; ++t) {
    cm.push_back(cpu::train_step(cfg, &cst, x.data() + t * per, cfg.batch_size, &ws));
    if (t == 0) first_grad = ws.grad;
  }

  cuda::Context ctx;
  cuda::TrainStep gpu(ctx, cfg, st0, {.slab_threads = GetParam()});
  EXPECT_EQ(gpu.slab_threads(), GetParam() < 0 ? 0 : GetParam());
  DevVec<float> dx(x);
  gpu.step(dx.p(), cfg.batch_size);
  std::vector<StepMetrics> gm = gpu.drain_metrics();
  Params<float> g;
  gpu.download_grads(&g);
  const float c = float(std::min(1.0, 1.0 / (gm.at(0).grad_norm + 1e-6)));
  for (auto* v : {&g.W_enc, &g.b_enc, &g.W_dec, &g.b_dec})
    for (float& e : *v) e *= c;
  EXPECT_NONZERO(g.W_enc);
  expect_params_close(g, first_grad, 1e-6, 1e-4, "first step's gradients");
  for (int t = 1; t < steps; ++t) gpu.step(dx.p() + t * per, cfg.batch_size);
  for (auto& m : gpu.drain_metrics()) gm.push_back(m);
  ASSERT_EQ(gm.size(), size_t(steps));
  for (int t = 0; t < steps; ++t) EXPECT_LE(rel(gm[size_t(t)].overall_loss, cm[size_t(t)].overall_loss), 1e-5) << t;
}
INSTANTIATE_TEST_SUITE_P(Cuda, CudaTrainSlabs, ::testing::Values(-1, 16, 32, 64, 128));

TEST(CudaTrain, SlabThreadsNeedAlignedShapes) {
  SKIP_WITHOUT_GPU();
  const TrainConfig cfg = small_config();  // d_in 37
  cuda::Context ctx;
  EXPECT_THROW(cuda::TrainStep(ctx, cfg, initial_state(cfg), {.slab_threads = 16}), Error);
  EXPECT_THROW(cuda::TrainStep(ctx, cfg, initial_state(cfg), {.slab_threads = 48}), Error);
  cuda::TrainStep auto_step(ctx, cfg, initial_state(cfg));
  EXPECT_EQ(auto_step.slab_threads(), 0) << "unaligned shapes use the whole-row kernel";
  // d_in % 4 == 0 but d_sae % 4 != 0: W_dec's rows in the flat parameters are not float4-aligned.
  TrainConfig c2 = cfg;
  c2.d_in = 36;
  EXPECT_THROW(cuda::TrainStep(ctx, c2, initial_state(c2), {.slab_threads = 16}), Error);
  cuda::TrainStep auto2(ctx, c2, initial_state(c2));
  EXPECT_EQ(auto2.slab_threads(), 0);
  TrainConfig c3 = c2;
  c3.d_sae = 204;
  cuda::TrainStep auto3(ctx, c3, initial_state(c3));
  EXPECT_GT(auto3.slab_threads(), 0) << "aligned shapes sweep slabs by default";
}

TEST(CudaTrain, Tf32AndBf16TrackTheCpuLoosely) {
  SKIP_WITHOUT_GPU();
  const TrainConfig cfg = small_config();
  const int steps = 5;
  const std::vector<float> x = batches(cfg, steps);
  const size_t per = size_t(cfg.batch_size * cfg.d_in);
  TrainState cst = initial_state(cfg);
  cpu::TrainWorkspace ws;
  std::vector<StepMetrics> cm;
  for (int t = 0; t < steps; ++t) cm.push_back(cpu::train_step(cfg, &cst, x.data() + t * per, cfg.batch_size, &ws));
  cuda::Context ctx;
  DevVec<float> dx(x);
  for (cuda::EncoderGemm how : {cuda::EncoderGemm::cublas, cuda::EncoderGemm::lt})
  for (int64_t rows : {int64_t(0), int64_t(8)})  // the whole batch, then chunks of 8 rows (19 = 8 + 8 + 3)
  for (cuda::Precision p : {cuda::Precision::tf32, cuda::Precision::bf16}) {
    if (how == cuda::EncoderGemm::lt && rows == 0) continue;  // cublasLt in chunks only (emulation time)
    SCOPED_TRACE(::testing::Message() << cuda::precision_name(p) << ", encode_rows " << rows << ", "
                                      << cuda::encoder_gemm_name(how));
    cuda::TrainStep gpu(ctx, cfg, initial_state(cfg), {.precision = p, .encode_rows = rows, .encoder_gemm = how});
    for (int t = 0; t < steps; ++t) gpu.step(dx.p() + t * per, cfg.batch_size);
    const auto gm = gpu.drain_metrics();
    ASSERT_EQ(gm.size(), size_t(steps));
    for (int t = 0; t < steps; ++t) {
      EXPECT_TRUE(std::isfinite(gm[size_t(t)].overall_loss));
      EXPECT_LE(rel(gm[size_t(t)].mse_loss, cm[size_t(t)].mse_loss), 5e-2) << "step " << t;
    }
    TrainState gst;
    gpu.download(&gst);
    // Measured on the emulation: tf32 6e-4, bf16 0.059 of lr x steps; a bf16 copy of W_enc never
    // refreshed: 0.115.
    expect_params_track(gst.params, cst.params, initial_state(cfg).params, cfg.lr * steps,
                        p == cuda::Precision::tf32 ? 0.01 : 0.1);
  }
}

// The encoder GEMM through cublasLt (and, in fp32, the timed choice) against cuBLAS, step for step,
// in each precision and in chunks of 8 rows (19 = 8 + 8 + 3: two chunk shapes, each timed once): the
// same losses and weights up to the algorithms' summation order (bit-equal under the CUDA
// emulation, where every algorithm is the same host loop).
TEST(CudaTrain, EncoderGemmLtAndAutoAgreeWithCublas) {
  SKIP_WITHOUT_GPU();
  const TrainConfig cfg = small_config();
  const int steps = 5;
  const std::vector<float> x = batches(cfg, steps);
  const size_t per = size_t(cfg.batch_size * cfg.d_in);
  cuda::Context ctx;
  DevVec<float> dx(x);
  for (cuda::Precision p : {cuda::Precision::fp32, cuda::Precision::tf32, cuda::Precision::bf16}) {
    std::vector<StepMetrics> ref;
    TrainState ref_state;
    for (cuda::EncoderGemm how : {cuda::EncoderGemm::cublas, cuda::EncoderGemm::lt, cuda::EncoderGemm::automatic}) {
      if (how == cuda::EncoderGemm::automatic && p != cuda::Precision::fp32) continue;  // (emulation time)
      SCOPED_TRACE(::testing::Message() << cuda::precision_name(p) << ", " << cuda::encoder_gemm_name(how));
      cuda::TrainStep gpu(ctx, cfg, initial_state(cfg), {.precision = p, .encode_rows = 8, .encoder_gemm = how});
      for (int t = 0; t < steps; ++t) gpu.step(dx.p() + t * per, cfg.batch_size);
      const auto gm = gpu.drain_metrics();
      ASSERT_EQ(gm.size(), size_t(steps));
      TrainState gst;
      gpu.download(&gst);
      if (how == cuda::EncoderGemm::cublas) {
        ref = gm;
        ref_state = gst;
        for (const StepMetrics& m : gm) EXPECT_GT(m.mse_loss, 0.0);
        EXPECT_GT(gm.back().auxiliary_reconstruction_loss, 0.0) << "AuxK's dense GEMMs read the forward's h too";
        continue;
      }
      for (int t = 0; t < steps; ++t) {
        EXPECT_LE(rel(gm[size_t(t)].overall_loss, ref[size_t(t)].overall_loss), 1e-4) << "step " << t;
        EXPECT_LE(rel(gm[size_t(t)].grad_norm, ref[size_t(t)].grad_norm), 1e-4) << "step " << t;
        EXPECT_EQ(gm[size_t(t)].l0, ref[size_t(t)].l0) << "step " << t;
      }
      EXPECT_NONZERO(gst.params.W_enc);
      expect_params_close(gst.params, ref_state.params, 1e-5, 1e-3, "parameters");
    }
  }
}

// planned_bytes is the constructor's own plan: equal to what an object allocates, for each option
// that changes the buffers. At PERF.md's 2304 x 65536 shape (nothing allocated there), chunking
// the forward saves 3/4 of h's 1 GiB and brings the step within its 6 GiB target.
TEST(CudaTrain, PlannedBytesMatchTheAllocationAndMeetTheMemoryTarget) {
  SKIP_WITHOUT_GPU();
  const TrainConfig cfg = small_config();
  cuda::Context ctx;
  const std::vector<cuda::TrainStepOptions> cases = {
      {}, {.encode_rows = 4}, {.aux_dense_cap = 0}, {.precision = cuda::Precision::bf16, .max_batch = 40},
      {.slab_threads = -1, .encode_rows = -1}, {.encoder_gemm = cuda::EncoderGemm::lt}};
  for (const cuda::TrainStepOptions& o : cases) {
    SCOPED_TRACE(::testing::Message() << "encode_rows " << o.encode_rows << ", aux_dense_cap " << o.aux_dense_cap
                                      << ", max_batch " << o.max_batch);
    const size_t planned = cuda::TrainStep::planned_bytes(ctx, cfg, o);
    cuda::TrainStep step(ctx, cfg, initial_state(cfg), o);
    EXPECT_EQ(step.device_bytes(), planned);
    EXPECT_GT(planned, size_t(4 * 4) * size_t(cfg.d_sae * (2 * cfg.d_in + 1) + cfg.d_in))
        << "at least parameters, gradients and both moments";
  }

  TrainConfig big;
  big.d_in = 2304;
  big.d_sae = 65536;
  big.k = 64;
  big.batch_size = 4096;
  big.training_tokens = 4096 * 100;
  const size_t chunked = cuda::TrainStep::planned_bytes(ctx, big, {.precision = cuda::Precision::tf32});
  const size_t whole = cuda::TrainStep::planned_bytes(ctx, big, {.precision = cuda::Precision::tf32, .encode_rows = -1});
  const double GiB = double(size_t(1) << 30);
  // h shrinks from [4096, 65536] to [1024, 65536] floats (the auto rows at this shape).
  EXPECT_EQ(whole - chunked, size_t(4096 - 1024) * 65536 * 4);
  EXPECT_LE(double(chunked) / GiB, 6.0) << "PERF.md's memory target for this step";
  // Parameters, gradients and both moments alone are 4.5 GiB.
  EXPECT_GT(double(chunked) / GiB, 4.5);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTrain, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
