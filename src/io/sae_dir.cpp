#include "topksae/sae_dir.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/safetensors.h"

namespace topksae {

using nlohmann::json;
using ojson = nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

// Keys of a TopK training config (sae_lens TopKTrainingSAEConfig) kept in SaeDirExtras::training_json.
const std::set<std::string> kTrainingKeys = {"decoder_init_norm", "use_sparse_activations", "aux_loss_coefficient"};

// metadata written when the caller does not set it (sae_lens 6.13.1 SAEMetadata defaults).
const std::vector<std::pair<std::string, std::string>> kDefaultMetadata = {
    {"sae_lens_version", "\"6.13.1\""},      {"sae_lens_training_version", "\"6.13.1\""},
    {"model_name", "null"},                  {"hook_name", "null"},
    {"hook_head_index", "null"},             {"context_size", "null"},
    {"prepend_bos", "true"},                 {"dataset_path", "null"},
    {"exclude_special_tokens", "false"},     {"sequence_separator_token", "\"bos\""},
    {"disable_concat_sequences", "false"},
};

// "6.13.1" -> {6, 13, 1}; non-numeric parts stop the parse (so "6.0.0rc1" is {6, 0, 0}).
std::vector<int> version_parts(const std::string& v) {
  std::vector<int> out;
  size_t i = 0;
  while (i < v.size() && out.size() < 3) {
    int x = 0;
    size_t start = i;
    while (i < v.size() && v[i] >= '0' && v[i] <= '9' && x < 100000) x = x * 10 + (v[i++] - '0');
    if (i == start) break;
    out.push_back(x);
    if (i < v.size() && v[i] == '.') ++i;
    else break;
  }
  return out;
}

int64_t get_int(const json& j, const char* key, const std::string& src) {
  const json& v = j.at(key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return int64_t(d);
  }
  TOPKSAE_FAIL(src, ": field \"", key, "\" must be an integer, got ", v.dump());
}

bool get_bool(const json& j, const char* key, const std::string& src) {
  const json& v = j.at(key);
  if (!v.is_boolean()) TOPKSAE_FAIL(src, ": field \"", key, "\" must be true or false, got ", v.dump());
  return v.get<bool>();
}

std::string get_str(const json& j, const char* key, const std::string& src) {
  const json& v = j.at(key);
  if (!v.is_string()) TOPKSAE_FAIL(src, ": field \"", key, "\" must be a string, got ", v.dump());
  return v.get<std::string>();
}

// A weights-file tensor as f32 after checking its name, shape and dtype.
std::vector<float> read_weight(const SafetensorsFile& f, const std::string& name, const Shape& want) {
  const ArrayView& t = f.at(name);
  if (t.shape != want)
    TOPKSAE_FAIL(f.source(), ": tensor '", name, "' has shape ", shape_str(t.shape), " but cfg.json implies ", shape_str(want));
  if (t.dtype != DType::f32 && t.dtype != DType::f16 && t.dtype != DType::bf16 && t.dtype != DType::f64)
    TOPKSAE_FAIL(f.source(), ": tensor '", name, "' has dtype ", dtype_name(t.dtype), ", expected a float dtype");
  return t.to_f32();
}

}  // namespace

