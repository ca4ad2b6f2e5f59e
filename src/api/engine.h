// Private seam between the public Model (argument checks, include/topksae/api.h) and a backend
// that runs the calls. The CPU engine (cpu_engine.cpp) is built on the CPU twins in ops_cpu.h; the
// CUDA engine (cuda_engine.cpp, built with the CUDA backend; without it the stub in
// src/no_cuda/cuda_engine.cpp refuses CUDA models) on the CUDA twins in ops_cuda.h. Engines
// receive arguments the Model has already checked (shapes, null pointers, batch >= 1, no stream
// or device memory for a CPU model; latent indices only for host codes, so the CUDA engine checks
// device codes itself, as it checks where pointers live and which device a stream belongs to). The
// CUDA engine keeps device scratch in its EngineWorkspace, remembers the stream of the last call
// and makes a new stream wait for it.
#pragma once
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "topksae/api.h"

namespace topksae::detail {

// A backend's per-workspace scratch. Growth goes through grow() so Workspace::growths() sees it.
struct EngineWorkspace {
  virtual ~EngineWorkspace() = default;
  virtual Device device() const = 0;
  virtual size_t bytes() const = 0;
  uint64_t growths = 0;
  uint64_t dense_acts_built = 0;

  // Host scratch of at least n elements; grows (and counts it) only when too small.
  template <typename T>
  T* grow(std::vector<T>& v, size_t n) {
    if (v.size() < n) {
      v.resize(n);
      ++growths;
    }
    return v.data();
  }
};

enum class CodeFormat : uint8_t { topk, csr, dense };

struct EncodeArgs {
  const float* x = nullptr;  // [rows, d_in]
  int64_t rows = 0;
  CodeFormat format = CodeFormat::topk;
  int32_t* indices = nullptr;  // topk [rows, k]; csr [capacity]
  float* values = nullptr;     // topk [rows, k]; csr [capacity]
  int64_t* indptr = nullptr;   // csr [rows + 1]
  int64_t capacity = 0;        // csr
  float* dense = nullptr;      // dense [rows, d_sae]
};

struct DecodeArgs {
  CodeFormat format = CodeFormat::topk;
  int64_t rows = 0;
  const int32_t* indices = nullptr;  // topk [rows, width]; csr [indptr[rows]]
  const float* values = nullptr;
  int64_t width = 0;                 // topk
  const int64_t* indptr = nullptr;   // csr [rows + 1]
  const float* dense = nullptr;      // dense [rows, d_sae]
  float* out = nullptr;              // [rows, d_in]
};

class Engine {
 public:
  virtual ~Engine() = default;
  // Returns the number of stored codes (csr: nnz; topk: rows * k; dense: 0).
  virtual int64_t encode(Workspace& ws, const EncodeArgs& a, const CallOptions& opts) const = 0;
  virtual void decode(Workspace& ws, const DecodeArgs& a, const CallOptions& opts) const = 0;
  virtual void forward(Workspace& ws, const float* x, int64_t rows, float* out, bool use_error_term,
                       const CallOptions& opts) const = 0;
};

// `sae` must outlive the engine (the Model owns both).
std::unique_ptr<Engine> make_cpu_engine(const Sae& sae);
// opts: the ModelOptions' cuda_device, cuda_precision ("fp32" | "tf32" | "bf16") and cuda_encode_rows.
std::unique_ptr<Engine> make_cuda_engine(const Sae& sae, const ModelOptions& opts);

}  // namespace topksae::detail
