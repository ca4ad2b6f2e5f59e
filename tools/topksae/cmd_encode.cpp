// `topksae encode --sae DIR --input X --out FEATS.safetensors [--format topk|csr]`: sparse features
// as FORMATS.md "Sparse features written by encode" describes: top-k pairs (indices int32 [N, k],
// values [N, k], by value descending) or CSR (indptr int64 [N+1], indices int32 [nnz], values [nnz]).
#include <iostream>

#include "cli_common.h"
#include "command.h"
#include "cli_inference.h"

namespace topksae::cli {
namespace {
struct EncodeArgs {
  std::string sae, input, tensor, out, format = "topk", values_dtype = "float32", device = "auto",
              precision = "fp32";
  int64_t batch = 4096, max_tokens = -1;
  bool skip_nonfinite = false, overwrite = false;
};

void run_encode(const EncodeArgs& a) {
  const ModelOptions opts = model_options(a.device, a.precision, "encode");
  TOPKSAE_CHECK(a.overwrite || !std::filesystem::exists(a.out), a.out, " exists; pass --overwrite to replace it");
  auto model = Model::load(a.sae, opts);
  const Sae& sae = model->sae();
  auto src = open_file_source(a.input, a.tensor, {.skip_nonfinite = a.skip_nonfinite});
  check_d_in(sae, src->d_in(), a.input);
  const DType vdt = dtype_from_torch_name(a.values_dtype);
  const int64_t k = sae.cfg.k;
  // Batch by batch into spill files beside --out: memory holds one batch, however many rows.
  FeatureFileWriter out(a.out, a.format == "csr", k, vdt);
  FeatureEncoder enc(*model, a.format == "csr", [&](const Features& batch) { out.append(batch); });
  const int64_t rows = for_each_batch(*src, a.batch, a.max_tokens, [&](const float* x, int64_t n) { enc.add(x, n); });
  out.set_metadata("format", a.format);
  out.set_metadata("d_sae", std::to_string(sae.cfg.d_sae));
  out.set_metadata("d_in", std::to_string(sae.cfg.d_in));
  out.set_metadata("k", std::to_string(k));
  out.set_metadata("sae", a.sae);
  out.set_metadata("source", a.input);
  out.finish();
  std::cout << "encoded " << rows << " rows of " << src->describe() << " into " << a.out << " (" << a.format
            << ", " << out.entries() << " entries";
  if (src->skipped()) std::cout << "; skipped " << src->skipped() << " rows holding NaN or Inf";
  std::cout << ")\n";
}

CommandRegistration reg([](CLI::App& app) {
  auto* cmd = app.add_subcommand("encode", "Encode activation files into sparse SAE features (safetensors)");
  auto a = std::make_shared<EncodeArgs>();
  cmd->add_option("--sae", a->sae, "SAE directory (sae_lens format)")->required();
  cmd->add_option("--input", a->input, "activations: a .npy / .safetensors / .arrow file or a directory of them")
      ->required();
  cmd->add_option("--out", a->out, "output .safetensors file")->required();
  cmd->add_option("--format", a->format, "topk (indices/values [N, k]) or csr (indptr/indices/values)")
      ->check(CLI::IsMember({"topk", "csr"}))
      ->capture_default_str();
  cmd->add_option("--values-dtype", a->values_dtype, "float32, float16 or bfloat16")
      ->check(CLI::IsMember({"float32", "float16", "bfloat16"}))
      ->capture_default_str();
  cmd->add_option("--tensor", a->tensor, "the safetensors tensor / Arrow column, if a shard holds several");
  cmd->add_option("--batch-size", a->batch, "rows per batch")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--max-tokens", a->max_tokens, "encode at most this many rows (-1: all)");
  cmd->add_flag("--skip-nonfinite", a->skip_nonfinite, "skip (and count) rows holding NaN or Inf instead of failing");
  cmd->add_flag("--overwrite", a->overwrite, "replace --out if it exists");
  add_device_option(cmd, &a->device);
  add_precision_option(cmd, &a->precision);
  cmd->callback([a] { run_encode(*a); });
});
}  // namespace
}  // namespace topksae::cli
