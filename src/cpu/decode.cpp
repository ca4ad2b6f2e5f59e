// CPU twins of decode from dense codes, top-k pairs, CSR and COO: out = z @ W_dec + b_dec.
// The sparse forms read only the W_dec rows they name.
#include <algorithm>

#include "cpu/vec.h"
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
using vec::axpy;  // y += a x, dispatched to the widest ISA here (vec.h)
void check_latent(int64_t j, int64_t d_sae) {
  TOPKSAE_CHECK(j >= 0 && j < d_sae, "decode: latent index ", j, " out of range [0, ", d_sae, ")");
}
}  // namespace

void decode_dense(const Sae& sae, const float* z, int64_t B, float* out) {
  sae.params.check_shapes(sae.cfg);
  fill_bias(sae, B, out);
  gemm(z, sae.params.W_dec.data(), out, B, sae.cfg.d_sae, sae.cfg.d_in, 1.f);
}

void decode_topk(const Sae& sae, const int32_t* idx, const float* val, int64_t B, int64_t k, float* out) {
  sae.params.check_shapes(sae.cfg);
  for (int64_t i = 0; i < B * k; ++i) check_latent(idx[i], sae.cfg.d_sae);
  const int64_t d = sae.cfg.d_in;
  fill_bias(sae, B, out);
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < k; ++i) {
      const float v = val[b * k + i];
      if (v != 0.f) axpy(v, sae.params.W_dec.data() + int64_t(idx[b * k + i]) * d, out + b * d, d);
    }
}

void decode_topk(const Sae& sae, const TopKCodes& c, float* out) {
  TOPKSAE_CHECK(c.d_sae == sae.cfg.d_sae, "decode: codes have d_sae=", c.d_sae, ", the SAE has ", sae.cfg.d_sae);
  TOPKSAE_CHECK(c.indices.size() == size_t(c.rows * c.k) && c.values.size() == size_t(c.rows * c.k),
                "decode: ", c.indices.size(), " indices and ", c.values.size(), " values for ", c.rows,
                " rows of k=", c.k);
  decode_topk(sae, c.indices.data(), c.values.data(), c.rows, c.k, out);
}

void decode_csr(const Sae& sae, const int64_t* indptr, const int32_t* indices, const float* values, int64_t B,
                float* out) {
  sae.params.check_shapes(sae.cfg);
  TOPKSAE_CHECK(indptr[0] == 0, "decode: CSR indptr[0] must be 0, got ", indptr[0]);
  for (int64_t b = 0; b < B; ++b)
    TOPKSAE_CHECK(indptr[b] <= indptr[b + 1], "decode: CSR indptr decreases at row ", b);
  for (int64_t p = 0; p < indptr[B]; ++p) check_latent(indices[p], sae.cfg.d_sae);
  const int64_t d = sae.cfg.d_in;
  fill_bias(sae, B, out);
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = indptr[b]; p < indptr[b + 1]; ++p)
      axpy(values[p], sae.params.W_dec.data() + int64_t(indices[p]) * d, out + b * d, d);
}

void decode_csr(const Sae& sae, const Csr& s, float* out) {
  TOPKSAE_CHECK(s.cols == sae.cfg.d_sae, "decode: CSR has ", s.cols, " columns, the SAE has d_sae=", sae.cfg.d_sae);
  TOPKSAE_CHECK(s.indptr.size() == size_t(s.rows + 1) && s.indptr.back() == int64_t(s.indices.size()) &&
                    s.indices.size() == s.values.size(),
                "decode: malformed CSR (indptr/indices/values sizes disagree)");
  decode_csr(sae, s.indptr.data(), s.indices.data(), s.values.data(), s.rows, out);
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
