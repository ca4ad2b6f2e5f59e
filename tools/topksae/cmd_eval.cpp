// `topksae eval --sae DIR --input X`: the evaluation metrics of MATH.md (clear definitions, and
// sae_lens's variants named apart) and the feature-density histogram, as text or JSON.
#include <fstream>
#include <iostream>

#include "cli_common.h"
#include "command.h"
#include "topksae/atomic_file.h"
#include "topksae/metrics.h"
#include "cli_inference.h"

namespace topksae::cli {
namespace {
struct EvalArgs {
  std::string sae, input, tensor, json_out, device = "auto", precision = "fp32";
  int64_t batch = 4096, max_tokens = -1;
  int bins = 20;
  bool json = false, skip_nonfinite = false;
};

void run_eval(const EvalArgs& a) {
  const ModelOptions opts = model_options(a.device, a.precision, "eval");
  auto model = Model::load(a.sae, opts);
  const Sae& sae = model->sae();
  auto src = open_file_source(a.input, a.tensor, {.skip_nonfinite = a.skip_nonfinite});
  check_d_in(sae, src->d_in(), a.input);
  EvalRunner runner(*model);
  for_each_batch(*src, a.batch, a.max_tokens, [&](const float* x, int64_t n) { runner.add(x, n); });
  EvalMetrics m = runner.result(a.bins);
  if (src->skipped()) std::cerr << "skipped " << src->skipped() << " rows holding NaN or Inf\n";
  if (!a.json_out.empty()) write_file_atomic(a.json_out, m.to_json() + "\n");
  if (a.json) std::cout << m.to_json() << "\n";
  else {
    std::cout << "SAE " << a.sae << " (d_in " << sae.cfg.d_in << ", d_sae " << sae.cfg.d_sae << ", k " << sae.cfg.k
              << ") on " << src->describe() << "\n"
              << m.to_text();
  }
}

CommandRegistration reg([](CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Evaluate an SAE directory on activation files: L0, MSE, explained variance, "
                                         "cosine, shrinkage, dead latents, feature-density histogram");
  auto a = std::make_shared<EvalArgs>();
  cmd->add_option("--sae", a->sae, "SAE directory (sae_lens format)")->required();
  cmd->add_option("--input", a->input, "activations: a .npy / .safetensors / .arrow file or a directory of them")
      ->required();
  cmd->add_option("--tensor", a->tensor, "the safetensors tensor / Arrow column, if a shard holds several");
  cmd->add_option("--batch-size", a->batch, "rows per batch")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--max-tokens", a->max_tokens, "evaluate at most this many rows (-1: all)");
  cmd->add_option("--bins", a->bins, "density histogram bins")->check(CLI::Range(1, 1000))->capture_default_str();
  cmd->add_flag("--json", a->json, "print JSON instead of text");
  cmd->add_option("--json-out", a->json_out, "also write the JSON to this file");
  cmd->add_flag("--skip-nonfinite", a->skip_nonfinite, "skip (and count) rows holding NaN or Inf instead of failing");
  add_device_option(cmd, &a->device);
  add_precision_option(cmd, &a->precision);
  cmd->callback([a] { run_eval(*a); });
});
}  // namespace
}  // namespace topksae::cli
