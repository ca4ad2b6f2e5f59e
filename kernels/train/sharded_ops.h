// Device ops of latent-sharded GPU training (docs/scaling.md, "The CUDA sharded step"): the
// exact global top-k from the ranks' local top-k lists. Rank r selects its best kk latents of its
// block [lo, lo + m) with topk_select (sorted in MATH.md's order: larger value first, equal values
// to the lower index, NaN as -inf), pack_candidates turns them into (value, global latent) pairs,
// the ranks all-gather the pairs (dist::DeviceCollectives), and merge_candidates merges the R
// sorted lists of each row into the global top-kk: the unsharded selection, ties included, since
// every latent of the global top-kk is in its own rank's top-kk.
// Pointers are device memory; shapes beside each argument.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace topksae::cuda::train {

// What travels in the all-gather; the layout of dist::Candidate (8 bytes).
struct Candidate {
  float value;
  int32_t latent;  // kNoCandidate pads a list when the rank has fewer latents than kk
};
inline constexpr int32_t kNoCandidate = INT32_MAX;

// cand [B, kk] = (val, lo + idx) of the first `take` slots of idx/val [B, ld] (topk_select's
// output with ld columns; take = min(kk, m)), then (-inf, kNoCandidate) padding. take_dev (device
// int32, may be null): take only min(take, *take_dev) slots (AuxK, whose top-k over a shard with
// fewer dead latents than k_aux leaves the slots past them unwritten).
void pack_candidates(cudaStream_t st, const int32_t* idx, const float* val, int64_t B, int64_t ld, int64_t take,
                     int64_t kk, int64_t lo, Candidate* cand, const int32_t* take_dev = nullptr);

// gathered [R, B, kk] (rank-major, each row's list sorted as topk_select sorts) -> out [B, kk]
// global latents and val [B, kk] of each row's global top-kk. One thread per row merges the R
// heads (R <= kMaxMergeRanks); padding sorts after every real candidate.
void merge_candidates(cudaStream_t st, const Candidate* gathered, int64_t R, int64_t B, int64_t kk, int32_t* out,
                      float* val);
inline constexpr int64_t kMaxMergeRanks = 64;

}  // namespace topksae::cuda::train
