// Shared bench machinery (see bench_common.h).
#include "bench_common.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "topksae/error.h"
#include "topksae/ops_cpu.h"
#include "topksae/precision.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "topksae/ops_cuda.h"
#define BENCH_CUDA(expr)                                                                          \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) TOPKSAE_FAIL(#expr, ": ", cudaGetErrorString(e_));                     \
  } while (0)
#endif

namespace topksae::bench {

std::string Shape::str() const { return concat(d_in, "x", d_sae, " k=", k, " B=", batch); }

namespace {
void usage(const char* name, const char* what) {
  std::printf(
      "%s: %s\n"
      "  --tiny               one tiny shape (64x512 k=8 B=64), few iterations: a smoke run\n"
      "  --shape D,N,K,B      d_in,d_sae,k,batch (repeatable; default: the PERF.md shapes\n"
      "                       768,24576,32,4096 and 2304,65536,64,4096)\n"
      "  --precision P        fp32 | tf32 | bf16 (repeatable; default all)\n"
      "  --encoder-gemm G     cublas | lt | auto: the encoder GEMM's library (repeatable; default\n"
      "                       cublas); bench_encode times the GEMM alone per library, bench_train_step\n"
      "                       adds a step variant per library other than cublas\n"
      "  --iters N            timed runs per variant (median reported; default 20)\n"
      "  --warmup N           untimed runs first (default 3)\n"
      "  --graph              bench_train_step: add the step replayed as a CUDA graph (..._graph rows;\n"
      "                       every row then runs on a stream of its own, which a capture needs)\n"
      "  --cpu                also run the CPU twin on large shapes (slow)\n"
      "  --no-gpu             skip the GPU variants\n"
      "  --device-init        bench_train_step: start the GPU steps from a state made on the device\n"
      "                       (cuda::DeviceInit), plain step only; automatic above 12 GiB of host state\n"
      "  --json PATH          write the results as JSON\n",
      name, what);
}
}  // namespace

Args Args::parse(int argc, char** argv, const char* name, const char* what) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    auto next = [&]() -> std::string {
      TOPKSAE_CHECK(i + 1 < argc, name, ": ", s, " needs a value");
      return argv[++i];
    };
    if (s == "--help" || s == "-h") {
      usage(name, what);
      std::exit(0);
    } else if (s == "--tiny") {
      a.tiny = true;
    } else if (s == "--cpu") {
      a.want_cpu = true;
    } else if (s == "--graph") {
      a.graph = true;
    } else if (s == "--no-gpu") {
      a.no_gpu = true;
    } else if (s == "--device-init") {
      a.device_init = true;
    } else if (s == "--iters") {
      a.iters = std::stoi(next());
    } else if (s == "--warmup") {
      a.warmup = std::stoi(next());
    } else if (s == "--json") {
      a.json_path = next();
    } else if (s == "--precision") {
      const std::string p = next();
      TOPKSAE_CHECK(p == "fp32" || p == "tf32" || p == "bf16", name, ": unknown precision '", p, "'");
      a.precisions.push_back(p);
    } else if (s == "--encoder-gemm") {
      const std::string g = next();
      (void)cuda::encoder_gemm_from_name(g);  // throws naming the bad value
      a.encoder_gemms.push_back(g);
    } else if (s == "--shape") {
      Shape sh{};
      char c1 = 0, c2 = 0, c3 = 0;
      std::istringstream is(next());
      is >> sh.d_in >> c1 >> sh.d_sae >> c2 >> sh.k >> c3 >> sh.batch;
      TOPKSAE_CHECK(is && c1 == ',' && c2 == ',' && c3 == ',' && sh.d_in > 0 && sh.d_sae > 0 && sh.k > 0 &&
                        sh.k <= sh.d_sae && sh.batch > 0,
                    name, ": --shape wants d_in,d_sae,k,batch with 1 <= k <= d_sae");
      a.shapes.push_back(sh);
    } else {
      usage(name, what);
      TOPKSAE_FAIL(name, ": unknown argument '", s, "'");
    }
  }
  if (a.shapes.empty()) {
    if (a.tiny)
      a.shapes = {{64, 512, 8, 64}};
    else
      a.shapes = {{768, 24576, 32, 4096}, {2304, 65536, 64, 4096}};
  }
  if (a.tiny) {
    a.iters = std::min(a.iters, 3);
    a.warmup = std::min(a.warmup, 1);
  }
  if (a.precisions.empty()) a.precisions = {"fp32", "tf32", "bf16"};
  if (a.encoder_gemms.empty()) a.encoder_gemms = {"cublas"};
  TOPKSAE_CHECK(a.iters >= 1 && a.warmup >= 0, name, ": --iters must be >= 1 and --warmup >= 0");
  return a;
}

