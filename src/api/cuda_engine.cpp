// The CUDA inference engine behind detail::Engine (api/engine.h): the CUDA twins' pointer-level
// layer (ops_cuda.h) composed into encode / decode / forward, the CPU engine's (cpu_engine.cpp)
// structure step for step so that both give the same codes. Host code only: every kernel it runs
// is an op of kernels/ (compiled with the CUDA backend only, see CMakeLists.txt: src/*/cuda_*.cpp).
//
// What lives where
//   CudaEngine     the weights on the model's device (uploaded once at load, never written again),
//                  shared read-only by every thread and stream.
//   CudaWorkspace  per Workspace: a cuda::Context (cuBLAS / cuSPARSE handles and the device scratch
//                  pool), host scratch for hook views, a pinned word for the few values read back,
//                  and an event marking the end of its last call (a workspace moved to another
//                  stream makes that stream wait for it).
// Hooks receive HOST views (HookView::device == Device::cpu): an observed point is copied to the
// host, the observers run there, and the result is copied back. This synchronises the stream, so
// it costs; unobserved points cost nothing and a dense z is built only for hook_sae_acts_post.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "api/engine.h"
#include "api/host_codes.h"
#include "common/cuda_raii.h"
#include "cuda_internal.h"
#include "topksae/buffer.h"
#include "topksae/ops_cuda.h"

namespace topksae::detail {

namespace {

namespace cu = topksae::cuda;

// The engine's scratch slots, after the ops' own (Context reserves kSlotCount + 16 slots).
enum EngineSlot : int {
  kSlotX = cu::detail::kSlotCount,  // [B, d_in]  host x staged on the device
  kSlotXin,                         // [B, d_in]  x as changed by hook_sae_input observers
  kSlotU,                           // [B, d_in]  normalised, centred input
  kSlotH,                           // [B, d_sae] pre-activations
  kSlotIdx,                         // [B, k]     top-k pairs
  kSlotVal,                         // [B, k]
  kSlotZ,                           // [B, d_sae] dense codes (observers, or host dense output)
  kSlotOut,                         // [B, d_in]  reconstruction when the caller's out is on the host
  kSlotErr,                         // [B, d_in]  the error term
  kSlotStats,                       // [2B]       normalisation scale, shift
  kSlotFlag,                        // [1]        int32 guard flag for caller codes
  kSlotCodesPtr,                    // [B + 1]    CSR indptr staged / built
  kSlotCodesIdx,                    // [nnz]      codes staged from / built for the host
  kSlotCodesVal,                    // [nnz]
  kSlotCublas,                      // cuBLAS's workspace, ours so that cuBLAS allocates nothing itself
  kEngineSlotEnd
};
static_assert(kEngineSlotEnd <= cu::detail::kSlotCount + 16, "Context reserves 16 slots beyond the ops' own");

template <typename... Args>
void require(bool cond, const Args&... args) {
  if (!cond) throw InvalidArgument(concat(args...));
}

using cu::detail::DeviceGuard;

struct CudaWorkspace final : EngineWorkspace {
  int ordinal = -1;
  std::unique_ptr<cu::Context> ctx;
  Stream stream = nullptr;    // the stream of the last call
  std::optional<cu::detail::OwnedEvent> done;  // recorded at the end of every call on `stream`
  HostBuffer pinned;           // int64 [2]: values read back (nnz, guard flag)
  std::vector<float> view;     // [B, max(d_in, d_sae)] host copy for observers
  std::vector<float> z;        // [B, d_sae] host z for hook_sae_acts_post observers
  std::vector<int32_t> idx;    // [B, k] or [nnz] host codes when rebuilding for device output
  std::vector<float> val;
  std::vector<int64_t> indptr;  // [B + 1]
  HostCodeScratch codes;

