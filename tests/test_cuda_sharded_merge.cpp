// The sharded top-k's device half (kernels/train/sharded_merge.cu): R shards of a row (uneven, one
// smaller than k so its list is padded), each shard's topk_select, pack_candidates into global
// (value, latent) pairs laid out as the all-gather leaves them [R, B, kk], merge_candidates: the
// result must equal topk_select over the whole row, indices and values in order, ties included
// (values drawn from few levels, so most rows tie across shard borders) and with NaN and -inf.
// The collective itself is tested in tests/mpi/nccl_collectives_test.cpp.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "cuda_test_util.h"
#include "topksae/ops_cuda.h"
#include "train/sharded_ops.h"

namespace topksae::test {
namespace {

// The unsharded and sharded selections of h [B, n] with the given shard sizes; compares them.
void expect_sharded_equals_unsharded(const std::vector<float>& h, int64_t B, int64_t n, int64_t kk,
                                     const std::vector<int64_t>& sizes) {
  cuda::Context ctx;
  const cudaStream_t st = reinterpret_cast<cudaStream_t>(ctx.stream());
  DevVec<float> dh(h);
  DevVec<int32_t> want_i(size_t(B * kk));
  DevVec<float> want_v(size_t(B * kk));
  cuda::topk_select(ctx, dh.p(), B, n, kk, want_i.p(), want_v.p());

  const int64_t R = int64_t(sizes.size());
  DevVec<cuda::train::Candidate> gathered(size_t(R * B * kk));
  int64_t lo = 0;
  for (int64_t q = 0; q < R; ++q) {
    const int64_t m = sizes[size_t(q)], take = std::min(kk, m);
    std::vector<float> hs(size_t(B * m));  // the shard's columns [B, m]
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < m; ++j) hs[size_t(b * m + j)] = h[size_t(b * n + lo + j)];
    DevVec<float> dhs(hs);
    DevVec<int32_t> li(size_t(B * take));
    DevVec<float> lv(size_t(B * take));
    cuda::topk_select(ctx, dhs.p(), B, m, take, li.p(), lv.p());
    cuda::train::pack_candidates(st, li.p(), lv.p(), B, take, take, kk, lo, gathered.p() + q * B * kk);
    ctx.synchronize();
    lo += m;
  }
  ASSERT_EQ(lo, n);
  DevVec<int32_t> got_i(std::vector<int32_t>(size_t(B * kk), -1));
  DevVec<float> got_v(std::vector<float>(size_t(B * kk), -123.f));
  cuda::train::merge_candidates(st, gathered.p(), R, B, kk, got_i.p(), got_v.p());
  ctx.synchronize();
  const std::vector<int32_t> wi = want_i.get(), gi = got_i.get();
  const std::vector<float> wv = want_v.get(), gv = got_v.get();
  ASSERT_EQ(gi, wi) << "R=" << R << " B=" << B << " n=" << n << " kk=" << kk;
  for (size_t i = 0; i < wv.size(); ++i) {
    if (std::isnan(wv[i]))
      EXPECT_TRUE(std::isnan(gv[i])) << "at " << i;
    else
      EXPECT_EQ(gv[i], wv[i]) << "at " << i;
  }
  int64_t real = 0;  // an all-padding or all-zero answer must not pass
  for (size_t i = 0; i < gi.size(); ++i) real += gi[i] >= 0 && gi[i] < n && gv[i] != 0.f;
  EXPECT_GT(real, B * kk / 2);
}

TEST(CudaShardedMerge, EqualsUnshardedTopKWithTies) {
  SKIP_WITHOUT_GPU();
  const int64_t B = 37, n = 203, kk = 9;
  std::mt19937_64 rng(20);
  std::uniform_int_distribution<int> level(-6, 6);  // 13 levels over 203 latents: ties everywhere
  std::vector<float> h(size_t(B * n));
  for (float& v : h) v = 0.25f * float(level(rng)) + (level(rng) == 0 ? 0.125f : 0.f);
  h[5] = std::numeric_limits<float>::quiet_NaN();
  h[size_t(n) + 7] = -INFINITY;
  // Uneven shards as dist::shard_range gives them (R = 2, 3), one of 5 latents (< kk: padded),
  // and the unsharded case R = 1.
  expect_sharded_equals_unsharded(h, B, n, kk, {102, 101});
  expect_sharded_equals_unsharded(h, B, n, kk, {68, 68, 67});
  expect_sharded_equals_unsharded(h, B, n, kk, {100, 5, 98});
  expect_sharded_equals_unsharded(h, B, n, kk, {203});
}

TEST(CudaShardedMerge, RowsOfMinusInfinityKeepLatentOrder) {
  SKIP_WITHOUT_GPU();
  // Every value -inf: the global top-kk is the kk lowest latents, never a padding slot.
  const int64_t B = 3, n = 20, kk = 6;
  std::vector<float> h(size_t(B * n), -INFINITY);
  for (int64_t b = 0; b < B; ++b) h[size_t(b * n + 19)] = 1.0f;  // one real winner per row
  expect_sharded_equals_unsharded(h, B, n, kk, {4, 4, 12});
}

}  // namespace
}  // namespace topksae::test
#endif  // TOPKSAE_HAS_CUDA