Stats summarize(std::vector<double> ms) {
  Stats s;
  if (ms.empty()) return s;
  std::sort(ms.begin(), ms.end());
  s.n = int(ms.size());
  s.median_ms = ms.size() % 2 ? ms[ms.size() / 2] : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
  s.min_ms = ms.front();
  s.max_ms = ms.back();
  return s;
}

Stats time_cpu(const std::function<void(int)>& fn, int warmup, int iters) {
  for (int i = 0; i < warmup; ++i) fn(i);
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn(warmup + i);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return summarize(ms);
}

bool gpu_usable(const Args& a) { return !a.no_gpu && cuda_available(); }

double rel_l2(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  if (den == 0) return num == 0 ? 0 : INFINITY;
  return std::sqrt(num / den);
}

nlohmann::json perf_targets(const Shape& s) {
  nlohmann::json t = nlohmann::json::object();
  if (s.batch != 4096) return t;
  if (s.d_in == 768 && s.d_sae == 24576 && s.k == 32) {
    t["train_tf32_ms"] = 2.0;
    t["train_floor_tf32_ms"] = 0.7;
    t["encode_gemm_tf32_ms_floor"] = 0.38;
    t["encode_gemm_fp32_ms_floor"] = 3.0;
    t["peer_train_saelens_dense_tf32_ms"] = 11.0;
    t["peer_decode_torch_csr_ms"] = 0.110;
  } else if (s.d_in == 2304 && s.d_sae == 65536 && s.k == 64) {
    t["train_tf32_ms"] = 8.0;
    t["train_fp32_ms"] = 30.0;
    t["train_bf16_ms"] = 6.0;
    t["train_floor_tf32_ms"] = 5.7;
    t["train_peak_GiB"] = 6.0;
    t["decode_sparse_ms"] = 0.25;
    t["decode_floor_ms"] = 0.15;
    t["encode_topk_tf32_ms"] = 4.0;
    t["encode_gemm_tf32_ms_floor"] = 3.1;
    t["encode_gemm_fp32_ms_floor"] = 24.0;
    t["peer_train_saelens_dense_tf32_ms"] = 53.8;
    t["peer_decode_torch_csr_ms"] = 0.497;
  }
  return t;
}

Report::Report(std::string bench, const Args& args) : bench_(std::move(bench)), args_(args) {}

void Report::add(nlohmann::json row) {
  // Print each row as it lands too, so a run cut short still shows what it measured.
  std::cout << "# " << row.dump() << std::endl;
  rows_.push_back(std::move(row));
}

void Report::finish() {
  std::printf("\n== %s on %s ==\n", bench_.c_str(), gpu_name().c_str());
  std::printf("CPU GEMM: %s\n", cpu::gemm_library_info().str().c_str());  // what ran the cpu_twin rows
  if (!ceilings_.empty()) {
    std::printf("ceilings:");
    for (auto it = ceilings_.begin(); it != ceilings_.end(); ++it) std::printf(" %s=%.1f", it.key().c_str(), it.value().get<double>());
    std::printf("\n");
  }
  std::printf("%-26s %-30s %10s %10s %10s  %s\n", "shape", "variant", "ms", "GB/s", "TFLOP/s", "note");
  for (const auto& r : rows_) {
    const std::string shape = r.value("shape", "");
    const std::string var = r.value("variant", "");
    if (r.contains("skipped")) {
      std::printf("%-26s %-30s %10s %10s %10s  skipped: %s\n", shape.c_str(), var.c_str(), "-", "-", "-",
                  r["skipped"].get<std::string>().c_str());
      continue;
    }
    auto num = [&](const char* key) -> std::string {
      if (!r.contains(key) || !r[key].is_number()) return "-";
      char b[32];
      std::snprintf(b, sizeof b, "%.3f", r[key].get<double>());
      return b;
    };
    std::printf("%-26s %-30s %10s %10s %10s  %s\n", shape.c_str(), var.c_str(), num("ms").c_str(), num("GBps").c_str(),
                num("TFLOPs").c_str(), r.value("note", "").c_str());
  }
  if (!args_.json_path.empty()) {
    nlohmann::json j;
    j["bench"] = bench_;
    j["device"] = gpu_name();
    j["cpu_gemm"] = cpu::gemm_library_info().str();
    j["ceilings"] = ceilings_;
    j["results"] = rows_;
    const std::string tmp = args_.json_path + ".tmp";
    {
      std::ofstream f(tmp);
      TOPKSAE_CHECK(f.good(), "cannot write ", tmp);
      f << j.dump(1) << "\n";
    }
    TOPKSAE_CHECK(std::rename(tmp.c_str(), args_.json_path.c_str()) == 0, "cannot rename ", tmp, " to ",
                  args_.json_path);
    std::printf("wrote %s\n", args_.json_path.c_str());
  }
}