  ~CudaWorkspace() override {  // releases on the workspace's device; errors have nowhere to go
    int prev = -1;
    const bool switched = cudaGetDevice(&prev) == cudaSuccess && prev != ordinal && ordinal >= 0 &&
                          cudaSetDevice(ordinal) == cudaSuccess;
    ctx.reset();
    done.reset();  // the event belongs to `ordinal`, released while it is current
    if (switched) (void)cudaSetDevice(prev);
  }
  Device device() const override { return Device::cuda; }
  size_t bytes() const override {
    return (ctx ? ctx->scratch_bytes() : 0) + pinned.bytes() + 4 * (view.size() + z.size() + idx.size() + val.size()) +
           8 * indptr.size() + codes.bytes();
  }
  template <typename T>
  T* slot(int s, int64_t count) {
    return static_cast<T*>(ctx->scratch(s, size_t(std::max<int64_t>(count, 1)) * sizeof(T)));
  }
  cudaStream_t cs() const { return reinterpret_cast<cudaStream_t>(stream); }
  int64_t* word() { return static_cast<int64_t*>(pinned.data()); }
};

bool observed(const Hooks* hooks, HookPoint p) { return hooks && hooks->observed(p); }

// cuBLAS's recommended workspace on Hopper. Handing cuBLAS a buffer from the pool keeps its own
// allocations out of the hot path; cublasSetStream resets it, so it is bound again per stream.
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;
void bind_cublas_workspace(CudaWorkspace& w) {
  void* buf = w.ctx->scratch(kSlotCublas, kCublasWorkspaceBytes);
  CUBLAS_CHECK(cublasSetWorkspace(cu::detail::cublas(*w.ctx), buf, kCublasWorkspaceBytes));
}

// Is `s` one of the runtime's special handles (legacy default / per-thread default stream)?
bool special_stream(Stream s) {
  const auto v = reinterpret_cast<uintptr_t>(s);
  return v == 0 || v == reinterpret_cast<uintptr_t>(cudaStreamLegacy) ||
         v == reinterpret_cast<uintptr_t>(cudaStreamPerThread);
}

// Brackets one call: picks the workspace state, checks and switches the stream, and afterwards
// counts scratch growth and records the end-of-call event. finish() is the success path.
class Call {
 public:
  Call(Workspace& ws, int ordinal, const CallOptions& opts, const char* op) : op_(op), host_(opts.memory == Device::cpu) {
    check_stream(opts.stream, ordinal);
    auto& st = ws.engine_state();
    auto* w = dynamic_cast<CudaWorkspace*>(st.get());
    if (!w || w->ordinal != ordinal) {
      auto fresh = std::make_unique<CudaWorkspace>();
      if (st) {  // keep the counters of the state this replaces
        fresh->growths = st->growths;
        fresh->dense_acts_built = st->dense_acts_built;
      }
      fresh->ordinal = ordinal;
      fresh->ctx = std::make_unique<cu::Context>(opts.stream);
      fresh->stream = opts.stream;
      fresh->done.emplace();
      fresh->pinned = HostBuffer(16, HostMemory::pinned);
      bind_cublas_workspace(*fresh);
      ++fresh->growths;
      w = fresh.get();
      st = std::move(fresh);
    } else if (w->stream != opts.stream) {
      // The scratch may still be read by the previous call's work on the old stream.
      CUDA_CHECK(cudaStreamWaitEvent(reinterpret_cast<cudaStream_t>(opts.stream), w->done->get(), 0));
      w->ctx->set_stream(opts.stream);
      w->stream = opts.stream;
      bind_cublas_workspace(*w);
    }
    w_ = w;
    scratch_before_ = w->ctx->scratch_bytes();
  }
  ~Call() {
    if (w_->ctx->scratch_bytes() > scratch_before_) ++w_->growths;
    (void)cudaEventRecord(w_->done->get(), w_->cs());
  }
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  CudaWorkspace& w() { return *w_; }
  // Calls on host memory return when their results are in the caller's arrays.
  void finish() {
    if (host_) w_->ctx->synchronize();
  }

