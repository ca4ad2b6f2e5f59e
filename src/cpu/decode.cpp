// CPU twins of decode from dense codes, top-k pairs, CSR and COO: out = z @ W_dec + b_dec.
// The sparse forms read only the W_dec rows they name.
#include <algorithm>

#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu {

namespace {
void fill_bias(const Sae& sae, int64_t B, float* out) {
  const int64_t d = sae.cfg.d_in;
  const float* b_dec = sae.params.b_dec.data();
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b) std::copy(b_dec, b_dec + d, out + b * d);
}
inline void axpy(float a, const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}
void check_latent(int64_t j, int64_t d_sae) {
  TOPKSAE_CHECK(j >= 0 && j < d_sae, "decode: latent index ", j, " out of range [0, ", d_sae, ")");
}
}  // namespace

void decode_dense(const Sae& sae, const float* z, int64_t B, float* out) {
  sae.params.check_shapes(sae.cfg);
  fill_bias(sae, B, out);
  gemm(z, sae.params.W_dec.data(), out, B, sae.cfg.d_sae, sae.cfg.d_in, 1.f);
}

void decode_topk(const Sae& sae, const TopKCodes& c, float* out) {
  sae.params.check_shapes(sae.cfg);
  TOPKSAE_CHECK(c.d_sae == sae.cfg.d_sae, "decode: codes have d_sae=", c.d_sae, ", the SAE has ", sae.cfg.d_sae);
  for (int32_t j : c.indices) check_latent(j, c.d_sae);
  const int64_t d = sae.cfg.d_in;
  fill_bias(sae, c.rows, out);
#pragma omp parallel for
  for (int64_t b = 0; b < c.rows; ++b)
    for (int64_t i = 0; i < c.k; ++i) {
      const float v = c.values[size_t(b * c.k + i)];
      if (v != 0.f) axpy(v, sae.params.W_dec.data() + int64_t(c.indices[size_t(b * c.k + i)]) * d, out + b * d, d);
    }
}

void decode_csr(const Sae& sae, const Csr& s, float* out) {
  sae.params.check_shapes(sae.cfg);
  TOPKSAE_CHECK(s.cols == sae.cfg.d_sae, "decode: CSR has ", s.cols, " columns, the SAE has d_sae=", sae.cfg.d_sae);
  TOPKSAE_CHECK(s.indptr.size() == size_t(s.rows + 1) && s.indptr.front() == 0 &&
                    s.indptr.back() == int64_t(s.indices.size()) && s.indices.size() == s.values.size(),
                "decode: malformed CSR (indptr/indices/values sizes disagree)");
  for (int64_t b = 0; b < s.rows; ++b)
    TOPKSAE_CHECK(s.indptr[size_t(b)] <= s.indptr[size_t(b + 1)], "decode: CSR indptr decreases at row ", b);
  for (int32_t j : s.indices) check_latent(j, s.cols);
  const int64_t d = sae.cfg.d_in;
  fill_bias(sae, s.rows, out);
#pragma omp parallel for
  for (int64_t b = 0; b < s.rows; ++b)
    for (int64_t p = s.indptr[size_t(b)]; p < s.indptr[size_t(b + 1)]; ++p)
      axpy(s.values[size_t(p)], sae.params.W_dec.data() + int64_t(s.indices[size_t(p)]) * d, out + b * d, d);
}

void decode_coo(const Sae& sae, const Coo& s, float* out) {
  sae.params.check_shapes(sae.cfg);
  TOPKSAE_CHECK(s.cols == sae.cfg.d_sae, "decode: COO has ", s.cols, " columns, the SAE has d_sae=", sae.cfg.d_sae);
  TOPKSAE_CHECK(s.row.size() == s.col.size() && s.col.size() == s.values.size(),
                "decode: malformed COO (row/col/values sizes disagree)");
  const int64_t d = sae.cfg.d_in;
  fill_bias(sae, s.rows, out);
  // Entries may come in any order, so this loop stays serial (two entries can share a row).
  for (size_t p = 0; p < s.values.size(); ++p) {
    TOPKSAE_CHECK(s.row[p] >= 0 && s.row[p] < s.rows, "decode: COO row ", s.row[p], " out of range [0, ", s.rows, ")");
    check_latent(s.col[p], s.cols);
    axpy(s.values[p], sae.params.W_dec.data() + int64_t(s.col[p]) * d, out + s.row[p] * d, d);
  }
}

}  // namespace topksae::cpu
