// The train step's dead-latent bookkeeping (kernels/train/update_dead_stats.cu) against its CPU
// twins: the dead mask (cpu::dead_mask), the firing counts and since_fired after a forward
// (cpu::update_dead_stats) with the counts the device reports, and the sparsity metrics
// (log_feature_sparsity). d_sae = 1000 spans several blocks of 256 and ends mid-block.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cmath>
#include <random>

#include "cuda_train_test_util.h"
#include "topksae/train.h"
#include "train/dead_bound.h"

namespace topksae::test {
namespace {

constexpr int64_t kN = 1000, kB = 23, kK = 7, kWindow = 9;

TEST(CudaUpdateDeadStats, DeadMaskFiringAndSinceFiredMatchTheCpuTwins) {
  SKIP_WITHOUT_GPU();
  cuda::Context ctx;
  const cudaStream_t st = reinterpret_cast<cudaStream_t>(ctx.stream());
  std::mt19937_64 rng(3);
  SparsityStats s = SparsityStats::zeros(kN);
  for (int64_t j = 0; j < kN; ++j) {
    s.since_fired[size_t(j)] = int64_t(rng() % (2 * kWindow + 3));
    s.act_freq[size_t(j)] = int64_t(rng() % 50);
  }
  s.n_frac_active = 400;
  // A forward's selections: k distinct latents per row, about a fifth with z == 0 (no firing).
  TrainForward<float> f;
  f.B = kB, f.k = kK, f.d_sae = kN;
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t i = 0; i < kK; ++i) {
      f.idx.push_back(int32_t((b * 131 + i * 37 + 5) % kN));
      f.z.push_back(rng() % 5 == 0 ? 0.f : 0.1f + float(i));
    }

  DevVec<int64_t> since(s.since_fired), act(s.act_freq);
  DevVec<uint8_t> dead(static_cast<size_t>(kN)), fired(std::vector<uint8_t>(static_cast<size_t>(kN), 0));
  DevVec<int32_t> dead32(static_cast<size_t>(kN)), idx(f.idx);
  DevVec<float> z(f.z);
  DevRecord rec;
  cuda::train::dead_mask(st, since.p(), kN, kWindow, dead.p(), dead32.p(), rec.M());
  cuda::train::mark_fired(st, idx.p(), z.p(), kB * kK, fired.p(), act.p());
  cuda::train::update_since(st, since.p(), fired.p(), kN, kWindow, rec.M());
  ctx.synchronize();

  std::vector<uint8_t> dead_cpu(static_cast<size_t>(kN));
  const int64_t n_dead = cpu::dead_mask(s, kWindow, dead_cpu.data());
  ASSERT_GT(n_dead, 0);
  ASSERT_LT(n_dead, kN);
  EXPECT_EQ(dead.get(), dead_cpu);
  const std::vector<int32_t> d32 = dead32.get();
  for (int64_t j = 0; j < kN; ++j) ASSERT_EQ(d32[size_t(j)], int32_t(dead_cpu[size_t(j)])) << j;
  cpu::update_dead_stats(f, &s);
  EXPECT_EQ(since.get(), s.since_fired);
  EXPECT_EQ(act.get(), s.act_freq);
  EXPECT_EQ(fired.get(), std::vector<uint8_t>(static_cast<size_t>(kN), 0)) << "fired is reset for the next step";

  const cuda::train::DevMetrics M = rec.get().metrics;
  EXPECT_EQ(int64_t(M.n_dead_before), n_dead);
  int64_t dead_after = 0, since_sum = 0, near = 0;
  for (int64_t v : s.since_fired) {
    dead_after += v > kWindow;
    since_sum += v;
  }
  near = train_detail::DeadBound::count_near(s.since_fired, kWindow);
  EXPECT_EQ(int64_t(M.dead_after), dead_after);
  EXPECT_EQ(int64_t(M.since_sum), since_sum);
  EXPECT_EQ(int64_t(M.near_dead), near);
  EXPECT_GT(near, dead_after);  // the bound's window is wider
}

TEST(CudaUpdateDeadStats, SparsityMetricsMatchLogFeatureSparsity) {
  SKIP_WITHOUT_GPU();
  cuda::Context ctx;
  SparsityStats s = SparsityStats::zeros(kN);
  s.n_frac_active = 300000;
  for (int64_t j = 0; j < kN; ++j) s.act_freq[size_t(j)] = j % 3 == 0 ? 0 : (j % 7 == 0 ? 2 : 17 * j);
  DevVec<int64_t> act(s.act_freq);
  DevRecord rec;
  cuda::train::sparsity_metrics(reinterpret_cast<cudaStream_t>(ctx.stream()), act.p(), kN, double(s.n_frac_active),
                                rec.M());
  ctx.synchronize();
  const cuda::train::DevMetrics M = rec.get().metrics;
  const std::vector<float> ls = log_feature_sparsity(s);
  double sum = 0;
  int64_t b5 = 0, b6 = 0;
  for (int64_t j = 0; j < kN; ++j) {
    sum += double(ls[size_t(j)]);
    // As cpu::train_step counts them: on the float density.
    const float density = float(s.act_freq[size_t(j)]) / float(s.n_frac_active);
    b5 += density < 1e-5f;
    b6 += density < 1e-6f;
  }
  // log10f on a GPU is within 2 ulp: a few 1e-6 per latent (|log10| <= 10).
  EXPECT_NEAR(M.log10_sparsity_sum, sum, 4e-6 * double(kN));
  EXPECT_EQ(int64_t(M.below5), b5);
  EXPECT_EQ(int64_t(M.below6), b6);
  EXPECT_GT(b5, b6);  // the data has densities in (1e-6, 1e-5) too
  EXPECT_GT(b6, 0);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaUpdateDeadStats, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