  // A caller pointer (non-null ones only; the Model checked the required ones) must live where
  // CallOptions::memory says, and device memory on the model's device.
  void check_pointer(const void* p, const char* name, int ordinal) const {
    if (!p) return;
    cudaPointerAttributes at{};
    if (cudaPointerGetAttributes(&at, p) != cudaSuccess) {
      (void)cudaGetLastError();
      at.type = cudaMemoryTypeUnregistered;
    }
    if (host_) {
      require(at.type != cudaMemoryTypeDevice, op_, ": ", name, " is device memory (CUDA device ", at.device,
              ") but CallOptions::memory is cpu; set CallOptions::memory = Device::cuda");
      return;
    }
    require(at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged, op_, ": ", name,
            " is not CUDA device memory but CallOptions::memory is cuda (pass host pointers with "
            "CallOptions::memory = Device::cpu)");
    require(at.device == ordinal, op_, ": ", name, " is on CUDA device ", at.device, ", the model is on CUDA device ",
            ordinal);
  }

 private:
  void check_stream(Stream s, int ordinal) const {
    if (special_stream(s)) return;  // the default streams belong to the current device (set by the guard)
    int dev = -1;
    const cudaError_t e = cudaStreamGetDevice(reinterpret_cast<cudaStream_t>(s), &dev);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      throw InvalidArgument(concat(op_, ": CallOptions::stream is not a usable CUDA stream (", cudaGetErrorString(e),
                                   ")"));
    }
    require(dev == ordinal, op_, ": CallOptions::stream belongs to CUDA device ", dev,
            ", the model is on CUDA device ", ordinal);
  }

  const char* op_;
  bool host_;
  CudaWorkspace* w_ = nullptr;
  size_t scratch_before_ = 0;
};

class CudaEngine final : public Engine {
 public:
  CudaEngine(const Sae& sae, int ordinal, cu::Precision precision, int64_t encode_rows)
      : sae_(sae), ordinal_(ordinal), prec_(precision), encode_rows_(encode_rows) {
    const SaeConfig& c = sae.cfg;
    if (c.normalize == Normalize::layer_norm)
      TOPKSAE_CHECK(c.d_in >= 2, "layer_norm normalisation needs d_in >= 2 (unbiased std), got ", c.d_in);
    TOPKSAE_CHECK(c.k <= cu::kMaxTopK, "CUDA model: k=", c.k, " exceeds the GPU top-k maximum ", cu::kMaxTopK);
    TOPKSAE_CHECK(c.d_sae < (int64_t(1) << 31) && c.d_in < (int64_t(1) << 31), "CUDA model: d_in and d_sae must be < 2^31");
    DeviceGuard g(ordinal_);
    dsae_ = cu::DeviceSae::upload(sae);
    cu::Context ctx;
    if (prec_ == cu::Precision::bf16) dsae_.ensure_bf16(ctx);
    // One tiny selection at load, so the top-k kernel's one-time setup happens here, on this
    // device, before threads share the model.
    auto* h = static_cast<float*>(ctx.scratch(0, size_t(c.d_sae) * 4));
    auto* iv = static_cast<int32_t*>(ctx.scratch(1, size_t(c.k) * 8));
    CUDA_CHECK(cudaMemsetAsync(h, 0, size_t(c.d_sae) * 4, cu::detail::stream(ctx)));
    cu::topk_select(ctx, h, 1, c.d_sae, c.k, iv, reinterpret_cast<float*>(iv + c.k));
    ctx.synchronize();
  }

