// A `topksae train` run's directory (run_dir.h): run.json, the directory's preparation, the data
// stream and the report's content.
#include "train/run_dir.h"

#include <nlohmann/json.hpp>

#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/metrics.h"
#include "topksae/prefetch.h"
#include "topksae/sae_dir.h"
#include "topksae/shuffle_buffer.h"

namespace topksae::run_dir {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
json data_to_json(const DataSpec& d) {
  if (d.live) return {{"source", "live"}, {"shuffle", d.shuffle}, {"buffer_batches", d.buffer_batches}};
  const SyntheticConfig& s = d.synthetic;
  return {{"path", d.path},
          {"tensor", d.tensor},
          {"shuffle", d.shuffle},
          {"buffer_batches", d.buffer_batches},
          {"skip_nonfinite", d.skip_nonfinite},
          {"loop", d.loop},
          {"synthetic",
           {{"d_in", s.d_in},
            {"n_features", s.n_features},
            {"seed", s.seed},
            {"max_freq", s.max_freq},
            {"min_freq", s.min_freq},
            {"min_magnitude", s.min_magnitude},
            {"max_magnitude", s.max_magnitude},
            {"noise_std", s.noise_std}}}};
}

DataSpec data_from_json(const json& j) {
  DataSpec d;
  if (j.value("source", "") == "live") {
    d.live = true;
    d.shuffle = j.at("shuffle").get<std::string>();
    d.buffer_batches = j.at("buffer_batches").get<int64_t>();
    return d;
  }
  d.path = j.at("path").get<std::string>();
  d.tensor = j.at("tensor").get<std::string>();
  d.shuffle = j.at("shuffle").get<std::string>();
  d.buffer_batches = j.at("buffer_batches").get<int64_t>();
  d.skip_nonfinite = j.at("skip_nonfinite").get<bool>();
  d.loop = j.at("loop").get<bool>();
  const json& s = j.at("synthetic");
  d.synthetic.d_in = s.at("d_in").get<int64_t>();
  d.synthetic.n_features = s.at("n_features").get<int64_t>();
  d.synthetic.seed = s.at("seed").get<uint64_t>();
  d.synthetic.max_freq = s.at("max_freq").get<double>();
  d.synthetic.min_freq = s.at("min_freq").get<double>();
  d.synthetic.min_magnitude = s.at("min_magnitude").get<double>();
  d.synthetic.max_magnitude = s.at("max_magnitude").get<double>();
  d.synthetic.noise_std = s.at("noise_std").get<double>();
  return d;
}
}  // namespace

std::string run_file_json(const RunFile& run) {
  const json j = {{"version", 1},
                  {"config", json::parse(train_config_to_json(run.config))},
                  {"data", data_to_json(run.data)},
                  {"metadata", run.metadata},
                  {"checkpoint_every_tokens", run.checkpoint_every_tokens},
                  {"init", run.init}};
  return j.dump(2) + "\n";
}

void write_run_file(const fs::path& dir, const RunFile& run) { write_file_atomic(dir / "run.json", run_file_json(run)); }

RunFile parse_run_file(const std::string& text, const std::string& file) {
  RunFile r;
  try {
    const json j = json::parse(text);
    r.config = train_config_from_json(j.at("config").dump());
    r.data = data_from_json(j.at("data"));
    for (auto& [k, v] : j.at("metadata").items()) r.metadata[k] = v.get<std::string>();
    r.checkpoint_every_tokens = j.value("checkpoint_every_tokens", int64_t(0));
    r.init = j.value("init", std::string());
  } catch (const json::exception& e) {
    TOPKSAE_FAIL(file, ": not a run.json written by topksae train: ", e.what());
  } catch (const Error& e) {
    TOPKSAE_FAIL(file, ": ", e.what());
  }
  return r;
}

RunFile read_run_file(const fs::path& dir) {
  const fs::path file = dir / "run.json";
  return parse_run_file(read_small_file(file), file.string());
}

namespace {
// sae_lens runner-config keys that describe the data rather than the SAE: kept as cfg.json
// metadata when a --config file carries them, instead of being refused as unknown.
const char* const kMetadataKeys[] = {"model_name", "hook_name", "hook_head_index", "dataset_path", "context_size",
                                     "prepend_bos"};
}  // namespace

