// libFuzzer: the text files `topksae train` reads besides the data (src/train/run_dir.h).
// First byte even: the rest is a --config JSON applied over the default config; odd: a run.json
// (--resume). Bad input must be an Error; what parses must survive a round trip: the config and
// data spec written back (as train writes run.json) parse to the same.
// Seeds: with TOPKSAE_FUZZ_SEED_OUT=FILE the target writes a run.json seed (as `train --out` writes
// it) to FILE and exits (tools/test.d/30-fuzz.sh).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "fuzz_files.h"
#include "train/run_dir.h"
#include "topksae/error.h"

namespace {
using topksae::run_dir::RunFile;
using json = nlohmann::json;

std::string run_json(const RunFile& r) { return topksae::run_dir::run_file_json(r); }
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* out = std::getenv("TOPKSAE_FUZZ_SEED_OUT")) {
    RunFile r;
    r.config.d_in = 8;
    r.config.d_sae = 32;
    r.config.k = 4;
    r.data.path = "acts/";
    r.data.loop = true;
    r.metadata["model_name"] = "\"gpt2\"";
    r.checkpoint_every_tokens = 4096;
    topksae::fuzz::write_file(out, "\x01" + run_json(r));
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace topksae;
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    std::map<std::string, std::string> meta;
    TrainConfig c;
    try {
      c = run_dir::apply_config_json(TrainConfig{}, text, "fuzz.json", &meta);
    } catch (const Error&) {
      return 0;
    }
    const TrainConfig back = train_config_from_json(train_config_to_json(c));
    if (train_config_to_json(back) != train_config_to_json(c)) __builtin_trap();
    try {
      c.validate();
    } catch (const Error&) {
    }
    return 0;
  }
  RunFile r;
  try {
    r = run_dir::parse_run_file(text, "run.json");
  } catch (const Error&) {
    return 0;
  }
  const RunFile back = run_dir::parse_run_file(run_json(r), "rewritten run.json");
  if (train_config_to_json(back.config) != train_config_to_json(r.config) || run_json(back) != run_json(r) ||
      back.metadata != r.metadata || back.checkpoint_every_tokens != r.checkpoint_every_tokens)
    __builtin_trap();
  return 0;
}