  int64_t encode(Workspace& ws, const EncodeArgs& a, const CallOptions& opts) const override {
    DeviceGuard g(ordinal_);
    Call call(ws, ordinal_, opts, "encode");
    call.check_pointer(a.x, "x", ordinal_);
    call.check_pointer(a.indices, "indices", ordinal_);
    call.check_pointer(a.values, "values", ordinal_);
    call.check_pointer(a.indptr, "indptr", ordinal_);
    call.check_pointer(a.dense, "z", ordinal_);
    CudaWorkspace& w = call.w();
    const bool dev = opts.memory == Device::cuda;
    const int64_t B = a.rows, n = sae_.cfg.d_sae, k = sae_.cfg.k;
    const bool hooked_post = observed(opts.hooks, HookPoint::sae_acts_post);
    const float* x = input(w, a.x, B, dev);
    // The selection writes straight into the caller's device pairs unless observers rebuild them.
    const bool direct_pairs = dev && a.format == CodeFormat::topk && !hooked_post;
    int32_t* idx = direct_pairs ? a.indices : w.slot<int32_t>(kSlotIdx, B * k);
    float* val = direct_pairs ? a.values : w.slot<float>(kSlotVal, B * k);
    float* dense_target = nullptr;
    if (a.format == CodeFormat::dense) dense_target = dev ? a.dense : w.slot<float>(kSlotZ, B * n);
    const float* hz = encode_codes(w, x, B, opts.hooks, idx, val, dense_target);
    int64_t stored = 0;

    switch (a.format) {
      case CodeFormat::topk:
        stored = B * k;
        if (hz) {  // observers changed z: rebuild the pairs on the host from it
          int32_t* hidx = dev ? w.grow(w.idx, size_t(B * k)) : a.indices;
          float* hval = dev ? w.grow(w.val, size_t(B * k)) : a.values;
          copy_async(w, hidx, idx, B * k, cudaMemcpyDeviceToHost);
          copy_async(w, hval, val, B * k, cudaMemcpyDeviceToHost);
          w.ctx->synchronize();
          rebuild_pairs(w, w.codes, hz, B, n, k, hidx, hval);
          if (dev) {
            copy_async(w, a.indices, hidx, B * k, cudaMemcpyHostToDevice);
            copy_async(w, a.values, hval, B * k, cudaMemcpyHostToDevice);
            w.ctx->synchronize();  // the host staging is reused by the next call
          }
        } else if (!dev) {
          copy_async(w, a.indices, idx, B * k, cudaMemcpyDeviceToHost);
          copy_async(w, a.values, val, B * k, cudaMemcpyDeviceToHost);
        }
        break;
      case CodeFormat::dense:
        if (hz) {  // encode_codes built z in dense_target and ran the observers on it
          if (!dev) std::memcpy(a.dense, hz, size_t(B * n) * sizeof(float));
        } else {
          cu::topk_to_dense(*w.ctx, idx, val, B, k, n, dense_target);
          if (!dev) copy_async(w, a.dense, dense_target, B * n, cudaMemcpyDeviceToHost);
        }
        break;
      case CodeFormat::csr:
        stored = hz ? csr_from_host_z(w, hz, B, a, dev) : csr_from_device_pairs(w, idx, val, B, a, dev);
        break;
    }
    call.finish();
    return stored;
  }

