// CPU twin of the full inference forward and the refusal of fold_W_dec_norm.
#include <vector>

#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu {

void forward(const Sae& sae, const float* x, int64_t B, float* out, bool use_error_term) {
  sae.cfg.validate();
  sae.params.check_shapes(sae.cfg);
  const int64_t d = sae.cfg.d_in, n = sae.cfg.d_sae;
  NormStats stats;
  std::vector<float> u(size_t(B * d));
  process_sae_in(sae, x, B, u.data(), &stats);
  std::vector<float> h(size_t(B * n));
  encode_pre(sae, u.data(), B, h.data());
  TopKCodes c{B, sae.cfg.k, n, std::vector<int32_t>(size_t(B * sae.cfg.k)), std::vector<float>(size_t(B * sae.cfg.k))};
  topk_select(h.data(), B, n, c.k, c.indices.data(), c.values.data());
  for (float& v : c.values) v = v > 0.f ? v : 0.f;
  decode_topk(sae, c, out);
  normalize_out(sae.cfg.normalize, out, B, d, stats);
  if (use_error_term) {
    // sae_lens: sae_out + (x - sae_out_without_hooks); without hooks the two reconstructions are equal.
    for (int64_t i = 0; i < B * d; ++i) {
      const float err = x[i] - out[i];
      out[i] = out[i] + err;
    }
  }
}

void fold_W_dec_norm(Sae&) {
  TOPKSAE_FAIL("fold_W_dec_norm is not supported for TopK SAEs: scaling decoder rows into the encoder "
               "would change which latents win the top-k (sae_lens refuses it too)");
}

}  // namespace topksae::cpu
