// The inference API a service links: load a TopK SAE once, then encode / decode / forward batches
// from many threads, with sae_lens's hook points for observing and steering. (C bindings:
// topksae_c.h; the math: shared/spec/MATH.md "Inference".)
//
// What is shared and what is not
//   Model      immutable after construction; every method is const and safe to call from any number
//              of threads (and CUDA streams) at once. Hold it by shared_ptr; the weights live once
//              (a CUDA model uploads them to its device at load and never writes them again; the
//              f32 host copy stays readable through sae()).
//   Workspace  scratch memory for ONE call at a time: give each worker thread (or stream) its own
//              and reuse it. Once each op (and hook set) it serves has run with the largest batch,
//              a call allocates nothing (Workspace::growths() stops moving); on a CUDA model that
//              includes device memory: no cudaMalloc once warm. A CUDA workspace owns its cuBLAS /
//              cuSPARSE handles and device scratch, bound to the model's device: used with a model
//              on another device (or on the CPU) it is rebuilt, which counts as growth.
//   Hooks      observers for the calls it is passed to (CallOptions::hooks), so concurrent requests
//              can steer differently. A Hooks object is only read during a call: several threads may
//              share one if its observers are thread-safe; add()/remove() must not race with a call
//              that uses it.
//
// Memory: every pointer one call receives lives in CallOptions::memory. A CPU model takes host
// pointers only (device pointers or a stream are refused with InvalidArgument). A CUDA model
// (ModelOptions::device = Device::cuda) takes either: device pointers (on the model's device) are
// used in place, no copy; host pointers are staged through the workspace's device scratch. Work
// runs on CallOptions::stream (nullptr: the legacy default stream), which must belong to the
// model's device. Calls on host memory return when the results are in the caller's arrays; calls
// on device memory are enqueued on the stream and return at once, EXCEPT where a value must come
// back to the host: encode_csr (returns nnz), decode_topk / decode_csr on device codes (the codes
// are checked on the device for out-of-range latents first), and any call with an observed hook
// point (see HookView). A workspace moved to another stream makes the new stream wait for its
// previous call. Pointers on the wrong side (host vs device), on another device, and streams of
// another device are refused with InvalidArgument. Batches are row-major float32.
//
// Non-finite input: x is not checked for NaN / Inf (a pass over every batch, for services that
// never send any). A row holding a NaN has NaN pre-activations; top-k ranks NaN below every number,
// ties broken by the lower index, so that row's codes are latents 0..k-1 with NaN values (k CSR
// entries: NaN is not zero) and its reconstruction is NaN; the batch's other rows are unaffected.
// The CPU and the CUDA model do the same (tests: ApiEncode.NanRows*, CudaApi.NanRows*). The
// `topksae` command refuses such rows, naming the file and row, unless --skip-nonfinite.
//
// CUDA specifics: all four normalisations run on the device (as the CPU's normalize.cpp); the
// encoder GEMM precision is ModelOptions::cuda_precision (fp32 by default, which matches the CPU
// up to summation order; tf32 / bf16 may pick a different latent where pre-activations nearly
// tie). Without the CUDA backend (-DTOPKSAE_CUDA=OFF) loading a CUDA model throws
// Error("CUDA inference backend not available in this build: ...").
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "topksae/device.h"
#include "topksae/error.h"
#include "topksae/sae.h"