  void decode(Workspace& ws, const DecodeArgs& a, const CallOptions& opts) const override {
    DeviceGuard g(ordinal_);
    Call call(ws, ordinal_, opts, "decode");
    call.check_pointer(a.indices, "indices", ordinal_);
    call.check_pointer(a.values, "values", ordinal_);
    call.check_pointer(a.indptr, "indptr", ordinal_);
    call.check_pointer(a.dense, "z", ordinal_);
    call.check_pointer(a.out, "out", ordinal_);
    CudaWorkspace& w = call.w();
    const bool dev = opts.memory == Device::cuda;
    const int64_t B = a.rows, d = sae_.cfg.d_in, n = sae_.cfg.d_sae;
    float* out = dev ? a.out : w.slot<float>(kSlotOut, B * d);
    switch (a.format) {
      case CodeFormat::topk: {
        const int32_t* idx = a.indices;
        const float* val = a.values;
        if (dev) {
          guard_latents(w, idx, B * a.width, "decode_topk");
        } else {
          int32_t* si = w.slot<int32_t>(kSlotCodesIdx, B * a.width);
          float* sv = w.slot<float>(kSlotCodesVal, B * a.width);
          copy_async(w, si, idx, B * a.width, cudaMemcpyHostToDevice);
          copy_async(w, sv, val, B * a.width, cudaMemcpyHostToDevice);
          idx = si;
          val = sv;
        }
        // n_rows: the kernel also skips out-of-range latents (never reached: checked above).
        cu::gather_decode(*w.ctx, dsae_.w_dec(), dsae_.bias_dec(), idx, val, B, a.width, a.width, nullptr, d, out, n);
        break;
      }
      case CodeFormat::csr: {
        const int64_t* ptr = a.indptr;
        const int32_t* idx = a.indices;
        const float* val = a.values;
        if (dev) {
          const int64_t nnz = guard_indptr(w, ptr, B);
          require(nnz == 0 || (idx != nullptr && val != nullptr),
                  "decode_csr: CsrIn::indices or CsrIn::values is a null pointer");
          guard_latents(w, idx, nnz, "decode_csr");
        } else {
          const int64_t nnz = a.indptr[B];  // checked by the Model
          int64_t* sp = w.slot<int64_t>(kSlotCodesPtr, B + 1);
          int32_t* si = w.slot<int32_t>(kSlotCodesIdx, nnz);
          float* sv = w.slot<float>(kSlotCodesVal, nnz);
          copy_async(w, sp, ptr, B + 1, cudaMemcpyHostToDevice);
          copy_async(w, si, idx, nnz, cudaMemcpyHostToDevice);
          copy_async(w, sv, val, nnz, cudaMemcpyHostToDevice);
          ptr = sp;
          idx = si;
          val = sv;
        }
        // n_rows: the kernel also skips out-of-range latents (never reached: checked above).
        cu::gather_decode_csr(*w.ctx, dsae_.w_dec(), dsae_.bias_dec(), ptr, idx, val, B, d, out, n);
        break;
      }
      case CodeFormat::dense: {
        const float* z = a.dense;
        if (!dev) {
          float* sz = w.slot<float>(kSlotZ, B * n);
          copy_async(w, sz, z, B * n, cudaMemcpyHostToDevice);
          z = sz;
        }
        cu::decode_dense(*w.ctx, dsae_, z, B, out, dense_precision());
        break;
      }
    }
    run_hook(w, opts.hooks, HookPoint::sae_recons, out, B, d);
    if (!dev) copy_async(w, a.out, out, B * d, cudaMemcpyDeviceToHost);
    call.finish();
  }

  void forward(Workspace& ws, const float* x_in, int64_t B, float* out_arg, bool use_error_term,
               const CallOptions& opts) const override {
    DeviceGuard g(ordinal_);
    Call call(ws, ordinal_, opts, "forward");
    call.check_pointer(x_in, "x", ordinal_);
    call.check_pointer(out_arg, "out", ordinal_);
    CudaWorkspace& w = call.w();
    const bool dev = opts.memory == Device::cuda;
    const Hooks* hooks = opts.hooks;
    const int64_t d = sae_.cfg.d_in;
    const float* x = input(w, x_in, B, dev);
    float* out = dev ? out_arg : w.slot<float>(kSlotOut, B * d);
    reconstruct(w, x, B, hooks, out);

    if (use_error_term) {
      float* e = w.slot<float>(kSlotErr, B * d);  // [B, d_in]
      const bool changed_by_hooks = observed(hooks, HookPoint::sae_input) ||
                                    observed(hooks, HookPoint::sae_acts_pre) ||
                                    observed(hooks, HookPoint::sae_acts_post) ||
                                    observed(hooks, HookPoint::sae_recons);
      // sae_lens recomputes the reconstruction with hooks disabled; without observers it is `out`.
      if (changed_by_hooks)
        reconstruct(w, x, B, nullptr, e);
      else
        copy_async(w, e, out, B * d, cudaMemcpyDeviceToDevice);
      cu::error_term(*w.ctx, x, e, B * d);
      run_hook(w, hooks, HookPoint::sae_error, e, B, d);
      cu::add_error_term(*w.ctx, out, e, B * d);
    }
    run_hook(w, hooks, HookPoint::sae_output, out, B, d);
    if (!dev) copy_async(w, out_arg, out, B * d, cudaMemcpyDeviceToHost);
    call.finish();
  }

