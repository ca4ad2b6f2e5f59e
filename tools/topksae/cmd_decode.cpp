// `topksae decode --sae DIR --input FEATS.safetensors --out X.npy|X.safetensors`: features (as
// `topksae encode` writes them: top-k pairs or CSR) back to activations xhat = z @ W_dec + b_dec.
#include <cstring>
#include <iostream>

#include "cli_common.h"
#include "command.h"
#include "topksae/npy.h"
#include "cli_inference.h"
#include "topksae/safetensors.h"

namespace topksae::cli {
namespace {
struct DecodeArgs {
  std::string sae, input, out, out_tensor = "activations", device = "auto";
  int64_t batch = 4096;
  bool overwrite = false;
};

std::vector<int32_t> read_i32(const SafetensorsFile& f, const std::string& name) {
  const ArrayView& v = f.at(name);
  TOPKSAE_CHECK(v.dtype == DType::i32, f.source(), ": '", name, "' must be int32, it is ", dtype_name(v.dtype));
  std::vector<int32_t> out(static_cast<size_t>(v.numel()));
  std::memcpy(out.data(), v.data, v.nbytes);
  return out;
}

void run_decode(const DecodeArgs& a) {
  const ModelOptions opts = model_options(a.device, "fp32", "decode");  // no encoder GEMM: no --precision
  TOPKSAE_CHECK(a.overwrite || !std::filesystem::exists(a.out), a.out, " exists; pass --overwrite to replace it");
  std::string ext = std::filesystem::path(a.out).extension().string();
  TOPKSAE_CHECK(ext == ".npy" || ext == ".safetensors", a.out, ": the output must end in .npy or .safetensors");
  auto model = Model::load(a.sae, opts);
  const Sae& sae = model->sae();
  SafetensorsFile f = SafetensorsFile::open(a.input);
  auto meta = f.metadata();
  if (meta.count("d_sae"))
    TOPKSAE_CHECK(meta["d_sae"] == std::to_string(sae.cfg.d_sae), a.input, ": features of an SAE with d_sae ",
                  meta["d_sae"], ", but ", a.sae, " has d_sae ", sae.cfg.d_sae);
  std::vector<float> xhat;
  int64_t rows = 0;
  if (f.contains("indptr")) {
    const ArrayView& ip = f.at("indptr");
    TOPKSAE_CHECK(ip.dtype == DType::i64 && ip.shape.size() == 1 && ip.shape[0] >= 1, a.input,
                  ": 'indptr' must be int64 [N+1]");
    rows = ip.shape[0] - 1;
    std::vector<int64_t> indptr(size_t(ip.shape[0]));  // [N + 1]
    std::memcpy(indptr.data(), ip.data, ip.nbytes);
    const std::vector<int32_t> indices = read_i32(f, "indices");  // [nnz]
    const std::vector<float> values = f.read_f32("values");       // [nnz]
    TOPKSAE_CHECK(indices.size() == values.size() && int64_t(indices.size()) == indptr.back(), a.input,
                  ": CSR 'indices' and 'values' must both hold indptr[N] = ", indptr.back(), " entries");
    xhat.resize(size_t(rows * sae.cfg.d_in));
    decode_csr_rows(*model, indptr.data(), indices.data(), values.data(), rows, xhat.data(), a.batch);
  } else {
    TOPKSAE_CHECK(f.contains("indices") && f.contains("values"), a.input,
                  ": holds neither top-k features (indices, values) nor CSR (indptr, indices, values)");
    const ArrayView& iv = f.at("indices");
    TOPKSAE_CHECK(iv.shape.size() == 2 && f.at("values").shape == iv.shape, a.input,
                  ": top-k 'indices' and 'values' must both be [N, k]");
    rows = iv.shape[0];
    const std::vector<int32_t> indices = read_i32(f, "indices");  // [N, k]
    const std::vector<float> values = f.read_f32("values");       // [N, k]
    xhat.resize(size_t(rows * sae.cfg.d_in));
    decode_topk_rows(*model, indices.data(), values.data(), rows, iv.shape[1], xhat.data(), a.batch);
  }
  if (sae.cfg.normalize == Normalize::constant_norm_rescale || sae.cfg.normalize == Normalize::layer_norm)
    std::cerr << "note: this SAE normalises each input row (" << normalize_name(sae.cfg.normalize)
              << "); the per-row statistics are not stored with the features, so the output is in the normalised "
                 "space\n";
  if (ext == ".npy") write_npy(a.out, DType::f32, {rows, sae.cfg.d_in}, xhat.data());
  else {
    SafetensorsWriter w;
    w.add(a.out_tensor, DType::f32, {rows, sae.cfg.d_in}, xhat.data());
    w.set_metadata("sae", a.sae);
    w.set_metadata("source", a.input);
    w.write(a.out);
  }
  std::cout << "decoded " << rows << " rows into " << a.out << " ([" << rows << ", " << sae.cfg.d_in << "] float32)\n";
}

CommandRegistration reg([](CLI::App& app) {
  auto* cmd = app.add_subcommand("decode", "Decode sparse features (from `topksae encode`) back to activations");
  auto a = std::make_shared<DecodeArgs>();
  cmd->add_option("--sae", a->sae, "SAE directory (sae_lens format)")->required();
  cmd->add_option("--input", a->input, "features .safetensors written by `topksae encode` (topk or csr)")->required();
  cmd->add_option("--out", a->out, "output .npy or .safetensors")->required();
  cmd->add_option("--out-tensor", a->out_tensor, "tensor name in a .safetensors output")->capture_default_str();
  cmd->add_flag("--overwrite", a->overwrite, "replace --out if it exists");
  cmd->add_option("--batch-size", a->batch, "rows per decode call")->check(CLI::PositiveNumber)->capture_default_str();
  add_device_option(cmd, &a->device);
  cmd->callback([a] { run_decode(*a); });
});
}  // namespace
}  // namespace topksae::cli
