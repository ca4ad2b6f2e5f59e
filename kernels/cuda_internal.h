// Internal to the CUDA backend: scratch slot names, handle accessors, launch helpers.
#pragma once
#include <cstdint>

#include "common/launch_shape.h"  // widest_slab_threads
#include "cuda_check.h"
#include "topksae/ops_cuda.h"

namespace topksae::cuda::detail {

// Scratch slots of Context::scratch. Each op owns its slots, so two ops never share one.
enum Slot : int {
  kSlotU = 0,          // process_sae_in output inside encode_topk
  kSlotH,              // pre-activations inside encode_topk
  kSlotUBf16,          // bf16 copy of u for the bf16 GEMM
  kSlotSpmmWork,       // cuSPARSE SpMM workspace
  kSlotIdx32,          // int32 copies of CSR/COO row indices for cuSPARSE
  kSlotScanTmp,        // CUB scan temporary storage
  kSlotRowCount,       // per-row non-zero counts [rows + 1]
  kSlotRowOffsets,     // row offsets for COO [rows + 1]
  kSlotLtWorkspace,    // cublasLt's workspace for the encoder GEMM (gemm_lt.h)
  kSlotCount
};

inline cudaStream_t stream(const Context& ctx) { return reinterpret_cast<cudaStream_t>(ctx.stream()); }
inline cublasHandle_t cublas(const Context& ctx) { return static_cast<cublasHandle_t>(ctx.cublas_handle()); }
inline cusparseHandle_t cusparse(const Context& ctx) { return static_cast<cusparseHandle_t>(ctx.cusparse_handle()); }

inline unsigned grid_for(int64_t n, int threads, int64_t cap = 65535LL * 16) {
  int64_t g = (n + threads - 1) / threads;
  if (g < 1) g = 1;
  return unsigned(g < cap ? g : cap);
}

// Exclusive scan of int64 [n] into out [n] on the stream (CUB, temp storage in kSlotScanTmp).
void exclusive_scan_i64(Context& ctx, const int64_t* in, int64_t* out, int64_t n);
// Dense cuBLAS GEMM, row-major: C[M,N] = alpha*A[M,K] @ B[K,N] + beta*C, f32 in/out.
void gemm_rowmajor(Context& ctx, const float* A, const float* B, float* C, int64_t M, int64_t K, int64_t N,
                   float beta, Precision p);
// The general form: C[M,N] = op(A) @ op(B) + beta*C, op(A) [M,K] (A stored [K,M] when tA), op(B)
// [K,N] (B stored [N,K] when tB); lda / ldb / ldc are the stored rows' lengths. fp32 or tf32.
void gemm_rowmajor_ex(Context& ctx, bool tA, bool tB, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc, Precision p);
// out[b, :] = bias (or 0 when bias is null), out [B, d].
void fill_rows(Context& ctx, float* out, const float* bias, int64_t B, int64_t d);

}  // namespace topksae::cuda::detail
