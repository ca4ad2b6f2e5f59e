// `topksae info PATH`: what a safetensors file, an npy file, an SAE directory or Arrow activations
// (an .arrow file or a `datasets` directory, e.g. sae_lens's cache) hold (names, dtypes, shapes,
// metadata, config, columns), so a user can look before training. --json for scripts.
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "command.h"
#include "dist/sharded_files.h"
#include "topksae/arrow_ipc.h"
#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/file_source.h"
#include "topksae/npy.h"
#include "topksae/ops_cpu.h"
#include "topksae/safetensors.h"
#include "topksae/sae_dir.h"

namespace topksae::cli {
namespace {
namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

struct InfoArgs {
  std::string path;
  bool json = false;
  bool system = false;
};

ojson tensor_json(const ArrayView& t) {
  ojson j;
  j["name"] = t.name;
  j["dtype"] = std::string(dtype_name(t.dtype));
  j["shape"] = t.shape;
  j["bytes"] = t.nbytes;
  return j;
}

ojson safetensors_info(const fs::path& p) {
  SafetensorsFile f = SafetensorsFile::open(p);
  ojson j;
  j["kind"] = "safetensors";
  j["path"] = p.string();
  j["tensors"] = ojson::array();
  for (const auto& t : f.tensors()) j["tensors"].push_back(tensor_json(t));
  j["metadata"] = f.metadata();
  return j;
}

ojson npy_info(const fs::path& p) {
  NpyFile f = NpyFile::open(p);
  ojson j;
  j["kind"] = "npy";
  j["path"] = p.string();
  j["version"] = std::to_string(f.version_major()) + ".0";
  ojson t = tensor_json(f.array());
  t.erase("name");
  j["array"] = t;
  if (!f.array().shape.empty()) {
    j["rows"] = f.array().rows();
    j["row_width"] = f.array().cols();
  }
  return j;
}

ojson sae_info(const fs::path& dir) {
  SaeDirExtras ex;
  Sae s = load_sae_dir(dir, &ex);  // validates everything, weights included
  ojson j;
  j["kind"] = "sae_dir";
  j["path"] = dir.string();
  j["cfg"] = ojson::parse(read_small_file(dir / kSaeCfgFile));
  j["weights"] = ojson::array();
  SafetensorsFile w = SafetensorsFile::open(dir / kSaeWeightsFile);
  for (const auto& t : w.tensors()) j["weights"].push_back(tensor_json(t));
  j["has_sparsity"] = ex.sparsity.has_value();
  j["checkpoint"] = !ex.training_json.empty();
  if (ex.scaling_factor) j["scaling_factor"] = *ex.scaling_factor;
  (void)s;
  return j;
}

// Arrow activations: the dataset as training would read it, and the columns of its first file.
ojson arrow_info(const fs::path& p) {
  auto ds = FileDataset::open(p);
  ArrowStreamFile first = ArrowStreamFile::open(ds->shard_path(0));
  ojson j;
  j["kind"] = "arrow";
  j["path"] = p.string();
  j["dataset"] = ds->describe();
  j["files"] = ds->shards();
  j["column"] = first.column();
  j["dtype"] = std::string(dtype_name(first.dtype()));
  j["context_size"] = first.context_size();
  j["d_in"] = ds->d_in();
  j["rows"] = ds->rows();
  j["columns"] = ojson::array();
  for (const auto& c : first.columns())
    j["columns"].push_back({{"name", c.name}, {"type", c.type}, {"activations", c.activations}});
  return j;
}

bool has_arrow_files(const fs::path& dir) {
  std::error_code ec;
  for (auto& e : fs::directory_iterator(dir, ec))
    if (e.is_regular_file() && e.path().extension() == ".arrow") return true;
  return false;
}

ojson info_of(const fs::path& p) {
  std::error_code ec;
  if (fs::is_directory(p, ec)) {
    if (fs::exists(p / kSaeCfgFile, ec)) return sae_info(p);
    if (has_arrow_files(p)) return arrow_info(p);
    TOPKSAE_FAIL(p.string(), ": a directory without cfg.json or *.arrow files (not an SAE or `datasets` directory);",
                 " pass a file inside it");
  }
  if (!fs::exists(p, ec)) TOPKSAE_FAIL(p.string(), ": no such file or directory");
  if (p.extension() == ".arrow") return arrow_info(p);
  // Decide by the npy magic, else safetensors (which has no magic).
  auto map = MappedFile::open(p);
  if (map->size() >= 6 && std::memcmp(map->data(), "\x93NUMPY", 6) == 0) return npy_info(p);
  if (p.extension() == ".npy") return npy_info(p);  // reports the bad magic
  return safetensors_info(p);
}

void print_tensor_line(std::ostream& os, const ojson& t) {
  os << "  " << t.value("name", std::string("(array)")) << "  " << t["dtype"].get<std::string>() << " "
     << shape_str(t["shape"].get<Shape>()) << "  (" << t["bytes"].get<uint64_t>() << " bytes)\n";
}

void print_text(const ojson& j) {
  std::ostream& os = std::cout;
  const std::string kind = j["kind"];
  os << j["path"].get<std::string>() << ": ";
  if (kind == "safetensors") {
    os << "safetensors, " << j["tensors"].size() << " tensors\n";
    for (const auto& t : j["tensors"]) print_tensor_line(os, t);
    if (!j["metadata"].empty()) {
      os << "metadata:\n";
      for (auto it = j["metadata"].begin(); it != j["metadata"].end(); ++it)
        os << "  " << it.key() << " = " << it.value().get<std::string>() << "\n";
    }
  } else if (kind == "npy") {
    os << "npy " << j["version"].get<std::string>() << "\n";
    print_tensor_line(os, j["array"]);
    if (j.contains("rows")) os << "  as activations: " << j["rows"] << " rows of width " << j["row_width"] << "\n";
  } else if (kind == "arrow") {
    os << "Arrow activations: " << j["dataset"].get<std::string>() << "\n";
    os << "  context size " << j["context_size"] << ", d_in " << j["d_in"] << "; columns:\n";
    for (const auto& c : j["columns"])
      os << "  " << c["name"].get<std::string>() << "  " << c["type"].get<std::string>()
         << (c["name"] == j["column"] ? "  (read)" : "") << "\n";
  } else {
    const ojson& c = j["cfg"];
    os << "SAE directory (" << c.value("architecture", std::string("?")) << ", d_in=" << c["d_in"] << ", d_sae=" << c["d_sae"]
       << ", k=" << c["k"] << ", dtype=" << c.value("dtype", std::string("float32")) << ")"
       << (j["checkpoint"].get<bool>() ? ", training checkpoint" : "") << "\n";
    os << "weights:\n";
    for (const auto& t : j["weights"]) print_tensor_line(os, t);
    os << "sparsity.safetensors: " << (j["has_sparsity"].get<bool>() ? "present" : "absent") << "\n";
    if (j.contains("scaling_factor")) os << "activation scaling factor: " << j["scaling_factor"] << "\n";
    os << "cfg.json:\n" << c.dump(2) << "\n";
  }
}

// --system: what runs the CPU backend here (the GEMM library, the kernels it picked, threads) and
// whether the CUDA backend was built, so a slow machine can be diagnosed.
ojson system_info() {
  const cpu::GemmLibraryInfo g = cpu::gemm_library_info();
  ojson j;
  j["kind"] = "system";
  j["cpu_gemm"] = {{"library", g.library}, {"version", g.version}, {"isa", g.isa}, {"threading", g.threading},
                   {"threads", g.threads}};
  j["cpu_gemm_line"] = g.str();
#ifdef TOPKSAE_HAS_CUDA
  j["cuda_backend"] = true;
#else
  j["cuda_backend"] = false;
#endif
  return j;
}

void run_info(const InfoArgs& a) {
  TOPKSAE_CHECK(a.system || !a.path.empty(), "topksae info: give a PATH, or --system");
  if (a.system) {
    ojson j = system_info();
    if (a.json) std::cout << j.dump(2) << "\n";
    else
      std::cout << "CPU GEMM: " << j["cpu_gemm_line"].get<std::string>() << "\n"
                << "CUDA backend: " << (j["cuda_backend"].get<bool>() ? "built" : "not built") << "\n";
    return;
  }
  if (dist::is_sharded_checkpoint(a.path)) {  // a latent-sharded run's checkpoint set
    if (a.json) {
      ojson j = ojson::parse(read_small_file(fs::path(a.path) / dist::kShardedManifest));
      j["kind"] = "sharded_checkpoint";
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << dist::describe_sharded_checkpoint(a.path);
    }
    return;
  }
  ojson j = info_of(a.path);
  if (a.json) std::cout << j.dump(2) << "\n";
  else print_text(j);
}

CommandRegistration reg([](CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Show what a safetensors / npy / Arrow file or an SAE directory holds");
  auto args = std::make_shared<InfoArgs>();
  cmd->add_option("path", args->path, "a .safetensors, .npy or .arrow file, an SAE directory or a `datasets` directory");
  cmd->add_flag("--json", args->json, "print JSON instead of text");
  cmd->add_flag("--system", args->system, "show the CPU GEMM library and the kernels it picked on this machine");
  cmd->callback([args] { run_info(*args); });
});
}  // namespace
}  // namespace topksae::cli
