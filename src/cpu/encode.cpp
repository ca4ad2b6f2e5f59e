// CPU twins of process_sae_in, encode_pre, encode_topk and encode_dense.
#include <algorithm>
#include <memory>

#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu {

void process_sae_in(const Sae& sae, const float* x, int64_t B, float* u, NormStats* stats) {
  const int64_t d = sae.cfg.d_in;
  normalize_in(sae.cfg.normalize, x, B, d, u, stats);
  if (!sae.cfg.apply_b_dec_to_input) return;
  const float* b_dec = sae.params.b_dec.data();
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < d; ++i) u[b * d + i] -= b_dec[i];
}

void encode_pre(const Sae& sae, const float* u, int64_t B, float* h) {
  const int64_t n = sae.cfg.d_sae;
  const float* b_enc = sae.params.b_enc.data();
#pragma omp parallel for
  for (int64_t b = 0; b < B; ++b) std::copy(b_enc, b_enc + n, h + b * n);
  gemm(u, sae.params.W_enc.data(), h, B, sae.cfg.d_in, n, 1.f);
}

namespace {
// x -> pre-activations h [B, d_sae], validating the shapes first. h is left uninitialised
// before encode_pre writes it (the bias copy, in parallel): a zero fill would be one more serial
// pass over B * d_sae floats, with the page faults of a fresh buffer in it.
std::unique_ptr<float[]> pre_activations(const Sae& sae, const float* x, int64_t B) {
  sae.cfg.validate();
  sae.params.check_shapes(sae.cfg);
  TOPKSAE_CHECK(B >= 0, "batch size must be >= 0, got ", B);
  TOPKSAE_CHECK(x != nullptr || B == 0, "input pointer is null");
  std::vector<float> u(size_t(B * sae.cfg.d_in));
  process_sae_in(sae, x, B, u.data(), nullptr);
  std::unique_ptr<float[]> h(new float[size_t(B * sae.cfg.d_sae)]);
  encode_pre(sae, u.data(), B, h.get());
  return h;
}
}  // namespace

TopKCodes encode_topk(const Sae& sae, const float* x, int64_t B) {
  const std::unique_ptr<float[]> h = pre_activations(sae, x, B);
  TopKCodes c;
  c.rows = B;
  c.k = sae.cfg.k;
  c.d_sae = sae.cfg.d_sae;
  c.indices.resize(size_t(B * c.k));
  c.values.resize(size_t(B * c.k));
  topk_select(h.get(), B, c.d_sae, c.k, c.indices.data(), c.values.data());
  for (float& v : c.values) v = std::max(v, 0.f);  // ReLU after selection
  return c;
}

std::vector<float> encode_dense(const Sae& sae, const float* x, int64_t B) { return topk_to_dense(encode_topk(sae, x, B)); }

}  // namespace topksae::cpu
