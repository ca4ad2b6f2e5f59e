// libFuzzer: load_sae_dir on a whole SAE directory made from the fuzzer's bytes (fuzz_files.h):
// cfg.json, sae_weights.safetensors, sparsity.safetensors, activation_scaler.json (an empty part:
// the file is absent). What loads must be consistent: weights of the shapes cfg.json declares, a
// sparsity of d_sae entries.
#include <cstddef>
#include <cstdint>

#include "fuzz_files.h"
#include "topksae/error.h"
#include "topksae/sae_dir.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace topksae;
  const auto parts = fuzz::unpack(data, size, 4);
  const auto dir = fuzz::fresh_dir("sae");
  const char* names[] = {kSaeCfgFile, kSaeWeightsFile, kSaeSparsityFile, kActivationScalerFile};
  for (size_t i = 0; i < 4; ++i)
    if (!parts[i].empty()) fuzz::write_file(dir / names[i], parts[i]);
  SaeDirExtras ex;
  Sae s;
  try {
    s = load_sae_dir(dir, &ex);
  } catch (const Error&) {
    return 0;
  }
  const auto d = size_t(s.cfg.d_in), n = size_t(s.cfg.d_sae);
  if (s.cfg.k < 1 || s.cfg.k > s.cfg.d_sae || s.params.W_enc.size() != d * n || s.params.W_dec.size() != n * d ||
      s.params.b_enc.size() != n || s.params.b_dec.size() != d || (ex.sparsity && ex.sparsity->size() != n))
    __builtin_trap();
  return 0;
}
