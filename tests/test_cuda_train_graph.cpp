// The CUDA training step replayed as a CUDA graph (TrainStepOptions::cuda_graph) against the same
// step launched directly: every step's metrics and, after every step, the parameters, moments and
// statistics bit for bit, over steps whose graph key changes (the AuxK path and its dense shapes
// from the host's dead bound, a short batch) so that keys are run directly, captured, replayed and
// re-captured. The replays must have happened (GraphCounts) and the weights must move every step:
// a replay that ran nothing, or the previous step's work, would leave the two runs apart.
// Under the emulation the graph is the emulation's (tests/cuda_emu/README.md), not a GPU's.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cuda_runtime.h>

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

TrainConfig graph_config() {
  TrainConfig cfg;
  cfg.d_in = 37;  // AuxK's k = 18
  cfg.d_sae = 203;
  cfg.k = 5;
  cfg.batch_size = 19;
  cfg.lr = 3e-3;
  // A window above DeadBound::kLag: the host's bound moves from step kLag+1 on, so the AuxK path
  // and shapes (the graph's key) change during the run.
  cfg.dead_feature_window = 10;
  cfg.feature_sampling_window = 7;  // sparsity metrics at step 6 (outside the graph)
  cfg.training_tokens = 19 * 100;
  cfg.seed = 13;
  return cfg;
}

