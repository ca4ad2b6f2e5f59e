// CPU twins of the conversions from top-k pairs to CSR, COO and dense.
#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu {

namespace {
void check_codes(const TopKCodes& c) {
  TOPKSAE_CHECK(c.indices.size() == size_t(c.rows * c.k) && c.values.size() == size_t(c.rows * c.k),
                "top-k codes: ", c.indices.size(), " indices and ", c.values.size(), " values for ", c.rows,
                " rows of k=", c.k);
  for (int32_t j : c.indices)
    TOPKSAE_CHECK(j >= 0 && j < c.d_sae, "top-k codes: latent index ", j, " out of range [0, ", c.d_sae, ")");
}
}  // namespace

Csr topk_to_csr(const TopKCodes& c) {
  check_codes(c);
  Csr s;
  s.rows = c.rows;
  s.cols = c.d_sae;
  s.indptr.assign(size_t(c.rows + 1), 0);
  for (int64_t b = 0; b < c.rows; ++b) {
    for (int64_t i = 0; i < c.k; ++i) {
      const float v = c.values[size_t(b * c.k + i)];
      if (v == 0.f) continue;
      s.indices.push_back(c.indices[size_t(b * c.k + i)]);
      s.values.push_back(v);
    }
    s.indptr[size_t(b + 1)] = int64_t(s.values.size());
  }
  return s;
}

Coo topk_to_coo(const TopKCodes& c) {
  check_codes(c);
  Coo s;
  s.rows = c.rows;
  s.cols = c.d_sae;
  for (int64_t b = 0; b < c.rows; ++b)
    for (int64_t i = 0; i < c.k; ++i) {
      const float v = c.values[size_t(b * c.k + i)];
      if (v == 0.f) continue;
      s.row.push_back(b);
      s.col.push_back(c.indices[size_t(b * c.k + i)]);
      s.values.push_back(v);
    }
  return s;
}

std::vector<float> topk_to_dense(const TopKCodes& c) {
  check_codes(c);
  std::vector<float> z(size_t(c.rows * c.d_sae), 0.f);
  for (int64_t b = 0; b < c.rows; ++b)
    for (int64_t i = 0; i < c.k; ++i)
      z[size_t(b * c.d_sae + c.indices[size_t(b * c.k + i)])] = c.values[size_t(b * c.k + i)];
  return z;
}

}  // namespace topksae::cpu
