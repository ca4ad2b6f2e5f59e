// The global top-k of latent-sharded GPU training from the ranks' sorted candidate lists
// (kernels/train/sharded_ops.h). CPU twin: the merge in src/dist/sharded_topk.cpp (a partial sort
// of the R lists by the same order).
#include <cmath>

#include "cuda_internal.h"
#include "train/sharded_ops.h"
#include "topksae/error.h"

namespace topksae::cuda::train {

namespace {

// MATH.md's order: a before c when its value is larger, or equal with the lower latent; NaN
// ranks as -inf; padding (kNoCandidate, -inf) after every real candidate, -inf ones included.
__device__ __forceinline__ bool before(const Candidate& a, const Candidate& c) {
  const float ka = isnan(a.value) ? -INFINITY : a.value;
  const float kc = isnan(c.value) ? -INFINITY : c.value;
  return ka > kc || (ka == kc && a.latent < c.latent);
}

__global__ void pack_kernel(const int32_t* __restrict__ idx, const float* __restrict__ val, int64_t B, int64_t ld,
                            int64_t take, int64_t kk, int64_t lo, Candidate* __restrict__ cand,
                            const int32_t* __restrict__ take_dev) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= B * kk) return;
  const int64_t b = i / kk, s = i % kk;
  if (take_dev != nullptr && *take_dev < take) take = *take_dev;
  Candidate c;
  if (s < take) {
    c.value = val[b * ld + s];
    c.latent = int32_t(lo + idx[b * ld + s]);
  } else {
    c.value = -INFINITY;
    c.latent = kNoCandidate;
  }
  cand[i] = c;
}

__global__ void merge_kernel(const Candidate* __restrict__ g, int64_t R, int64_t B, int64_t kk,
                             int32_t* __restrict__ out, float* __restrict__ val) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  int32_t head[kMaxMergeRanks];  // next unread slot of each rank's list for row b
  for (int64_t q = 0; q < R; ++q) head[q] = 0;
  for (int64_t s = 0; s < kk; ++s) {
    int64_t best = -1;
    Candidate bc{};
    for (int64_t q = 0; q < R; ++q) {
      if (head[q] >= kk) continue;
      const Candidate c = g[(q * B + b) * kk + head[q]];
      if (best < 0 || before(c, bc)) {
        best = q;
        bc = c;
      }
    }
    // R lists of kk hold R * kk >= kk entries, so some head is always left.
    ++head[best];
    out[b * kk + s] = bc.latent;
    val[b * kk + s] = bc.value;
  }
}

}  // namespace

void pack_candidates(cudaStream_t st, const int32_t* idx, const float* val, int64_t B, int64_t ld, int64_t take,
                     int64_t kk, int64_t lo, Candidate* cand, const int32_t* take_dev) {
  TOPKSAE_CHECK(take >= 0 && take <= kk && take <= ld, "pack_candidates: take ", take, " with kk ", kk, ", ld ", ld);
  if (B * kk == 0) return;
  const int threads = 256;
  pack_kernel<<<unsigned((B * kk + threads - 1) / threads), threads, 0, st>>>(idx, val, B, ld, take, kk, lo, cand,
                                                                                      take_dev);
  CUDA_CHECK_LAUNCH();
}

void merge_candidates(cudaStream_t st, const Candidate* gathered, int64_t R, int64_t B, int64_t kk, int32_t* out,
                      float* val) {
  TOPKSAE_CHECK(R >= 1 && R <= kMaxMergeRanks, "merge_candidates: ", R, " ranks (at most ", kMaxMergeRanks, ")");
  if (B * kk == 0) return;
  const int threads = 128;
  merge_kernel<<<unsigned((B + threads - 1) / threads), threads, 0, st>>>(gathered, R, B, kk, out, val);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda::train
