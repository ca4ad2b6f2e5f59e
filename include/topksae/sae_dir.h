// sae_lens SAE directories: sae_weights.safetensors + cfg.json (+ sparsity.safetensors), as
// sae_lens 6.13.1 `save_inference_model` writes them and `SAE.load_from_disk` reads them
// (shared/spec/FORMATS.md). Implemented in src/io/sae_dir.cpp.
#pragma once
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "topksae/sae.h"

namespace topksae {

// What a directory holds besides the weights.
struct SaeDirExtras {
  // cfg.json "metadata" fields the user knows (model_name, hook_name, dataset_path, ...), kept as
  // JSON text per key so that null / numbers / strings survive a round trip unchanged.
  std::map<std::string, std::string> metadata_json;
  // Training config keys present in a checkpoint's cfg.json (decoder_init_norm, ...), as JSON text.
  std::map<std::string, std::string> training_json;
  // sparsity.safetensors "sparsity" [d_sae] (log10 feature density), when present.
  std::optional<std::vector<float>> sparsity;
  // activation_scaler.json {"scaling_factor": s} of a training checkpoint (nullopt: null / absent).
  std::optional<float> scaling_factor;
};

// Loads a directory; the weights are converted to f32 whatever cfg.dtype says. Throws Error that
// names the file and the problem: missing file, a non-"topk" architecture (named), a missing
// cfg field, shapes that disagree with the config, unexpected or missing weight keys.
Sae load_sae_dir(const std::filesystem::path& dir, SaeDirExtras* extras = nullptr);

// Writes a directory that sae_lens loads: weights stored in sae.cfg.dtype, every file written to
// a temporary name and renamed into place (a crash never leaves a half-written file).
// Creates dir if needed; existing files of the same names are replaced.
void save_sae_dir(const std::filesystem::path& dir, const Sae& sae, const SaeDirExtras& extras = {});

// The file names inside an SAE directory.
inline constexpr const char* kSaeWeightsFile = "sae_weights.safetensors";
inline constexpr const char* kSaeCfgFile = "cfg.json";
inline constexpr const char* kSaeSparsityFile = "sparsity.safetensors";
inline constexpr const char* kActivationScalerFile = "activation_scaler.json";
// The sae_lens version whose format we write (cfg.json metadata.sae_lens_version).
inline constexpr const char* kSaeLensVersion = "6.13.1";

// cfg.json text <-> config, without touching the disk (the loader and saver use these; fuzzers
// and tests call them directly). `source` names the text in messages. parse fills the metadata and
// training keys of `extras` when given; it throws Error for a non-"topk" architecture (named), a
// missing or mistyped field (named), or values SaeConfig::validate refuses.
SaeConfig parse_sae_cfg_json(std::string_view text, const std::string& source, SaeDirExtras* extras = nullptr);
std::string sae_cfg_json(const SaeConfig& cfg, const SaeDirExtras& extras = {});

}  // namespace topksae