namespace topksae {

// Thrown by the API's argument checks (null pointer, wrong shape, wrong device, bad batch size),
// so that callers (and the C API's status codes) can tell misuse from other failures.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A row-major [rows, cols] matrix the caller owns, on the call's memory device.
template <typename T>
struct View {
  T* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
};

// CSR codes: row b's latents are indices[indptr[b] .. indptr[b+1]), with their values.
struct CsrOut {
  int64_t* indptr = nullptr;  // [rows + 1]
  int32_t* indices = nullptr;  // [capacity]
  float* values = nullptr;     // [capacity]
  int64_t capacity = 0;        // rows * k always suffices unless a hook adds latents
};
struct CsrIn {
  const int64_t* indptr = nullptr;  // [rows + 1], indptr[0] == 0, non-decreasing
  const int32_t* indices = nullptr;  // [indptr[rows]]
  const float* values = nullptr;     // [indptr[rows]]
  int64_t rows = 0;
};

// ---- hook points (sae_lens 6.13 names and semantics) ------------------------------------------
// Where observers see, and may change, the intermediates:
//   sae_input      x [B, d_in]       the input as given, before normalisation and b_dec
//   sae_acts_pre   h [B, d_sae]      pre-activations u @ W_enc + b_enc; top-k runs on the result
//   sae_acts_post  z [B, d_sae]      the codes after top-k and ReLU. The engine keeps z sparse; a
//                                    dense z is built ONLY when an observer is registered here
//                                    (as sae_lens's SparseHookPoint). Changes flow into the
//                                    encode output and the decode (setting a latent outside the
//                                    top-k adds it; zeroing one ablates it).
//   sae_recons     xhat [B, d_in]    z @ W_dec + b_dec, before the output normalisation is undone
//   sae_error      e [B, d_in]       forward with use_error_term only: x - xhat_clean, where
//                                    xhat_clean is the reconstruction recomputed WITHOUT any hook
//                                    (so ablating a latent changes the output by exactly its
//                                    decoder contribution instead of being undone by the error)
//   sae_output     y [B, d_in]       forward's result: xhat (+ e with use_error_term)
// encode runs input/acts_pre/acts_post; decode runs recons; forward runs all six in that order.
enum class HookPoint : uint8_t { sae_input, sae_acts_pre, sae_acts_post, sae_recons, sae_error, sae_output };
inline constexpr int kHookPointCount = 6;
// "hook_sae_input", ... (sae_lens's attribute names) and back; parse throws InvalidArgument.
std::string_view hook_name(HookPoint p);
HookPoint hook_from_name(std::string_view name);

// What an observer receives: a writable view of the intermediate, valid only during the callback.
// CPU models: the engine's own array (device == Device::cpu). CUDA models: a HOST copy too
// (device == Device::cpu, stream = the call's stream, for information): the engine copies the
// observed intermediate to the host, synchronises, runs the observers, and copies their changes
// back. So the same observers (e.g. Hooks::clamp_latent) work on both; an observed point costs a
// round trip and a synchronisation on a CUDA model, an unobserved one costs nothing.
struct HookView {
  HookPoint point;
  float* data;   // [rows, cols], row-major
  int64_t rows;  // the batch
  int64_t cols;  // d_in or d_sae
  Device device;  // where data lives: Device::cpu on every model (see above)
  Stream stream;
};
using HookFn = std::function<void(const HookView&)>;

class Hooks {
 public:
  using Id = int64_t;
  // Observers at one point run in the order they were added; each sees the previous one's changes.
  Id add(HookPoint p, HookFn fn);
  Id add(std::string_view name, HookFn fn) { return add(hook_from_name(name), std::move(fn)); }
  bool remove(Id id);  // false when no observer has this id
  void clear();
  bool observed(HookPoint p) const { return !slots_[size_t(p)].empty(); }
  bool empty() const;
  // Calls the observers of p on `view` (the engines use this).
  void run(const HookView& view) const;

  // Ready-made steering observers for sae_acts_post (and sae_acts_pre): set one latent to a value
  // in every row (ablation is clamp(latent, 0)).
  static HookFn clamp_latent(int64_t latent, float value);
  static HookFn ablate_latent(int64_t latent) { return clamp_latent(latent, 0.f); }

 private:
  std::array<std::vector<std::pair<Id, HookFn>>, kHookPointCount> slots_;
  Id next_id_ = 1;
};

// ---- per-call options and the workspace -------------------------------------------------------
struct CallOptions {
  Device memory = Device::cpu;   // where every pointer of this call lives
  Stream stream = nullptr;       // CUDA models: the stream to run on. CPU models: must be nullptr
  const Hooks* hooks = nullptr;  // observers for this call (nullptr: none)
  int cpu_threads = 0;           // CPU models: OpenMP threads for this call (0: OpenMP's default).
                                 // A service with N worker threads usually wants 1 or cores / N.
};

namespace detail {
struct EngineWorkspace;
}

class Workspace {
 public:
  Workspace();
  ~Workspace();
  Workspace(Workspace&&) noexcept;
  Workspace& operator=(Workspace&&) noexcept;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;

  // Bytes of scratch held now (host + device).
  size_t bytes() const;
  // How many times a call had to grow the scratch (0 once warm; tests use this).
  uint64_t growths() const;
  // How many times a dense [B, d_sae] z was built for observers of hook_sae_acts_post.
  uint64_t dense_acts_built() const;