 private:
  cu::Precision dense_precision() const {
    return prec_ == cu::Precision::tf32 ? cu::Precision::tf32 : cu::Precision::fp32;
  }

  template <typename T>
  static void copy_async(CudaWorkspace& w, T* dst, const T* src, int64_t count, cudaMemcpyKind kind) {
    if (count > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, size_t(count) * sizeof(T), kind, w.cs()));
  }

  // The call's x on the device: the caller's device array, or host x staged into kSlotX.
  const float* input(CudaWorkspace& w, const float* x, int64_t B, bool dev) const {
    if (dev) return x;
    float* sx = w.slot<float>(kSlotX, B * sae_.cfg.d_in);
    copy_async(w, sx, x, B * sae_.cfg.d_in, cudaMemcpyHostToDevice);
    return sx;
  }

  // Runs the observers of p on a host copy of the device array data [rows, cols], then copies
  // their changes back. Nothing happens (no copy, no sync) when p is not observed.
  float* host_view(CudaWorkspace& w, const float* data, int64_t rows, int64_t cols) const {
    float* v = w.grow(w.view, size_t(rows * cols));
    copy_async(w, v, data, rows * cols, cudaMemcpyDeviceToHost);
    w.ctx->synchronize();
    return v;
  }
  void run_hook(CudaWorkspace& w, const Hooks* hooks, HookPoint p, float* data, int64_t rows, int64_t cols) const {
    if (!observed(hooks, p)) return;
    float* v = host_view(w, data, rows, cols);
    hooks->run(HookView{p, v, rows, cols, Device::cpu, w.stream});
    copy_async(w, data, v, rows * cols, cudaMemcpyHostToDevice);
    w.ctx->synchronize();  // w.view is reused by the next observed point
  }

  // x (device) -> top-k pairs idx/val [B, k] (device), running hook_sae_input and
  // hook_sae_acts_pre; the normalisation statistics land in kSlotStats. When hook_sae_acts_post
  // is observed, builds z on the device (in dense_target, else kSlotZ), runs the observers on a
  // host copy, writes their result back to the device z and returns the host copy; otherwise
  // returns nullptr and builds nothing dense.
  const float* encode_codes(CudaWorkspace& w, const float* x, int64_t B, const Hooks* hooks, int32_t* idx,
                            float* val, float* dense_target) const {
    const SaeConfig& c = sae_.cfg;
    const int64_t d = c.d_in, n = c.d_sae, k = c.k;
    cu::Context& ctx = *w.ctx;
    if (observed(hooks, HookPoint::sae_input)) {  // observers may change x, which stays as given
      float* xin = w.slot<float>(kSlotXin, B * d);
      copy_async(w, xin, x, B * d, cudaMemcpyDeviceToDevice);
      run_hook(w, hooks, HookPoint::sae_input, xin, B, d);
      x = xin;
    }
    float* u = w.slot<float>(kSlotU, B * d);  // [B, d_in]
    float* stats = w.slot<float>(kSlotStats, 2 * B);
    cu::process_sae_in(ctx, dsae_, x, B, u, stats, stats + B);
    const bool hooked_pre = observed(hooks, HookPoint::sae_acts_pre);
    // Observers of hook_sae_acts_pre see all of h [B, d_sae] at once (with the bias added).
    // Unobserved, the encoder bias is fused into the selection and h exists for one chunk of
    // rows at a time (cu::encode_chunk_rows: ModelOptions::cuda_encode_rows, by default at most
    // kEncodeChunkBytes of scratch).
    const int64_t rows = hooked_pre ? B : cu::encode_chunk_rows(n, B, encode_rows_);
    float* h = w.slot<float>(kSlotH, rows * n);  // [rows, d_sae]
    cu::TopKOptions opt;
    opt.bias = hooked_pre ? nullptr : dsae_.bias_enc();
    opt.relu = true;  // ReLU after the selection, as on the CPU
    for (int64_t r0 = 0; r0 < B; r0 += rows) {
      const int64_t m = std::min(rows, B - r0);
      cu::encode_pre(ctx, dsae_, u + r0 * d, m, h, prec_, /*add_bias=*/hooked_pre);
      run_hook(w, hooks, HookPoint::sae_acts_pre, h, m, n);  // m == B when observed
      cu::topk_select(ctx, h, m, n, k, idx + r0 * k, val + r0 * k, opt);
    }

    if (!observed(hooks, HookPoint::sae_acts_post)) return nullptr;
    float* z = dense_target;
    if (!z) {
      z = w.slot<float>(kSlotZ, B * n);
      ++w.dense_acts_built;
    }
    cu::topk_to_dense(ctx, idx, val, B, k, n, z);
    float* hz = w.grow(w.z, size_t(B * n));
    copy_async(w, hz, z, B * n, cudaMemcpyDeviceToHost);
    ctx.synchronize();
    hooks->run(HookView{HookPoint::sae_acts_post, hz, B, n, Device::cpu, w.stream});
    copy_async(w, z, hz, B * n, cudaMemcpyHostToDevice);
    return hz;
  }

