// The --config JSON and run.json of `topksae train` (run_files.h).
#include "run_files.h"

#include "topksae/error.h"

namespace topksae::cli {
using json = nlohmann::json;

json DataSpec::to_json() const {
  return {{"path", path},
          {"tensor", tensor},
          {"shuffle", shuffle},
          {"buffer_batches", buffer_batches},
          {"skip_nonfinite", skip_nonfinite},
          {"loop", loop},
          {"synthetic",
           {{"d_in", synthetic.d_in},
            {"n_features", synthetic.n_features},
            {"seed", synthetic.seed},
            {"max_freq", synthetic.max_freq},
            {"min_freq", synthetic.min_freq},
            {"min_magnitude", synthetic.min_magnitude},
            {"max_magnitude", synthetic.max_magnitude},
            {"noise_std", synthetic.noise_std}}}};
}

DataSpec DataSpec::from_json(const json& j) {
  DataSpec d;
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

// sae_lens runner-config keys that describe the data rather than the SAE: kept as cfg.json
// metadata when a --config file carries them, instead of being refused as unknown.
const char* const kMetadataKeys[] = {"model_name", "hook_name", "hook_head_index", "dataset_path", "context_size",
                                     "prepend_bos"};

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
  merged.update(patch);
  try {
    return train_config_from_json(merged.dump());
  } catch (const Error& e) {
    TOPKSAE_FAIL(file, ": ", e.what());
  }
}

RunFile parse_run_json(const std::string& text, const std::string& file) {
  RunFile r;
  try {
    const json run = json::parse(text);
    r.cfg = train_config_from_json(run.at("config").dump());
    r.data = DataSpec::from_json(run.at("data"));
    for (auto& [k, v] : run.at("metadata").items()) r.metadata[k] = v.get<std::string>();
    r.checkpoint_every_tokens = run.value("checkpoint_every_tokens", int64_t(0));
  } catch (const json::exception& e) {
    TOPKSAE_FAIL(file, ": not a run.json written by topksae train: ", e.what());
  } catch (const Error& e) {
    TOPKSAE_FAIL(file, ": ", e.what());
  }
  return r;
}

}  // namespace topksae::cli
