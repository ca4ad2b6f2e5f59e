// Training checkpoints (FORMATS.md, "A training checkpoint"): an sae_lens SAE directory with the
// unfolded weights plus activation_scaler.json, and this engine's trainer state in
// trainer_state.json (config, counters, data position) and trainer_state.bin (Adam moments and the
// per-latent counters, raw little-endian with a checksum). The whole directory is written as
// <dir>.tmp and renamed into place, so a crash mid-save keeps the previous checkpoint.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/train.h"
#include "train/checkpoint_io.h"

namespace fs = std::filesystem;

namespace topksae {

namespace {

constexpr char kStateJson[] = "trainer_state.json";
constexpr char kStateBin[] = "trainer_state.bin";
constexpr char kMagic[16] = {'T', 'O', 'P', 'K', 'S', 'A', 'E', '-', 'T', 'R', 'S', 'T', 'A', 'T', 'E', '1'};

using ckpt_io::fnv1a;
using ckpt_io::put_u64;
using ckpt_io::read_all;

std::string state_bin(const TrainConfig& cfg, const TrainState& st) {
  std::string out(kMagic, sizeof kMagic);
  put_u64(out, uint64_t(cfg.d_in));
  put_u64(out, uint64_t(cfg.d_sae));
  for (const Params<float>* p : {&st.adam_m, &st.adam_v}) ckpt_io::put_params(out, *p);
  ckpt_io::put_stats(out, st.stats);
  put_u64(out, fnv1a(out.data(), out.size()));
  return out;
}

void read_state_bin(const fs::path& path, const TrainConfig& cfg, TrainState* st) {
  const size_t n = size_t(cfg.d_sae), d = size_t(cfg.d_in);
  const size_t expect = sizeof kMagic + 16 + 2 * (2 * n * d + n + d) * 4 + 2 * n * 8 + 8;
  const std::string s = read_all(path, expect);
  TOPKSAE_CHECK(s.size() == expect, path.string(), " is ", s.size(), " bytes; expected ", expect, " for d_in=", d,
                ", d_sae=", n);
  TOPKSAE_CHECK(std::memcmp(s.data(), kMagic, sizeof kMagic) == 0, path.string(), " is not a topksae trainer state");
  uint64_t stored;
  std::memcpy(&stored, s.data() + s.size() - 8, 8);
  TOPKSAE_CHECK(stored == fnv1a(s.data(), s.size() - 8), path.string(), ": checksum mismatch (corrupt file)");
  ckpt_io::Reader r{s, sizeof kMagic, path};
  TOPKSAE_CHECK(r.u64() == d && r.u64() == n, path.string(), ": shape differs from trainer_state.json");
  for (Params<float>* p : {&st->adam_m, &st->adam_v}) r.params(p, d, n);
  r.stats(&st->stats, n);
}

}  // namespace

void save_checkpoint(const fs::path& dir, const TrainConfig& cfg, const TrainState& st, const SaeDirExtras& extras_in) {
  TOPKSAE_CHECK(!dir.empty(), "checkpoint directory is empty");
  fs::path target = dir;
  if (!target.has_filename()) target = target.parent_path();  // "ckpt/" -> "ckpt"
  fs::path tmp = target;
  tmp += ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), ec);
  fs::create_directories(tmp, ec);
  TOPKSAE_CHECK(!ec && fs::is_directory(tmp), "cannot create checkpoint directory ", tmp.string(), ": ", ec.message());

  // The SAE directory: unfolded weights, the training keys, the sparsity of the current window.
  Sae sae;
  sae.cfg = cfg.sae_config();
  sae.params = to_sae_params(st.params);
  SaeDirExtras extras = extras_in;
  extras.training_json["decoder_init_norm"] = cfg.decoder_init_norm ? nlohmann::json(*cfg.decoder_init_norm).dump() : "null";
  extras.training_json["use_sparse_activations"] = "false";
  extras.training_json["aux_loss_coefficient"] = nlohmann::json(cfg.aux_loss_coefficient).dump();
  if (cfg.rescale_acts_by_decoder_norm) extras.training_json["rescale_acts_by_decoder_norm"] = "true";
  extras.sparsity = log_feature_sparsity(st.stats);
  extras.scaling_factor = st.scaling_factor ? std::optional<float>(float(*st.scaling_factor)) : std::nullopt;
  save_sae_dir(tmp, sae, extras);  // also writes activation_scaler.json (training keys present)

  nlohmann::ordered_json j;
  j["format"] = "topksae trainer state";
  j["version"] = 1;
  j["config"] = nlohmann::ordered_json::parse(train_config_to_json(cfg));
  ckpt_io::put_counters(j, st);
  write_file_atomic(tmp / kStateBin, state_bin(cfg, st));
  write_file_atomic(tmp / kStateJson, j.dump(2));

  // Swap in: the old checkpoint is moved aside first (rename cannot replace a non-empty
  // directory), then removed once the new one is in place.
  fs::path old = target;
  old += ".old";
  fs::remove_all(old, ec);
  if (fs::exists(target)) {
    fs::rename(target, old, ec);
    TOPKSAE_CHECK(!ec, "cannot move the previous checkpoint ", target.string(), " aside: ", ec.message());
  }
  fs::rename(tmp, target, ec);
  TOPKSAE_CHECK(!ec, "cannot rename ", tmp.string(), " to ", target.string(), ": ", ec.message());
  fs::remove_all(old, ec);
}