TrainState graph_state(const TrainConfig& cfg) {
  TrainState st = TrainState::initial(cfg);
  st.params.b_enc = randn(size_t(cfg.d_sae), 51, 0.05f);
  st.params.b_dec = randn(size_t(cfg.d_in), 52, 0.1f);
  st.scaling_factor = 1.3;
  for (int64_t j = 0; j < cfg.d_sae; ++j) st.stats.since_fired[size_t(j)] = j % 14;  // dead latents at once
  return st;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool same_params(const Params<float>& a, const Params<float>& b) {
  return same_bits(a.W_enc, b.W_enc) && same_bits(a.b_enc, b.b_enc) && same_bits(a.W_dec, b.W_dec) &&
         same_bits(a.b_dec, b.b_dec);
}

// A created stream for the Context (the legacy default stream cannot be captured).
struct OwnStream {
  cudaStream_t s = nullptr;
  OwnStream() { EXPECT_EQ(cudaStreamCreate(&s), cudaSuccess); }
  ~OwnStream() { (void)cudaStreamDestroy(s); }
};

struct GraphCase {
  const char* name;
  int64_t aux_cap;  // -1 / 0 as TrainStepOptions::aux_dense_cap; -2: both AuxK paths (computed)
  cuda::GradStorage storage;
  cuda::EncoderGemm egemm;
  cuda::Precision prec;
};
class CudaTrainGraph : public ::testing::TestWithParam<GraphCase> {};

TEST_P(CudaTrainGraph, ReplaysEqualDirectLaunches) {
  SKIP_WITHOUT_GPU();
  const GraphCase& gc = GetParam();
  const TrainConfig cfg = graph_config();
  const TrainState st0 = graph_state(cfg);
  // Rows per step: full batches and a short one twice (its key is captured and replayed too).
  const std::vector<int64_t> rows = {19, 19, 19, 11, 11, 11, 19, 19, 19, 19, 11, 19, 19};
  const int steps = int(rows.size());
  const size_t per = size_t(cfg.batch_size * cfg.d_in);
  const std::vector<float> x = randn(per * size_t(steps), 61, 2.f);
  int64_t cap = gc.aux_cap;
  if (cap == -2) {
    // As test_cuda_train_fused.cpp: steps 0..kLag are sized by the first state's near-dead count,
    // step kLag+1 by the count after step 0; a capacity at the smaller makes the larger gather.
    const int64_t b0 = train_detail::DeadBound::count_near(st0.stats.since_fired, cfg.dead_feature_window);
    TrainState cst = st0;
    cpu::TrainWorkspace ws;
    cpu::train_step(cfg, &cst, x.data(), rows[0], &ws);
    const int64_t b1 = train_detail::DeadBound::count_near(cst.stats.since_fired, cfg.dead_feature_window);
    ASSERT_NE(b0, b1) << "the bounds must differ for both paths to run";
    cap = std::min(b0, b1);
  }
  OwnStream os;
  cuda::Context ctx(os.s);
  DevVec<float> dx(x);
  cuda::TrainStepOptions o{.precision = gc.prec, .aux_dense_cap = cap, .grad_storage = gc.storage,
                           .encoder_gemm = gc.egemm};
  cuda::TrainStep direct(ctx, cfg, st0, o);
  o.cuda_graph = true;
  cuda::TrainStep graph(ctx, cfg, st0, o);
  EXPECT_EQ(graph.device_bytes(), cuda::TrainStep::planned_bytes(ctx, cfg, o));

  TrainState prev = st0;
  bool same_norms = true;
  for (int t = 0; t < steps; ++t) {
    SCOPED_TRACE(::testing::Message() << "step " << t << ", " << rows[size_t(t)] << " rows");
    const float* xt = dx.p() + size_t(t) * per;  // a new input pointer every step
    direct.step(xt, rows[size_t(t)]);
    graph.step(xt, rows[size_t(t)]);
    const std::vector<StepMetrics> md = direct.drain_metrics(), mg = graph.drain_metrics();
    ASSERT_EQ(md.size(), 1u);
    ASSERT_EQ(mg.size(), 1u);
    const StepMetrics &a = md[0], &b = mg[0];
    // Equal parameters (all norms equal so far) give equal losses.
    if (same_norms) {
      EXPECT_EQ(a.overall_loss, b.overall_loss);
      EXPECT_EQ(a.auxiliary_reconstruction_loss, b.auxiliary_reconstruction_loss);
      EXPECT_EQ(a.l0, b.l0);
    } else {
      EXPECT_LE(std::abs(a.overall_loss - b.overall_loss), 1e-5 * std::abs(a.overall_loss));
    }
    EXPECT_EQ(a.has_sparsity, b.has_sparsity);
    EXPECT_LE(std::abs(a.grad_norm - b.grad_norm), (same_norms ? 1e-12 : 1e-5) * a.grad_norm);
    same_norms = same_norms && a.grad_norm == b.grad_norm;
    TrainState sd, sg;
    direct.download(&sd);
    graph.download(&sg);
    EXPECT_FALSE(same_bits(sg.params.W_enc, prev.params.W_enc)) << "W_enc did not move";
    EXPECT_FALSE(same_bits(sg.params.W_dec, prev.params.W_dec)) << "W_dec did not move";
    if (same_norms) {
      EXPECT_TRUE(same_params(sg.params, sd.params)) << "parameters";
      EXPECT_TRUE(same_params(sg.adam_m, sd.adam_m)) << "adam m";
      EXPECT_TRUE(same_params(sg.adam_v, sd.adam_v)) << "adam v";
    } else {
      // A GPU summed the norm's block sums (atomics) in another order: a clip factor apart.
      EXPECT_ALLCLOSE(sg.params.W_enc.data(), sd.params.W_enc.data(), sd.params.W_enc.size(), 1e-7, 1e-5);
      EXPECT_ALLCLOSE(sg.params.W_dec.data(), sd.params.W_dec.data(), sd.params.W_dec.size(), 1e-7, 1e-5);
    }
    if (same_norms) {
      EXPECT_EQ(a.dead_features, b.dead_features);
      EXPECT_EQ(sg.stats.since_fired, sd.stats.since_fired);
      EXPECT_EQ(sg.stats.act_freq, sd.stats.act_freq);
    }
    EXPECT_EQ(sg.stats.n_frac_active, sd.stats.n_frac_active);
    prev = sg;
  }
#ifdef TOPKSAE_CUDA_EMU
  EXPECT_TRUE(same_norms) << "the emulation sums in order: graph and direct must agree bit for bit";
#endif
  const cuda::AuxPathCounts pd = direct.aux_path_counts(), pg = graph.aux_path_counts();
  EXPECT_EQ(pg.dense, pd.dense);
  EXPECT_EQ(pg.gather, pd.gather);
  EXPECT_GT(pg.dense + pg.gather, steps / 2) << "AuxK ran too rarely to exercise its graph keys";
  if (gc.aux_cap == -2) {
    EXPECT_GT(pg.dense, 0);
    EXPECT_GT(pg.gather, 0);
  }
  const cuda::GraphCounts g = graph.graph_counts();
  EXPECT_EQ(g.direct + g.replayed, steps);
  EXPECT_GE(g.captured, 2) << "the full and the short batch each make a key";
  EXPECT_GT(g.replayed, g.captured) << "graphs were captured but not reused";
  EXPECT_GE(g.direct, g.captured) << "a key is captured only on its second step";
  const cuda::GraphCounts none = direct.graph_counts();
  EXPECT_EQ(none.direct + none.captured + none.replayed, 0);
}

INSTANTIATE_TEST_SUITE_P(
    Cuda, CudaTrainGraph,
    ::testing::Values(GraphCase{"mixed_cap_stored", -2, cuda::GradStorage::stored, cuda::EncoderGemm::cublas,
                                cuda::Precision::fp32},
                      GraphCase{"dense_fused_lt", -1, cuda::GradStorage::fused, cuda::EncoderGemm::lt,
                                cuda::Precision::tf32},
                      GraphCase{"gather_bf16", 0, cuda::GradStorage::stored, cuda::EncoderGemm::cublas,
                                cuda::Precision::bf16}),
    [](const ::testing::TestParamInfo<GraphCase>& i) { return std::string(i.param.name); });

// More keys than the TrainStep keeps graphs for (8): the least recently used is replaced, and a
// replaced key that comes back is captured again (it ran directly once already). Final state and
// every step's loss as the direct run's.
TEST(CudaTrainGraphCache, ReplacesTheLeastRecentlyUsedGraph) {
  SKIP_WITHOUT_GPU();
  TrainConfig cfg = graph_config();
  cfg.d_in = 13;  // small: 21 steps twice stay cheap under the emulation
  cfg.d_sae = 71;
  cfg.k = 3;
  const TrainState st0 = graph_state(cfg);
  std::vector<int64_t> rows;
  for (int64_t b = 10; b <= 18; ++b) rows.insert(rows.end(), {b, b});  // 9 keys (one AuxK shape, see below)
  rows.insert(rows.end(), {10, 10, 10});                               // the first key, replaced by then
  const size_t per = size_t(cfg.batch_size * cfg.d_in);
  const std::vector<float> x = randn(per * rows.size(), 62, 1.f);
  OwnStream os;
  cuda::Context ctx(os.s);
  DevVec<float> dx(x);
  // Gather path only (capacity 0), so the AuxK shapes never change: the keys are the row counts.
  cuda::TrainStepOptions o{.aux_dense_cap = 0};
  cuda::TrainStep direct(ctx, cfg, st0, o);
  o.cuda_graph = true;
  cuda::TrainStep graph(ctx, cfg, st0, o);
  for (size_t t = 0; t < rows.size(); ++t) {
    direct.step(dx.p() + t * per, rows[t]);
    graph.step(dx.p() + t * per, rows[t]);
  }
  const std::vector<StepMetrics> md = direct.drain_metrics(), mg = graph.drain_metrics();
  ASSERT_EQ(md.size(), rows.size());
  ASSERT_EQ(mg.size(), rows.size());
  bool same_norms = true;
  for (size_t t = 0; t < rows.size() && same_norms; ++t) {
    EXPECT_EQ(mg[t].overall_loss, md[t].overall_loss) << "step " << t;
    same_norms = mg[t].grad_norm == md[t].grad_norm;
  }
  const cuda::GraphCounts g = graph.graph_counts();
  EXPECT_EQ(g.direct, 9);
  EXPECT_EQ(g.captured, 10);
  EXPECT_EQ(g.replayed, 12);
  EXPECT_EQ(graph.aux_path_counts().gather, int64_t(rows.size()));
  TrainState sd, sg;
  direct.download(&sd);
  graph.download(&sg);
  EXPECT_NONZERO(sg.adam_v.W_enc);
#ifdef TOPKSAE_CUDA_EMU
  EXPECT_TRUE(same_norms);
#endif
  if (same_norms) {
    EXPECT_TRUE(same_params(sg.params, sd.params));
    EXPECT_TRUE(same_params(sg.adam_v, sd.adam_v));
  }
}

// CUDA cannot capture the legacy default stream: refused when the TrainStep is built.
TEST(CudaTrainGraphStream, DefaultStreamIsRefused) {
  SKIP_WITHOUT_GPU();
  const TrainConfig cfg = graph_config();
  cuda::Context ctx;
  EXPECT_THROW(cuda::TrainStep(ctx, cfg, graph_state(cfg), {.cuda_graph = true}), Error);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTrainGraph, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
