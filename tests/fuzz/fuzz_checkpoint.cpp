// libFuzzer: load_checkpoint on a training checkpoint made from the fuzzer's bytes (fuzz_files.h):
// trainer_state.json, trainer_state.bin, cfg.json, sae_weights.safetensors (an empty part: the
// file is absent). What loads must be consistent with its config: parameters, Adam moments and
// statistics of the declared shapes.
// Seeds: with TOPKSAE_FUZZ_SEED_OUT=FILE the target writes one packed, valid checkpoint (from
// save_checkpoint on a small config, a few steps in) to FILE and exits (tools/test.d/30-fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_files.h"
#include "topksae/error.h"
#include "topksae/sae_dir.h"
#include "topksae/train.h"

namespace {
const char* kNames[] = {"trainer_state.json", "trainer_state.bin", topksae::kSaeCfgFile, topksae::kSaeWeightsFile};

void write_seed(const char* out) {
  using namespace topksae;
  TrainConfig cfg;
  cfg.d_in = 4;
  cfg.d_sae = 6;
  cfg.k = 2;
  cfg.batch_size = 3;
  cfg.training_tokens = 30;
  TrainState st = TrainState::initial(cfg);
  st.step = 3;
  st.n_training_samples = 9;
  st.stats.n_frac_active = 2;
  st.scaling_factor = 1.5;
  st.data_position = "synthetic 9";
  const auto dir = fuzz::fresh_dir("seed") / "ckpt";
  save_checkpoint(dir, cfg, st, {});
  std::vector<std::string> parts;
  for (const char* n : kNames) parts.push_back(fuzz::read_file(dir / n));
  fuzz::write_file(out, fuzz::pack(parts));
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* out = std::getenv("TOPKSAE_FUZZ_SEED_OUT")) {
    write_seed(out);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace topksae;
  const auto parts = fuzz::unpack(data, size, 4);
  const auto dir = fuzz::fresh_dir("ckpt");
  for (size_t i = 0; i < 4; ++i)
    if (!parts[i].empty()) fuzz::write_file(dir / kNames[i], parts[i]);
  TrainConfig cfg;
  TrainState st;
  try {
    st = load_checkpoint(dir, &cfg);
  } catch (const Error&) {
    return 0;
  }
  const auto d = size_t(cfg.d_in), n = size_t(cfg.d_sae);
  for (const Params<float>* p : {&st.params, &st.adam_m, &st.adam_v})
    if (p->W_enc.size() != d * n || p->W_dec.size() != n * d || p->b_enc.size() != n || p->b_dec.size() != d)
      __builtin_trap();
  if (st.stats.since_fired.size() != n || st.stats.act_freq.size() != n || st.step < 0 || st.n_training_samples < 0) __builtin_trap();
  return 0;
}
