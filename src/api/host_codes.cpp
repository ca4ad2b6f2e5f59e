// Host-side code rebuilding shared by the engines (see host_codes.h).
#include "api/host_codes.h"

#include <algorithm>

namespace topksae::detail {

namespace {

// Orders a row's non-zeros as the top-k pairs are ordered: value descending, lower index first.
bool before(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Gathers the non-zeros of zrow [n] into s.row, sorted; returns their count.
int64_t sorted_nonzeros(HostCodeScratch& s, const float* zrow, int64_t n) {
  int64_t c = 0;
  for (int64_t j = 0; j < n; ++j)
    if (zrow[j] != 0.f) s.row[size_t(c++)] = {zrow[j], int32_t(j)};
  std::sort(s.row.begin(), s.row.begin() + c, before);
  return c;
}

}  // namespace

void check_csr_capacity(int64_t nnz, int64_t capacity) {
  if (nnz > capacity)
    throw InvalidArgument(concat("encode_csr: the codes have ", nnz, " non-zeros but CsrOut::capacity is ", capacity,
                                 "; pass indices/values of at least ", nnz, " elements"));
}

void rebuild_pairs(EngineWorkspace& w, HostCodeScratch& s, const float* z, int64_t B, int64_t n, int64_t k,
                   int32_t* idx, float* val) {
  w.grow(s.row, size_t(n));
  int32_t* orig = w.grow(s.orig, size_t(k));
  for (int64_t b = 0; b < B; ++b) {
    const float* zrow = z + b * n;
    const int64_t c = sorted_nonzeros(s, zrow, n);
    if (c > k)
      throw InvalidArgument(concat("encode_topk: after the hook_sae_acts_post observers row ", b, " has ", c,
                                   " non-zero latents, more than k=", k, "; ask for CSR or dense codes"));
    std::copy(idx + b * k, idx + (b + 1) * k, orig);
    int64_t p = 0;
    for (; p < c; ++p) {
      idx[b * k + p] = s.row[size_t(p)].second;
      val[b * k + p] = s.row[size_t(p)].first;
    }
    for (int64_t i = 0; i < k && p < k; ++i)
      if (zrow[orig[i]] == 0.f) {
        idx[b * k + p] = orig[i];
        val[b * k + p] = 0.f;
        ++p;
      }
  }
}

int64_t csr_from_pairs(const int32_t* idx, const float* val, int64_t B, int64_t k, const EncodeArgs& a) {
  int64_t nnz = 0;
  for (int64_t i = 0; i < B * k; ++i) nnz += val[i] != 0.f;
  check_csr_capacity(nnz, a.capacity);
  int64_t p = 0;
  a.indptr[0] = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = b * k; i < (b + 1) * k; ++i)
      if (val[i] != 0.f) {
        a.indices[p] = idx[i];
        a.values[p++] = val[i];
      }
    a.indptr[b + 1] = p;
  }
  return nnz;
}

int64_t csr_from_dense(EngineWorkspace& w, HostCodeScratch& s, const float* z, int64_t B, int64_t n,
                       const EncodeArgs& a) {
  w.grow(s.row, size_t(n));
  int64_t nnz = 0;
  for (int64_t i = 0; i < B * n; ++i) nnz += z[i] != 0.f;
  check_csr_capacity(nnz, a.capacity);
  int64_t p = 0;
  a.indptr[0] = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t c = sorted_nonzeros(s, z + b * n, n);
    for (int64_t q = 0; q < c; ++q) {
      a.indices[p] = s.row[size_t(q)].second;
      a.values[p++] = s.row[size_t(q)].first;
    }
    a.indptr[b + 1] = p;
  }
  return nnz;
}

}  // namespace topksae::detail
