// Shared by the bench binaries: arguments, timing (CUDA events on the GPU, a steady clock on the
// CPU; median of many runs after a warm-up), the card's own ceilings, the PERF.md targets, and
// the JSON + table output. Every number a bench prints comes from a run that was validated first.
#pragma once
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "topksae/device.h"

namespace topksae::bench {

struct Shape {
  int64_t d_in, d_sae, k, batch;
  std::string str() const;  // "2304x65536 k=64 B=4096"
};

struct Args {
  bool tiny = false;        // one tiny shape, few iterations (CI smoke)
  bool want_cpu = false;    // run the CPU twin even on large shapes
  bool no_gpu = false;      // skip GPU variants even when a GPU is present
  bool device_init = false; // bench_train_step: the state made on the device (huge shapes do it anyway)
  bool graph = false;       // bench_train_step: also the step replayed as a CUDA graph (--graph)
  int warmup = 3, iters = 20;
  std::string json_path;    // write the JSON here ("" = none)
  std::vector<Shape> shapes;
  std::vector<std::string> precisions;  // fp32 tf32 bf16
  std::vector<std::string> encoder_gemms;  // cublas lt auto (EncoderGemm's names; default cublas)
  // Parses argv; --help prints usage and exits. Defaults: the PERF.md shapes and all precisions.
  static Args parse(int argc, char** argv, const char* name, const char* what);
};

struct Stats {
  double median_ms = 0, min_ms = 0, max_ms = 0;
  int n = 0;
};
Stats summarize(std::vector<double> ms);

// Times fn(i) (i = iteration number, for rotating inputs) on the CPU with a steady clock.
Stats time_cpu(const std::function<void(int)>& fn, int warmup, int iters);
// Times fn(i) on the GPU with a pair of CUDA events per iteration around the work fn queues on
// `stream`; synchronises once at the end. Throws Error without CUDA.
Stats time_gpu(Stream stream, const std::function<void(int)>& fn, int warmup, int iters);

// The card's ceilings, measured in this binary: device copy (GB/s, read + write) and cuBLAS GEMM
// TFLOP/s for fp32 / tf32 / bf16. Empty without a GPU.
nlohmann::json measure_ceilings(bool tiny);
// A short description of the GPU ("NVIDIA H200, 132 SMs, CC 9.0") or "none".
std::string gpu_name();
// Bytes of device memory in use right now (total - free), 0 without a GPU.
size_t device_memory_used();

// PERF.md targets / floors for a shape, by key ("train_tf32_ms", "decode_sparse_ms", ...), as JSON
// (null when PERF.md names none for this shape).
nlohmann::json perf_targets(const Shape& s);

// Collects result rows; prints a table and writes {"bench","device","ceilings","results"}.
class Report {
 public:
  Report(std::string bench, const Args& args);
  void set_ceilings(nlohmann::json c) { ceilings_ = std::move(c); }
  void add(nlohmann::json row);  // needs "variant"; "ms" when timed, "skipped" otherwise
  void finish();                 // table to stdout, JSON to args.json_path
 private:
  std::string bench_;
  const Args& args_;
  nlohmann::json ceilings_ = nlohmann::json::object();
  std::vector<nlohmann::json> rows_;
};

bool gpu_usable(const Args& a);  // built with CUDA, a device present, and not --no-gpu

// Relative L2 error ||a - b|| / ||b|| (inf on NaN or when b is all zero and a is not).
double rel_l2(const float* a, const float* b, size_t n);

}  // namespace topksae::bench
