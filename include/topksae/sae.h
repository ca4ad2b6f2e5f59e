// The TopK SAE: its configuration (the sae_lens cfg.json fields this engine uses) and its
// parameters in float32 host memory. Names and layouts are sae_lens's (the safetensors keys).
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "topksae/dtype.h"

namespace topksae {

// sae_lens `normalize_activations`. Training supports none and expected_average_only_in;
// inference all four (expected_average_only_in is the identity at inference: sae_lens folds the
// scaling factor into the weights when it saves).
enum class Normalize : uint8_t { none, expected_average_only_in, constant_norm_rescale, layer_norm };
std::string_view normalize_name(Normalize n);
Normalize normalize_from_name(std::string_view name);  // throws Error naming the bad value

struct SaeConfig {
  int64_t d_in = 0;
  int64_t d_sae = 0;
  int64_t k = 0;
  bool apply_b_dec_to_input = true;
  Normalize normalize = Normalize::none;
  DType dtype = DType::f32;  // storage dtype of the weights on disk; compute is always f32
  // Throws Error unless d_in >= 1, 1 <= k <= d_sae, d_sae < 2^31 (int32 latent indices).
  void validate() const;
};

// Row-major float32 parameters.
struct SaeParams {
  std::vector<float> W_enc;  // [d_in, d_sae]
  std::vector<float> b_enc;  // [d_sae]
  std::vector<float> W_dec;  // [d_sae, d_in]
  std::vector<float> b_dec;  // [d_in]
  static SaeParams zeros(const SaeConfig& cfg);
  // Throws Error if any vector's size does not match cfg.
  void check_shapes(const SaeConfig& cfg) const;
};

struct Sae {
  SaeConfig cfg;
  SaeParams params;
};

}  // namespace topksae