TrainState load_checkpoint(const fs::path& dir, TrainConfig* cfg_out) {
  const fs::path json_path = dir / kStateJson;
  if (!fs::exists(json_path)) {
    fs::path base = dir;
    if (!base.has_filename()) base = base.parent_path();
    fs::path tmp = base, old = base;
    tmp += ".tmp";
    old += ".old";
    // save_checkpoint writes <dir>.tmp completely, moves <dir> to <dir>.old, renames <dir>.tmp to
    // <dir>: a crash between the two renames leaves both complete.
    if (fs::exists(old / kStateJson) || fs::exists(tmp / kStateJson))
      TOPKSAE_FAIL(dir.string(), " is missing: a checkpoint save was interrupted. The previous checkpoint is ",
                   old.string(), (fs::exists(tmp / kStateJson) ? concat(" and the new one is ", tmp.string()) : ""),
                   "; rename one of them to ", dir.string(), " to resume");
    TOPKSAE_FAIL(dir.string(), " is not a training checkpoint (no ", kStateJson, ")");
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_all(json_path, size_t(16) << 20));
  } catch (const nlohmann::json::exception& e) {
    TOPKSAE_FAIL(json_path.string(), ": invalid JSON: ", e.what());
  }
  TrainState st;
  TrainConfig cfg;
  try {
    TOPKSAE_CHECK(j.value("format", "") == "topksae trainer state", json_path.string(), ": not a topksae trainer state");
    TOPKSAE_CHECK(j.value("version", 0) == 1, json_path.string(), ": unsupported version ", j.value("version", 0));
    cfg = train_config_from_json(j.at("config").dump());
    ckpt_io::get_counters(j, &st);
  } catch (const nlohmann::json::exception& e) {
    TOPKSAE_FAIL(json_path.string(), ": missing or bad field: ", e.what());
  }
  cfg.validate();
  TOPKSAE_CHECK(st.step >= 0 && st.n_training_samples >= 0 && st.stats.n_frac_active >= 0, json_path.string(),
                ": negative counters");

  const Sae sae = load_sae_dir(dir);
  TOPKSAE_CHECK(sae.cfg.d_in == cfg.d_in && sae.cfg.d_sae == cfg.d_sae && sae.cfg.k == cfg.k, dir.string(),
                ": cfg.json (d_in ", sae.cfg.d_in, ", d_sae ", sae.cfg.d_sae, ", k ", sae.cfg.k,
                ") disagrees with trainer_state.json");
  st.params = from_sae_params(sae.params);
  read_state_bin(dir / kStateBin, cfg, &st);
  if (cfg_out) *cfg_out = cfg;
  return st;
}

}  // namespace topksae
