#include "topksae/sae.h"

#include <limits>

#include "topksae/error.h"

namespace topksae {

std::string_view normalize_name(Normalize n) {
  switch (n) {
    case Normalize::none: return "none";
    case Normalize::expected_average_only_in: return "expected_average_only_in";
    case Normalize::constant_norm_rescale: return "constant_norm_rescale";
    case Normalize::layer_norm: return "layer_norm";
  }
  return "?";
}

Normalize normalize_from_name(std::string_view name) {
  for (Normalize n : {Normalize::none, Normalize::expected_average_only_in, Normalize::constant_norm_rescale,
                      Normalize::layer_norm})
    if (normalize_name(n) == name) return n;
  TOPKSAE_FAIL("unknown normalize_activations '", name,
               "' (expected none, expected_average_only_in, constant_norm_rescale or layer_norm)");
}

void SaeConfig::validate() const {
  TOPKSAE_CHECK(d_in >= 1, "d_in must be >= 1, got ", d_in);
  TOPKSAE_CHECK(d_sae >= 1 && d_sae <= std::numeric_limits<int32_t>::max(), "d_sae must be in [1, 2^31), got ", d_sae);
  TOPKSAE_CHECK(k >= 1 && k <= d_sae, "k must be in [1, d_sae=", d_sae, "], got ", k);
}

SaeParams SaeParams::zeros(const SaeConfig& c) {
  c.validate();
  SaeParams p;
  p.W_enc.assign(size_t(c.d_in * c.d_sae), 0.f);
  p.b_enc.assign(size_t(c.d_sae), 0.f);
  p.W_dec.assign(size_t(c.d_sae * c.d_in), 0.f);
  p.b_dec.assign(size_t(c.d_in), 0.f);
  return p;
}

void SaeParams::check_shapes(const SaeConfig& c) const {
  auto check = [](const char* name, size_t got, int64_t want, const char* shape) {
    TOPKSAE_CHECK(got == size_t(want), name, " has ", got, " elements, expected ", want, " ", shape);
  };
  check("W_enc", W_enc.size(), c.d_in * c.d_sae, "[d_in, d_sae]");
  check("b_enc", b_enc.size(), c.d_sae, "[d_sae]");
  check("W_dec", W_dec.size(), c.d_sae * c.d_in, "[d_sae, d_in]");
  check("b_dec", b_dec.size(), c.d_in, "[d_in]");
}

}  // namespace topksae