TrainConfig apply_config_json(const TrainConfig& base, const std::string& text, const std::string& file,
                              std::map<std::string, std::string>* meta) {
  json patch;
  try {
    patch = json::parse(text);
  } catch (const json::exception& e) {
    TOPKSAE_FAIL(file, ": not valid JSON: ", e.what());
  }
  TOPKSAE_CHECK(patch.is_object(), file, ": expected a JSON object of training config keys");
  for (const char* k : kMetadataKeys)
    if (patch.contains(k)) {
      (*meta)[k] = patch[k].dump();
      patch.erase(k);
    }
  json merged = json::parse(train_config_to_json(base));
  // "batch_size" is an alias of train_batch_size_tokens: base's canonical key must not override it
  // (the keys are read in sorted order, the later one winning).
  if (patch.contains("batch_size") && !patch.contains("train_batch_size_tokens")) merged.erase("train_batch_size_tokens");
  merged.update(patch);
  try {
    return train_config_from_json(merged.dump());
  } catch (const Error& e) {
    TOPKSAE_FAIL(file, ": ", e.what());
  }
}

void prepare(const fs::path& out, bool overwrite) {
  std::error_code ec;
  if (fs::exists(out, ec)) {
    TOPKSAE_CHECK(overwrite, "--out ", out.string(), " exists; pass --overwrite to replace it, or --resume ",
                  out.string(), " to continue its run");
    TOPKSAE_CHECK(fs::is_directory(out), "--out ", out.string(), " exists and is not a directory");
    bool ours = fs::is_empty(out) || fs::exists(out / "run.json") || fs::exists(out / kSaeCfgFile);
    TOPKSAE_CHECK(ours, "--out ", out.string(),
                  " exists and does not look like a topksae output directory (no run.json or cfg.json); "
                  "not deleting it: remove it yourself or choose another --out");
    fs::remove_all(out, ec);
    TOPKSAE_CHECK(!ec, "cannot remove ", out.string(), ": ", ec.message());
  }
  fs::create_directories(out, ec);
  TOPKSAE_CHECK(!ec, "cannot create --out ", out.string(), ": ", ec.message());
}

Source open_source(const DataSpec& d, const TrainConfig& cfg) {
  Source r;
  if (d.path.empty()) {
    auto s = std::make_unique<SyntheticSource>(d.synthetic);
    r.synthetic = s.get();
    r.stream = std::make_unique<PrefetchSource>(std::move(s), cfg.batch_size, 4);
    return r;
  }
  auto fsrc = open_file_source(d.path, d.tensor, {.skip_nonfinite = d.skip_nonfinite, .loop = d.loop});
  r.files = fsrc.get();
  std::unique_ptr<ActivationSource> src;
  if (d.shuffle == "buffer") {
    TOPKSAE_CHECK(d.buffer_batches >= 1, "--buffer-batches must be >= 1, got ", d.buffer_batches);
    src = std::make_unique<ShuffleBuffer>(std::move(fsrc), d.buffer_batches * cfg.batch_size, cfg.batch_size, cfg.seed);
  } else {
    src = std::move(fsrc);
  }
  r.stream = std::make_unique<PrefetchSource>(std::move(src), cfg.batch_size, 4);
  return r;
}

ReportContent report_content(const fs::path& out, const std::string& data, const std::string& device,
                             const TrainConfig& cfg, const TrainState& st, const std::optional<StepMetrics>& last,
                             const SyntheticSource* synthetic) {
  ReportContent rc;
  rc.title = "topksae training report: " + out.filename().string();
  rc.summary = {{"output", out.string()},
                {"data", data},
                {"d_in / d_sae / k", concat(cfg.d_in, " / ", cfg.d_sae, " / ", cfg.k)},
                {"steps", concat(st.step, " of ", cfg.total_training_steps(), " (batch ", cfg.batch_size, ")")},
                {"tokens", std::to_string(st.n_training_samples)},
                {"device", device},
                {"lr", concat(cfg.lr, " (", lr_scheduler_name(cfg.lr_scheduler_name), ")")},
                {"normalize_activations", std::string(normalize_name(cfg.normalize_activations))}};
  if (st.scaling_factor) rc.summary.emplace_back("scaling factor (folded)", concat(*st.scaling_factor));
  if (last) {
    rc.summary.emplace_back("final loss", concat(last->overall_loss));
    rc.summary.emplace_back("final explained variance", concat(last->explained_variance));
    rc.summary.emplace_back("final L0", concat(last->l0));
    rc.summary.emplace_back("dead latents", concat(last->dead_features, " / ", cfg.d_sae));
  }
  if (st.stats.n_frac_active > 0) rc.density = density_histogram(log_feature_sparsity(st.stats));
  if (synthetic) {
    const Sae fin = final_sae(cfg, st);
    const RecoveryReport r = feature_recovery(synthetic->dictionary(), synthetic->config().n_features,
                                              fin.params.W_dec, cfg.d_sae, cfg.d_in);
    rc.recovery = ReportContent::Recovery{r.summary(), r.best_cos, r.best_latent, synthetic->frequencies()};
    rc.summary.emplace_back("feature recovery", r.summary());
  }
  return rc;
}

}  // namespace topksae::run_dir