  // The engines' state (backend-specific); created by the first call on a model's device.
  std::unique_ptr<detail::EngineWorkspace>& engine_state() { return impl_; }

 private:
  std::unique_ptr<detail::EngineWorkspace> impl_;
};

namespace detail {
class Engine;
}

// ---- the model ----------------------------------------------------------------------------------
struct ModelOptions {
  Device device = Device::cpu;
  int cuda_device = 0;  // ordinal, for Device::cuda
  // CUDA models: precision of the encoder GEMM, "fp32" (exact, the CPU's result up to summation
  // order), "tf32" or "bf16" (a bf16 copy of W_enc made once at load; fp32 accumulation).
  std::string cuda_precision = "fp32";
  // CUDA models: rows per chunk of the encoder GEMM + top-k (cuda::encode_chunk_rows in
  // ops_cuda.h): the pre-activations h take [rows, d_sae] floats of a workspace's scratch, not
  // [batch, d_sae]. 0 picks the most rows within 256 MiB; -1 takes the whole batch. When
  // hook_sae_acts_pre is observed, its observers see the whole batch's h at once regardless.
  int64_t cuda_encode_rows = 0;
};

class Model {
 public:
  // Loads an sae_lens directory (cfg.json + sae_weights.safetensors), weights converted to f32.
  static std::shared_ptr<const Model> load(const std::filesystem::path& dir, const ModelOptions& opts = {});
  // From weights already in memory (validated: shapes, k, d_sae).
  static std::shared_ptr<const Model> from_sae(Sae sae, const ModelOptions& opts = {});

  ~Model();
  const SaeConfig& config() const { return sae_.cfg; }
  int64_t d_in() const { return sae_.cfg.d_in; }
  int64_t d_sae() const { return sae_.cfg.d_sae; }
  int64_t k() const { return sae_.cfg.k; }
  Device device() const { return device_; }
  const Sae& sae() const { return sae_; }  // the f32 host weights

  // x [B, d_in] -> top-k pairs indices/values [B, k]: per row the k selected latents, values after
  // ReLU, sorted by value descending (ties: lower index first). A selected latent whose
  // pre-activation was <= 0 keeps its slot with value 0 (L0 can be < k). If a hook_sae_acts_post
  // observer leaves a row with more than k non-zeros, this throws InvalidArgument (use CSR/dense).
  void encode_topk(Workspace& ws, View<const float> x, View<int32_t> indices, View<float> values,
                   const CallOptions& opts = {}) const;
  // x [B, d_in] -> CSR, zeros dropped, per row in the top-k order above. Returns nnz.
  int64_t encode_csr(Workspace& ws, View<const float> x, const CsrOut& out, const CallOptions& opts = {}) const;
  // x [B, d_in] -> z [B, d_sae].
  void encode_dense(Workspace& ws, View<const float> x, View<float> z, const CallOptions& opts = {}) const;

  // Codes -> out [B, d_in] = z @ W_dec + b_dec (hook_sae_recons runs on it). The output
  // normalisation of constant_norm_rescale / layer_norm is NOT undone here: its per-row statistics
  // come from the input, which decode does not see (use forward for the full round trip).
  void decode_topk(Workspace& ws, View<const int32_t> indices, View<const float> values, View<float> out,
                   const CallOptions& opts = {}) const;
  void decode_csr(Workspace& ws, const CsrIn& codes, View<float> out, const CallOptions& opts = {}) const;
  void decode_dense(Workspace& ws, View<const float> z, View<float> out, const CallOptions& opts = {}) const;

  // x [B, d_in] -> out [B, d_in]: encode, decode, undo the normalisation; with use_error_term
  // out = xhat + (x - xhat_clean) as sae_lens computes it (see hook_sae_error above). out must not
  // overlap x.
  void forward(Workspace& ws, View<const float> x, View<float> out, bool use_error_term = false,
               const CallOptions& opts = {}) const;

  // Prefer load / from_sae. The engine keeps a reference to sae_, so a Model never moves.
  Model(Sae sae, const ModelOptions& opts);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

 private:
  void check_call(const CallOptions& opts, const char* op) const;
  Sae sae_;
  Device device_ = Device::cpu;
  std::unique_ptr<detail::Engine> engine_;
};

}  // namespace topksae