  // encode -> decode -> hook_sae_recons -> undo normalisation, into out [B, d_in] (device).
  void reconstruct(CudaWorkspace& w, const float* x, int64_t B, const Hooks* hooks, float* out) const {
    const SaeConfig& c = sae_.cfg;
    int32_t* idx = w.slot<int32_t>(kSlotIdx, B * c.k);
    float* val = w.slot<float>(kSlotVal, B * c.k);
    const float* hz = encode_codes(w, x, B, hooks, idx, val, nullptr);
    if (hz)  // encode_codes left the observed z in kSlotZ
      cu::decode_dense(*w.ctx, dsae_, w.slot<float>(kSlotZ, B * c.d_sae), B, out, dense_precision());
    else
      cu::gather_decode(*w.ctx, dsae_.w_dec(), dsae_.bias_dec(), idx, val, B, c.k, c.k, nullptr, c.d_in, out);
    run_hook(w, hooks, HookPoint::sae_recons, out, B, c.d_in);
    const float* stats = w.slot<float>(kSlotStats, 2 * B);
    cu::normalize_out(*w.ctx, c.normalize, out, B, c.d_in, stats, stats + B);
  }

  // CSR from the device pairs: per-row counts, a scan into indptr, nnz read back (one sync; the
  // count is the call's result), the capacity checked, then the ordered compaction.
  int64_t csr_from_device_pairs(CudaWorkspace& w, const int32_t* idx, const float* val, int64_t B,
                                const EncodeArgs& a, bool dev) const {
    const int64_t k = sae_.cfg.k;
    int64_t* ptr = dev ? a.indptr : w.slot<int64_t>(kSlotCodesPtr, B + 1);
    cu::topk_row_offsets(*w.ctx, val, B, k, ptr);
    copy_async(w, w.word(), ptr + B, 1, cudaMemcpyDeviceToHost);
    w.ctx->synchronize();
    const int64_t nnz = w.word()[0];
    check_csr_capacity(nnz, a.capacity);
    int32_t* cols = dev ? a.indices : w.slot<int32_t>(kSlotCodesIdx, B * k);
    float* vals = dev ? a.values : w.slot<float>(kSlotCodesVal, B * k);
    if (nnz > 0) cu::compact_topk(*w.ctx, idx, val, B, k, ptr, nullptr, cols, vals);
    if (!dev) {
      copy_async(w, a.indptr, ptr, B + 1, cudaMemcpyDeviceToHost);
      copy_async(w, a.indices, cols, nnz, cudaMemcpyDeviceToHost);
      copy_async(w, a.values, vals, nnz, cudaMemcpyDeviceToHost);
    }
    return nnz;
  }

