// The files `topksae train` reads besides the data: the --config JSON (training config keys over
// the defaults) and DIR/run.json (what --resume rebuilds the run from). Parsed from text, so that
// the fuzz target tests/fuzz/fuzz_run_files.cpp reaches them without a command line; every bad
// input is an Error naming the file.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "topksae/synthetic.h"
#include "topksae/train.h"

namespace topksae::cli {

// Where the data comes from; stored in run.json so that --resume rebuilds the same stream.
struct DataSpec {
  std::string path;  // empty: synthetic
  std::string tensor;
  std::string shuffle = "buffer";
  int64_t buffer_batches = 16;
  bool skip_nonfinite = false, loop = false;
  SyntheticConfig synthetic;
  nlohmann::json to_json() const;
  static DataSpec from_json(const nlohmann::json& j);  // throws nlohmann::json::exception
};

// base with the keys of a --config file's text applied (sae_lens names); the runner keys that
// describe the data (model_name, hook_name, ...) go to *meta as JSON text instead. `file` names
// the file in errors.
TrainConfig apply_config_json(const TrainConfig& base, const std::string& text, const std::string& file,
                              std::map<std::string, std::string>* meta);

// DIR/run.json as written by `topksae train --out DIR`.
struct RunFile {
  TrainConfig cfg;
  DataSpec data;
  std::map<std::string, std::string> metadata;  // key -> JSON text
  int64_t checkpoint_every_tokens = 0;
};
RunFile parse_run_json(const std::string& text, const std::string& file);

}  // namespace topksae::cli