#ifdef TOPKSAE_HAS_CUDA
Stats time_gpu(Stream stream, const std::function<void(int)>& fn, int warmup, int iters) {
  auto s = reinterpret_cast<cudaStream_t>(stream);
  for (int i = 0; i < warmup; ++i) fn(i);
  BENCH_CUDA(cudaStreamSynchronize(s));
  std::vector<cudaEvent_t> ev(size_t(2 * iters));
  for (auto& e : ev) BENCH_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < iters; ++i) {
    BENCH_CUDA(cudaEventRecord(ev[size_t(2 * i)], s));
    fn(warmup + i);
    BENCH_CUDA(cudaEventRecord(ev[size_t(2 * i + 1)], s));
  }
  BENCH_CUDA(cudaStreamSynchronize(s));
  std::vector<double> ms;
  for (int i = 0; i < iters; ++i) {
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, ev[size_t(2 * i)], ev[size_t(2 * i + 1)]));
    ms.push_back(t);
  }
  for (auto& e : ev) (void)cudaEventDestroy(e);
  return summarize(ms);
}

std::string gpu_name() {
  if (!cuda_available()) return "none (" + cuda_unavailable_reason() + ")";
  cudaDeviceProp p{};
  int dev = 0;
  BENCH_CUDA(cudaGetDevice(&dev));
  BENCH_CUDA(cudaGetDeviceProperties(&p, dev));
  return concat(p.name, ", ", p.multiProcessorCount, " SMs, CC ", p.major, ".", p.minor, ", ",
                p.totalGlobalMem >> 30, " GiB");
}

size_t device_memory_used() {
  if (!cuda_available()) return 0;
  size_t fr = 0, tot = 0;
  BENCH_CUDA(cudaMemGetInfo(&fr, &tot));
  return tot - fr;
}

nlohmann::json measure_ceilings(bool tiny) {
  nlohmann::json c = nlohmann::json::object();
  if (!cuda_available()) return c;
  cuda::Context ctx;
  const int warm = 2, iters = tiny ? 3 : 10;
  {
    const size_t bytes = tiny ? (size_t(64) << 20) : (size_t(1) << 30);
    DeviceBuffer a(bytes), b(bytes);
    cuda::fill_random(ctx, static_cast<float*>(a.data()), int64_t(bytes / 4), 1, 1.f);
    const Stats s = time_gpu(ctx.stream(), [&](int) { cuda::device_copy(ctx, b.data(), a.data(), bytes); }, warm, iters);
    c["copy_GBps"] = 2.0 * double(bytes) / (s.median_ms * 1e6);
  }
  const int64_t m = tiny ? 1024 : 8192;
  DeviceBuffer A(size_t(m * m) * 4), B(size_t(m * m) * 4), C(size_t(m * m) * 4), A16(size_t(m * m) * 2),
      B16(size_t(m * m) * 2);
  cuda::fill_random(ctx, static_cast<float*>(A.data()), m * m, 2, 1.f);
  cuda::fill_random(ctx, static_cast<float*>(B.data()), m * m, 3, 1.f);
  cuda::to_bf16(ctx, static_cast<float*>(A.data()), static_cast<uint16_t*>(A16.data()), m * m);
  cuda::to_bf16(ctx, static_cast<float*>(B.data()), static_cast<uint16_t*>(B16.data()), m * m);
  auto h = static_cast<cublasHandle_t>(ctx.cublas_handle());
  const float alpha = 1.f, beta = 0.f;
  const char* names[3] = {"gemm_fp32_TFLOPs", "gemm_tf32_TFLOPs", "gemm_bf16_TFLOPs"};
  for (int p = 0; p < 3; ++p) {
    const Stats s = time_gpu(ctx.stream(), [&](int) {
      cublasStatus_t st;
      if (p == 2)
        st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, int(m), int(m), int(m), &alpha, A16.data(), CUDA_R_16BF, int(m),
                          B16.data(), CUDA_R_16BF, int(m), &beta, C.data(), CUDA_R_32F, int(m), CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT);
      else
        st = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, int(m), int(m), int(m), &alpha, A.data(), CUDA_R_32F, int(m),
                          B.data(), CUDA_R_32F, int(m), &beta, C.data(), CUDA_R_32F, int(m),
                          p == 1 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
      TOPKSAE_CHECK(st == CUBLAS_STATUS_SUCCESS, "cuBLAS GEMM failed in the ceiling measurement");
    }, warm, iters);
    c[names[p]] = 2.0 * double(m) * double(m) * double(m) / (s.median_ms * 1e9);
  }
  return c;
}
#else
Stats time_gpu(Stream, const std::function<void(int)>&, int, int) { TOPKSAE_FAIL(cuda_unavailable_reason()); }
std::string gpu_name() { return "none (" + cuda_unavailable_reason() + ")"; }
size_t device_memory_used() { return 0; }
nlohmann::json measure_ceilings(bool) { return nlohmann::json::object(); }
#endif

}  // namespace topksae::bench
