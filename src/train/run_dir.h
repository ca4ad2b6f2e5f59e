// The output directory of a `topksae train` run (--out DIR), outside the command's flags and flow
// (tools/topksae/cmd_train.cpp):
//   DIR/cfg.json, sae_weights.safetensors, sparsity.safetensors   the final SAE (scaling folded in)
//   DIR/checkpoint/        the latest resumable checkpoint
//   DIR/run.json           what --resume needs: the training config and the data description
//   DIR/metrics.jsonl      one line per step, sae_lens metric names
//   DIR/report.html        the self-contained report written at the end
// plus the data stream a run reads and the report's content.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "topksae/data.h"
#include "topksae/file_source.h"
#include "topksae/report.h"
#include "topksae/synthetic.h"
#include "topksae/train.h"

namespace topksae::run_dir {

// Where the data comes from; stored in run.json so that --resume rebuilds the same stream.
struct DataSpec {
  // A live stream (topksae.Trainer, python/src/live_run.cpp): run.json's "data" is then only
  // {"source":"live","shuffle","buffer_batches"}, and `topksae train --resume` refuses it.
  bool live = false;
  std::string path;  // empty: synthetic
  std::string tensor;
  std::string shuffle = "buffer";  // "buffer" (sae_lens's mixing buffer) or "none"
  int64_t buffer_batches = 16;
  bool skip_nonfinite = false, loop = false;
  SyntheticConfig synthetic;
};

// DIR/run.json.
struct RunFile {
  TrainConfig config;
  DataSpec data;
  std::map<std::string, std::string> metadata;  // cfg.json metadata, JSON text per key
  int64_t checkpoint_every_tokens = 0;
  std::string init;  // --init, for the record
};
void write_run_file(const std::filesystem::path& dir, const RunFile& run);  // atomically
RunFile read_run_file(const std::filesystem::path& dir);                     // Error naming the file
// The same from and to text (tests/fuzz/fuzz_run_files.cpp reaches them without files); `file`
// names the file in errors.
std::string run_file_json(const RunFile& run);
RunFile parse_run_file(const std::string& text, const std::string& file);

// base with the keys of a --config file's text applied (sae_lens names); the runner keys that
// describe the data (model_name, hook_name, ...) go to *meta as JSON text instead. Error naming
// `file` for bad JSON or a bad value.
TrainConfig apply_config_json(const TrainConfig& base, const std::string& text, const std::string& file,
                              std::map<std::string, std::string>* meta);

// Makes `out` an empty run directory. An existing one is replaced only with `overwrite`, and only
// when it looks like a run's (empty, or holding run.json or cfg.json): never someone else's files.
void prepare(const std::filesystem::path& out, bool overwrite);

// The stream a run reads: the files (through the mixing buffer unless shuffle is "none") or the
// synthetic source, behind the prefetch thread. `files` / `synthetic` point into it for reporting.
struct Source {
  std::unique_ptr<ActivationSource> stream;
  FileSource* files = nullptr;
  SyntheticSource* synthetic = nullptr;
};
Source open_source(const DataSpec& d, const TrainConfig& cfg);

// The report's summary rows, density histogram and (synthetic data) the recovery of the planted
// dictionary; the caller adds the metrics history. `last` is the final step's metrics, if any ran.
ReportContent report_content(const std::filesystem::path& out, const std::string& data, const std::string& device,
                             const TrainConfig& cfg, const TrainState& st, const std::optional<StepMetrics>& last,
                             const SyntheticSource* synthetic);

}  // namespace topksae::run_dir
