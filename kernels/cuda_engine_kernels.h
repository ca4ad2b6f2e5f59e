// Small kernels of the CUDA inference engine (kernels/cuda_engine.cpp) that the op twins do not
// provide: the per-row input/output normalisations (CPU twin: src/cpu/normalize.cpp), scatter of
// top-k pairs into a dense z, CSR building into caller memory, a CSR gather decode over caller
// arrays, element-wise error-term arithmetic, and guards that check caller codes on the device.
// All run asynchronously on the Context's stream.
#pragma once
#include <cstdint>

#include "topksae/ops_cuda.h"

namespace topksae::cuda::engine {

// u = normalize_in(x) - b_dec (b_dec may be null), u/x [B, d]. For constant_norm_rescale and
// layer_norm also writes the per-row statistics scale/shift [B] as cpu::normalize_in does.
void sae_in(Context& ctx, Normalize mode, const float* x, const float* b_dec, int64_t B, int64_t d, float* u,
            float* scale, float* shift);
// Undoes the normalisation on xhat [B, d] in place (no-op for none / expected_average_only_in).
void sae_out(Context& ctx, Normalize mode, float* xhat, int64_t B, int64_t d, const float* scale,
             const float* shift);
// z [B, n] = 0 with z[b, idx[b, i]] = val[b, i].
void scatter_dense(Context& ctx, const int32_t* idx, const float* val, int64_t B, int64_t k, int64_t n, float* z);
// counts [B + 1]: non-zero values per row of val [B, k], counts[B] = 0 (an exclusive scan of it
// is a CSR indptr).
void count_nonzero(Context& ctx, const float* val, int64_t B, int64_t k, int64_t* counts);
// The non-zero pairs of each row, in order, at indptr[b] of cols / vals.
void compact_pairs(Context& ctx, const int32_t* idx, const float* val, int64_t B, int64_t k, const int64_t* indptr,
                   int32_t* cols, float* vals);
// out [B, d] = bias + sum over row b's entries of val * W[idx] (W [n, d]); zero values add nothing.
void csr_decode(Context& ctx, const float* W, const float* bias, const int64_t* indptr, const int32_t* idx,
                const float* val, int64_t B, int64_t d, float* out);
// e = x - e and out = out + e, [n] each.
void sub_from(Context& ctx, const float* x, float* e, int64_t n);
void add_to(Context& ctx, float* out, const float* e, int64_t n);
// Guards for codes the caller passes in device memory: set *bad (device int32, zeroed by the
// caller) to 1 when an index is outside [0, d_sae), or when indptr is not a CSR offset array
// (indptr[0] != 0 or decreasing).
void check_latents(Context& ctx, const int32_t* idx, int64_t count, int64_t d_sae, int32_t* bad);
void check_indptr(Context& ctx, const int64_t* indptr, int64_t B, int32_t* bad);

}  // namespace topksae::cuda::engine