namespace {
SaeConfig parse_cfg(std::string_view text, const std::string& src, SaeDirExtras* extras) {
  json j;
  try {
    j = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    TOPKSAE_FAIL(src, ": not valid JSON: ", e.what());
  }
  if (!j.is_object()) TOPKSAE_FAIL(src, ": must hold a JSON object, got ", j.type_name());

  // sae_lens rewrites configs older than 6.0 (no version, or < 6) on load; the one rewrite that
  // matters here turns {"architecture": "standard", "activation_fn_str": "topk",
  // "activation_fn_kwargs": {"k": K}} into a TopK config.
  std::string version;
  if (j.contains("metadata") && j["metadata"].is_object() && j["metadata"].contains("sae_lens_version") &&
      j["metadata"]["sae_lens_version"].is_string())
    version = j["metadata"]["sae_lens_version"].get<std::string>();
  else if (j.contains("sae_lens_version") && j["sae_lens_version"].is_string())
    version = j["sae_lens_version"].get<std::string>();
  const std::vector<int> vp = version_parts(version);
  const bool pre6 = vp.empty() || vp[0] < 6;
  if (pre6) {
    const char* fn_key = j.contains("activation_fn_str") ? "activation_fn_str" : "activation_fn";
    if (j.contains(fn_key) && j[fn_key] == "topk" && j.value("architecture", "standard") == "standard")
      j["architecture"] = "topk";
    if (!j.contains("k") && j.contains("activation_fn_kwargs") && j["activation_fn_kwargs"].is_object() &&
        j["activation_fn_kwargs"].contains("k"))
      j["k"] = j["activation_fn_kwargs"]["k"];
  }

  for (const char* key : {"architecture", "d_in", "d_sae", "k"})
    if (!j.contains(key)) TOPKSAE_FAIL(src, ": missing required field \"", key, "\"");
  const std::string arch = get_str(j, "architecture", src);
  if (arch != "topk")
    TOPKSAE_FAIL(src, ": architecture \"", arch, "\" is not supported; this engine handles only \"topk\" SAEs");

  SaeConfig c;
  c.d_in = get_int(j, "d_in", src);
  c.d_sae = get_int(j, "d_sae", src);
  c.k = get_int(j, "k", src);
  if (j.contains("apply_b_dec_to_input")) c.apply_b_dec_to_input = get_bool(j, "apply_b_dec_to_input", src);
  if (j.contains("normalize_activations") && !j["normalize_activations"].is_null()) {
    try {
      c.normalize = normalize_from_name(get_str(j, "normalize_activations", src));
    } catch (const Error& e) {
      TOPKSAE_FAIL(src, ": ", e.what());
    }
  }
  if (j.contains("dtype")) {
    try {
      c.dtype = dtype_from_torch_name(get_str(j, "dtype", src));
    } catch (const Error& e) {
      TOPKSAE_FAIL(src, ": field \"dtype\": ", e.what());
    }
  }
  if (j.contains("reshape_activations") && !j["reshape_activations"].is_null()) {
    std::string r = get_str(j, "reshape_activations", src);
    if (r != "none") TOPKSAE_FAIL(src, ": reshape_activations \"", r, "\" is not supported (only \"none\")");
  }
  if (j.contains("rescale_acts_by_decoder_norm") && j["rescale_acts_by_decoder_norm"] == true)
    TOPKSAE_FAIL(src, ": rescale_acts_by_decoder_norm true is not supported (only plain TopK)");
  try {
    c.validate();
  } catch (const Error& e) {
    TOPKSAE_FAIL(src, ": ", e.what());
  }

  if (extras != nullptr) {
    extras->metadata_json.clear();
    extras->training_json.clear();
    if (j.contains("metadata") && j["metadata"].is_object())
      for (auto it = j["metadata"].begin(); it != j["metadata"].end(); ++it) extras->metadata_json[it.key()] = it.value().dump();
    for (const auto& key : kTrainingKeys)
      if (j.contains(key)) extras->training_json[key] = j[key].dump();
  }
  return c;
}
}  // namespace

SaeConfig parse_sae_cfg_json(std::string_view text, const std::string& src, SaeDirExtras* extras) {
  try {
    return parse_cfg(text, src, extras);
  } catch (const json::exception& e) {  // a mistyped field the checks above did not anticipate
    TOPKSAE_FAIL(src, ": unexpected content: ", e.what());
  }
}

std::string sae_cfg_json(const SaeConfig& c, const SaeDirExtras& extras) {
  c.validate();
  ojson j;
  j["d_in"] = c.d_in;
  j["d_sae"] = c.d_sae;
  j["dtype"] = std::string(torch_dtype_name(c.dtype));
  j["device"] = "cpu";
  j["apply_b_dec_to_input"] = c.apply_b_dec_to_input;
  j["normalize_activations"] = std::string(normalize_name(c.normalize));
  j["reshape_activations"] = "none";
  j["k"] = c.k;
  j["architecture"] = "topk";
  for (const auto& [key, text] : extras.training_json) {
    try {
      j[key] = ojson::parse(text);
    } catch (const ojson::exception& e) {
      TOPKSAE_FAIL("training config key '", key, "': value is not valid JSON text: ", text);
    }
  }
  ojson meta = ojson::object();
  for (const auto& [key, text] : kDefaultMetadata) meta[key] = ojson::parse(text);
  for (const auto& [key, text] : extras.metadata_json) {
    try {
      meta[key] = ojson::parse(text);
    } catch (const ojson::exception& e) {
      TOPKSAE_FAIL("metadata key '", key, "': value is not valid JSON text: ", text);
    }
  }
  meta["sae_lens_version"] = kSaeLensVersion;  // the format written is 6.13.1's whatever was read
  j["metadata"] = std::move(meta);
  return j.dump(2) + "\n";
}

