// The CPU backend: the reference twin of every op (the CUDA twins in kernels/ carry the same names
// in namespace topksae::cuda). Float32, row-major, OpenMP over rows where a loop is hot.
// The formulas are those of shared/spec/MATH.md (sae_lens 6.13.1 TopKSAE).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "topksae/sae.h"

namespace topksae::cpu {

// ---- sparse representations of the codes z [rows, d_sae] ------------------------------------
// Top-k pairs: each row's k selected latents, values after ReLU, sorted by value descending
// (ties: lower index first). A selected latent whose pre-activation was <= 0 keeps its slot with
// value 0, which is why L0 can be < k.
struct TopKCodes {
  int64_t rows = 0, k = 0, d_sae = 0;
  std::vector<int32_t> indices;  // [rows, k]
  std::vector<float> values;     // [rows, k]
};
// Compressed sparse rows; zeros dropped.
struct Csr {
  int64_t rows = 0, cols = 0;
  std::vector<int64_t> indptr;   // [rows + 1]
  std::vector<int32_t> indices;  // [nnz]
  std::vector<float> values;     // [nnz]
};
// Coordinate list, row-major order; zeros dropped.
struct Coo {
  int64_t rows = 0, cols = 0;
  std::vector<int64_t> row;      // [nnz]
  std::vector<int32_t> col;      // [nnz]
  std::vector<float> values;     // [nnz]
};

Csr topk_to_csr(const TopKCodes& codes);
Coo topk_to_coo(const TopKCodes& codes);
std::vector<float> topk_to_dense(const TopKCodes& codes);  // [rows, d_sae]

// ---- dense building blocks --------------------------------------------------------------------
// C[M,N] = beta*C + A[M,K] @ B[K,N], all row-major. beta is 0 or 1. oneDNN's sgemm does the work.
void gemm(const float* A, const float* B, float* C, int64_t M, int64_t K, int64_t N, float beta);

// Which library runs gemm on this machine and which kernels it picked, for diagnosing a slow CPU
// (`topksae info --system`, the bench headers).
struct GemmLibraryInfo {
  std::string library, version;  // "oneDNN", "2.6.3"
  std::string isa;               // the instruction set its kernels use here, e.g. "avx512_core"
  std::string threading;         // its threading runtime ("OpenMP": shared with our loops)
  int threads = 0;               // threads a GEMM uses (omp_get_max_threads)
  std::string str() const;       // one line with all of the above
};
GemmLibraryInfo gemm_library_info();

// Per-row statistics of the input normalisation, kept to undo it on the output.
// constant_norm_rescale: scale = c_b; layer_norm: scale = std_b (without eps), shift = mu_b.
struct NormStats {
  std::vector<float> scale;  // [rows]
  std::vector<float> shift;  // [rows]
};
// x [B, d_in] -> out [B, d_in] (out may alias x).
void normalize_in(Normalize mode, const float* x, int64_t B, int64_t d_in, float* out, NormStats* stats);
// Undoes normalize_in on a reconstruction in place.
void normalize_out(Normalize mode, float* xhat, int64_t B, int64_t d_in, const NormStats& stats);

// u = normalize_in(x) - a * b_dec, u [B, d_in].
void process_sae_in(const Sae& sae, const float* x, int64_t B, float* u, NormStats* stats);
// h = u @ W_enc + b_enc, h [B, d_sae]: the pre-activations.
void encode_pre(const Sae& sae, const float* u, int64_t B, float* h);
// Per row of h [B, n]: the k largest RAW values (before ReLU), sorted descending, ties to the
// lower index. idx/val [B, k]. Also used by AuxK over a masked h.
void topk_select(const float* h, int64_t B, int64_t n, int64_t k, int32_t* idx, float* val);
// The same without allocating: `scratch` holds threads * n int32 (one row of candidates per
// thread) and at most `threads` (>= 1) OpenMP threads run. The inference API uses this form.
void topk_select(const float* h, int64_t B, int64_t n, int64_t k, int32_t* idx, float* val, int32_t* scratch,
                 int threads);

// ---- the TopK SAE ops ---------------------------------------------------------------------------
// x [B, d_in] -> top-k pairs (values after ReLU).
TopKCodes encode_topk(const Sae& sae, const float* x, int64_t B);
// x [B, d_in] -> z [B, d_sae] dense.
std::vector<float> encode_dense(const Sae& sae, const float* x, int64_t B);

// Decode without the output normalisation: out [B, d_in] = z @ W_dec + b_dec.
void decode_dense(const Sae& sae, const float* z, int64_t B, float* out);
void decode_topk(const Sae& sae, const TopKCodes& codes, float* out);
void decode_csr(const Sae& sae, const Csr& csr, float* out);
void decode_coo(const Sae& sae, const Coo& coo, float* out);
// Raw-pointer forms that allocate nothing (the inference API's hot path). Indices are checked.
// Top-k pairs idx/val [B, k] (any width k >= 1); CSR indptr [B + 1], indices/values [indptr[B]].
void decode_topk(const Sae& sae, const int32_t* idx, const float* val, int64_t B, int64_t k, float* out);
void decode_csr(const Sae& sae, const int64_t* indptr, const int32_t* indices, const float* values, int64_t B,
                float* out);

// Full forward: x [B, d_in] -> out [B, d_in]: encode, decode, undo normalisation; with
// use_error_term the output is xhat + (x - xhat), as sae_lens computes it.
void forward(const Sae& sae, const float* x, int64_t B, float* out, bool use_error_term = false);

// Refused for TopK SAEs: rescaling decoder rows would change which latents win the top-k.
[[noreturn]] void fold_W_dec_norm(Sae& sae);

// The mixing buffer's serving step (src/data/live_source.cpp's device store): out row i = rows
// row slots[i], for rows [capacity, d], slots [n] (each in [0, capacity)), out [n, d].
void gather_rows(const float* rows, int64_t d, const int64_t* slots, int64_t n, float* out);

}  // namespace topksae::cpu
