// libFuzzer: cfg.json parsing on arbitrary text. Accepted configs must survive our writer: what
// sae_cfg_json writes parses back to the same config.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "topksae/error.h"
#include "topksae/sae_dir.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  topksae::SaeDirExtras ex;
  topksae::SaeConfig c;
  try {
    c = topksae::parse_sae_cfg_json(text, "fuzz", &ex);
  } catch (const topksae::Error&) {
    return 0;
  }
  topksae::SaeDirExtras ex2;
  topksae::SaeConfig d = topksae::parse_sae_cfg_json(topksae::sae_cfg_json(c, ex), "rewritten", &ex2);
  if (d.d_in != c.d_in || d.d_sae != c.d_sae || d.k != c.k || d.dtype != c.dtype || d.normalize != c.normalize ||
      d.apply_b_dec_to_input != c.apply_b_dec_to_input || ex2.training_json != ex.training_json)
    __builtin_trap();
  return 0;
}
