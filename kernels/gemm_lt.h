// The encoder GEMM (h = u @ W_enc, the training step's and the encode op's largest cost) through
// cuBLAS or cublasLt (EncoderGemm, topksae/precision.h). Host code only.
//
// cublasLt: for each problem (precision, M, N, K, bias or not, the operands' alignments, device)
// the first call in the process asks cublasLtMatmulAlgoGetHeuristic for up to kLtCandidates
// algorithms, times each on the caller's own buffers with CUDA events (kLtWarmupRuns, then
// kLtTimedRuns runs) and keeps the fastest; later calls reuse it without synchronising. With
// EncoderGemm::automatic the cuBLAS call is timed the same way and the faster of the two is kept.
// The bias, when given, is cublasLt's BIAS epilogue (one pass over C fewer than cuBLAS's bias
// fill + beta = 1). The workspace (kLtWorkspaceBytes) is the Context's scratch slot
// kSlotLtWorkspace, like cuBLAS's own workspace outside TrainStep's planned bytes.
// A first call for a new problem synchronises the Context's stream (the timing): prepare it
// (encoder_gemm_prepare) where a synchronisation is free, e.g. when a TrainStep is built.
#pragma once
#include <cstddef>
#include <cstdint>

#include "topksae/ops_cuda.h"

namespace topksae::cuda::detail {

constexpr int kLtCandidates = 8;
#ifdef TOPKSAE_CUDA_EMU
// The emulation's times are host times and mean nothing: one untimed-warm-up-free run per
// candidate keeps its tests short (each still checks that the candidate runs).
constexpr int kLtWarmupRuns = 0, kLtTimedRuns = 1;
#else
constexpr int kLtWarmupRuns = 1, kLtTimedRuns = 5;
#endif
constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;  // cuBLAS's own default on Hopper

// Row-major, contiguous rows: C [M, N] = A [M, K] @ B [K, N] (+ bias [N] on every row when bias is
// not null). A and B are fp32 for Precision fp32 / tf32 and bf16 bits (uint16) for bf16; C is fp32.
// The cublas form is the one the project always used (cublasGemmEx; the bias by fill_rows, then
// beta = 1).
void encoder_gemm(Context& ctx, EncoderGemm how, Precision p, int64_t M, int64_t N, int64_t K, const void* A,
                  const void* B, const float* bias, float* C);

// What the timed selection found for a problem (for the benches and tests).
struct EncoderGemmChoice {
  bool use_lt = false;     // automatic: cublasLt was faster; lt: always true
  int candidates = 0;      // algorithms the heuristic returned
  int algo_rank = -1;      // the kept one's place in the heuristic's order (0: its first choice)
  size_t workspace = 0;    // bytes the kept algorithm needs
  float lt_ms = 0;         // the kept algorithm's time per call (the timed selection's)
  float cublas_ms = 0;     // automatic only: cuBLAS's time per call, timed the same way
};
// Selects (times) the algorithm for this problem now if no earlier call did, and returns the
// choice (how = cublas: nothing to select, a default EncoderGemmChoice). C is overwritten.
EncoderGemmChoice encoder_gemm_prepare(Context& ctx, EncoderGemm how, Precision p, int64_t M, int64_t N, int64_t K,
                                       const void* A, const void* B, const float* bias, float* C);

}  // namespace topksae::cuda::detail