  // CSR from the observed host z: built on the host (as the CPU engine does), then uploaded when
  // the caller's arrays are on the device.
  int64_t csr_from_host_z(CudaWorkspace& w, const float* hz, int64_t B, const EncodeArgs& a, bool dev) const {
    const int64_t n = sae_.cfg.d_sae;
    if (!dev) return csr_from_dense(w, w.codes, hz, B, n, a);
    int64_t nnz = 0;
    for (int64_t i = 0; i < B * n; ++i) nnz += hz[i] != 0.f;
    check_csr_capacity(nnz, a.capacity);
    EncodeArgs h = a;
    h.indptr = w.grow(w.indptr, size_t(B + 1));
    h.indices = w.grow(w.idx, size_t(std::max<int64_t>(nnz, 1)));
    h.values = w.grow(w.val, size_t(std::max<int64_t>(nnz, 1)));
    csr_from_dense(w, w.codes, hz, B, n, h);
    copy_async(w, a.indptr, h.indptr, B + 1, cudaMemcpyHostToDevice);
    copy_async(w, a.indices, h.indices, nnz, cudaMemcpyHostToDevice);
    copy_async(w, a.values, h.values, nnz, cudaMemcpyHostToDevice);
    w.ctx->synchronize();  // the host staging is reused by the next call
    return nnz;
  }

  // Device codes from the caller are checked on the device before any kernel gathers through
  // them (the Model can only check host codes): one small kernel and one sync.
  int32_t* reset_flag(CudaWorkspace& w) const {
    int32_t* flag = w.slot<int32_t>(kSlotFlag, 1);
    CUDA_CHECK(cudaMemsetAsync(flag, 0, sizeof(int32_t), w.cs()));
    return flag;
  }
  void guard_latents(CudaWorkspace& w, const int32_t* idx, int64_t count, const char* op) const {
    if (count == 0) return;
    int32_t* flag = reset_flag(w);
    cu::check_latents(*w.ctx, idx, count, sae_.cfg.d_sae, flag);
    copy_async(w, reinterpret_cast<int32_t*>(w.word()), flag, 1, cudaMemcpyDeviceToHost);
    w.ctx->synchronize();
    require(reinterpret_cast<int32_t*>(w.word())[0] == 0, op, ": a latent index is out of range [0, ",
            sae_.cfg.d_sae, ")");
  }
  // Checks a device indptr [B + 1] and returns nnz = indptr[B].
  int64_t guard_indptr(CudaWorkspace& w, const int64_t* ptr, int64_t B) const {
    int32_t* flag = reset_flag(w);
    cu::check_indptr(*w.ctx, ptr, B, flag);
    copy_async(w, w.word(), ptr + B, 1, cudaMemcpyDeviceToHost);
    copy_async(w, reinterpret_cast<int32_t*>(w.word() + 1), flag, 1, cudaMemcpyDeviceToHost);
    w.ctx->synchronize();
    require(reinterpret_cast<int32_t*>(w.word() + 1)[0] == 0,
            "decode_csr: indptr is not a CSR offset array (indptr[0] must be 0, non-decreasing)");
    return w.word()[0];
  }

  const Sae& sae_;
  int ordinal_;
  cu::Precision prec_;
  int64_t encode_rows_;  // ModelOptions::cuda_encode_rows
  cu::DeviceSae dsae_;  // written only here, at load
};

}  // namespace

std::unique_ptr<Engine> make_cuda_engine(const Sae& sae, const ModelOptions& opts) {
  const int cuda_device = opts.cuda_device;
  const int count = cuda_device_count();
  TOPKSAE_CHECK(count > 0, "CUDA inference backend not available on this machine: ", cuda_unavailable_reason());
  if (cuda_device < 0 || cuda_device >= count)
    throw InvalidArgument(concat("ModelOptions::cuda_device is ", cuda_device, " but this machine has ", count,
                                 " CUDA device(s)"));
  cu::Precision p;
  try {
    p = cu::precision_from_name(opts.cuda_precision);
  } catch (const Error& e) {
    throw InvalidArgument(concat("ModelOptions::cuda_precision: ", e.what()));
  }
  return std::make_unique<CudaEngine>(sae, cuda_device, p, opts.cuda_encode_rows);
}

}  // namespace topksae::detail