Sae load_sae_dir(const fs::path& dir, SaeDirExtras* extras) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) TOPKSAE_FAIL(dir.string(), ": not a directory (expected an SAE directory with cfg.json and sae_weights.safetensors)");
  const fs::path cfg_path = dir / kSaeCfgFile;
  Sae sae;
  sae.cfg = parse_sae_cfg_json(read_small_file(cfg_path), cfg_path.string(), extras);
  const SaeConfig& c = sae.cfg;

  const fs::path w_path = dir / kSaeWeightsFile;
  if (!fs::exists(w_path, ec)) TOPKSAE_FAIL(w_path.string(), ": no such file");
  SafetensorsFile w = SafetensorsFile::open(w_path);
  const std::set<std::string> want = {"W_enc", "W_dec", "b_enc", "b_dec"};
  for (const ArrayView& t : w.tensors()) {
    if (want.count(t.name)) continue;
    if (t.name == "scaling_factor") {  // sae_lens drops a scaling_factor of all ones
      std::vector<float> s;
      if (t.dtype == DType::f32 || t.dtype == DType::f16 || t.dtype == DType::bf16 || t.dtype == DType::f64) s = t.to_f32();
      if (s.empty() || !std::all_of(s.begin(), s.end(), [](float v) { return v == 1.f; }))
        TOPKSAE_FAIL(w_path.string(), ": tensor 'scaling_factor' is not all ones; fold it into the weights first");
      continue;
    }
    TOPKSAE_FAIL(w_path.string(), ": unexpected tensor '", t.name, "' (a TopK SAE holds exactly W_enc, W_dec, b_enc, b_dec)");
  }
  for (const auto& name : want)
    if (!w.contains(name)) TOPKSAE_FAIL(w_path.string(), ": missing tensor '", name, "'");
  sae.params.W_enc = read_weight(w, "W_enc", {c.d_in, c.d_sae});
  sae.params.W_dec = read_weight(w, "W_dec", {c.d_sae, c.d_in});
  sae.params.b_enc = read_weight(w, "b_enc", {c.d_sae});
  sae.params.b_dec = read_weight(w, "b_dec", {c.d_in});

  if (extras != nullptr) {
    extras->sparsity.reset();
    extras->scaling_factor.reset();
    const fs::path sp = dir / kSaeSparsityFile;
    if (fs::exists(sp, ec)) {
      SafetensorsFile s = SafetensorsFile::open(sp);
      extras->sparsity = read_weight(s, "sparsity", {c.d_sae});
    }
    const fs::path scaler = dir / kActivationScalerFile;
    if (fs::exists(scaler, ec)) {
      json j;
      try {
        j = json::parse(read_small_file(scaler, 1 << 20));
      } catch (const json::exception& e) {
        TOPKSAE_FAIL(scaler.string(), ": not valid JSON: ", e.what());
      }
      if (!j.is_object() || !j.contains("scaling_factor"))
        TOPKSAE_FAIL(scaler.string(), ": expected {\"scaling_factor\": <number or null>}");
      const json& v = j["scaling_factor"];
      if (v.is_number()) extras->scaling_factor = v.get<float>();
      else if (!v.is_null()) TOPKSAE_FAIL(scaler.string(), ": scaling_factor must be a number or null, got ", v.dump());
    }
  }
  return sae;
}

void save_sae_dir(const fs::path& dir, const Sae& sae, const SaeDirExtras& extras) {
  sae.cfg.validate();
  sae.params.check_shapes(sae.cfg);
  const SaeConfig& c = sae.cfg;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) TOPKSAE_FAIL(dir.string(), ": cannot create directory: ", ec.message());

  SafetensorsWriter w;
  w.add_f32("W_enc", {c.d_in, c.d_sae}, sae.params.W_enc.data(), c.dtype);
  w.add_f32("W_dec", {c.d_sae, c.d_in}, sae.params.W_dec.data(), c.dtype);
  w.add_f32("b_enc", {c.d_sae}, sae.params.b_enc.data(), c.dtype);
  w.add_f32("b_dec", {c.d_in}, sae.params.b_dec.data(), c.dtype);
  w.write(dir / kSaeWeightsFile);
  write_file_atomic(dir / kSaeCfgFile, sae_cfg_json(c, extras));

  // Files we do not write this time are removed: a sparsity or scaler file left from an earlier
  // save would describe other weights.
  const fs::path sp = dir / kSaeSparsityFile;
  if (extras.sparsity) {
    TOPKSAE_CHECK(int64_t(extras.sparsity->size()) == c.d_sae, "sparsity has ", extras.sparsity->size(),
                  " entries, expected d_sae = ", c.d_sae);
    SafetensorsWriter s;
    s.add_f32("sparsity", {c.d_sae}, extras.sparsity->data());
    s.write(sp);
  } else {
    fs::remove(sp, ec);
  }
  const fs::path scaler = dir / kActivationScalerFile;
  if (!extras.training_json.empty()) {
    json j;
    j["scaling_factor"] = extras.scaling_factor ? json(*extras.scaling_factor) : json(nullptr);
    write_file_atomic(scaler, j.dump() + "\n");
  } else {
    fs::remove(scaler, ec);
  }
}

}  // namespace topksae
