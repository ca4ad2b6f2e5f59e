// The CPU inference engine: the CPU twins (ops_cpu.h) composed into encode / decode / forward over
// workspace scratch, with the hook points run where sae_lens runs them. The codes stay top-k
// pairs; a dense z is built only when hook_sae_acts_post is observed (or asked for as output).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "api/engine.h"
#include "api/host_codes.h"
#include "topksae/ops_cpu.h"

namespace topksae::detail {

namespace {

struct CpuWorkspace final : EngineWorkspace {
  std::vector<float> xin;       // [B, d_in]  copy of x for hook_sae_input observers
  std::vector<float> u;         // [B, d_in]  normalised, centred input
  std::vector<float> h;         // [B, d_sae] pre-activations
  std::vector<int32_t> idx;     // [B, k]     top-k pairs when the caller wants another format
  std::vector<float> val;       // [B, k]
  std::vector<float> z;         // [B, d_sae] dense codes, only for hook_sae_acts_post observers
  std::vector<float> err;       // [B, d_in]  the error term
  std::vector<int32_t> select;  // [threads, d_sae] top-k candidates per OpenMP thread
  HostCodeScratch codes;        // rebuilding codes after hook_sae_acts_post
  cpu::NormStats stats;         // [B] each

  Device device() const override { return Device::cpu; }
  size_t bytes() const override {
    return 4 * (xin.size() + u.size() + h.size() + idx.size() + val.size() + z.size() + err.size() +
                select.size() + stats.scale.capacity() + stats.shift.capacity()) +
           codes.bytes();
  }
  void reserve_stats(int64_t B) {
    if (stats.scale.capacity() < size_t(B) || stats.shift.capacity() < size_t(B)) {
      stats.scale.reserve(size_t(B));
      stats.shift.reserve(size_t(B));
      ++growths;
    }
  }
};

// Sets the OpenMP team size of this thread for one call and restores it afterwards.
class ThreadsForCall {
 public:
  explicit ThreadsForCall(int threads) : prev_(omp_get_max_threads()), set_(threads > 0) {
    if (set_) omp_set_num_threads(threads);
  }
  ~ThreadsForCall() {
    if (set_) omp_set_num_threads(prev_);
  }
  ThreadsForCall(const ThreadsForCall&) = delete;
  ThreadsForCall& operator=(const ThreadsForCall&) = delete;

 private:
  int prev_;
  bool set_;
};

CpuWorkspace& state(Workspace& ws) {
  auto& s = ws.engine_state();
  if (!s || s->device() != Device::cpu) {
    s = std::make_unique<CpuWorkspace>();
    ++s->growths;
  }
  return static_cast<CpuWorkspace&>(*s);
}

bool observed(const Hooks* hooks, HookPoint p) { return hooks && hooks->observed(p); }

void run_hook(const Hooks* hooks, HookPoint p, float* data, int64_t rows, int64_t cols) {
  if (observed(hooks, p)) hooks->run(HookView{p, data, rows, cols, Device::cpu, nullptr});
}

class CpuEngine final : public Engine {
 public:
  explicit CpuEngine(const Sae& sae) : sae_(sae) {}

  int64_t encode(Workspace& ws, const EncodeArgs& a, const CallOptions& opts) const override {
    ThreadsForCall threads(opts.cpu_threads);
    CpuWorkspace& w = state(ws);
    const int64_t B = a.rows, k = sae_.cfg.k, n = sae_.cfg.d_sae;
    const bool caller_pairs = a.format == CodeFormat::topk;
    int32_t* idx = caller_pairs ? a.indices : w.grow(w.idx, size_t(B * k));
    float* val = caller_pairs ? a.values : w.grow(w.val, size_t(B * k));
    float* dense_target = a.format == CodeFormat::dense ? a.dense : nullptr;
    const float* z = encode_codes(w, a.x, B, opts.hooks, idx, val, dense_target, false);

    switch (a.format) {
      case CodeFormat::topk:
        if (z) rebuild_pairs(w, w.codes, z, B, n, k, idx, val);
        return B * k;
      case CodeFormat::dense:
        if (!z) {  // no observer built it: scatter the pairs into the caller's z
          std::fill(a.dense, a.dense + B * n, 0.f);
          for (int64_t i = 0; i < B * k; ++i) a.dense[(i / k) * n + idx[i]] = val[i];
        }
        return 0;
      case CodeFormat::csr:
        return z ? csr_from_dense(w, w.codes, z, B, n, a) : csr_from_pairs(idx, val, B, k, a);
    }
    return 0;
  }

  void decode(Workspace& ws, const DecodeArgs& a, const CallOptions& opts) const override {
    ThreadsForCall threads(opts.cpu_threads);
    state(ws);  // creates the workspace state so a warm workspace is the same for every op
    switch (a.format) {
      case CodeFormat::topk: cpu::decode_topk(sae_, a.indices, a.values, a.rows, a.width, a.out); break;
      case CodeFormat::csr: cpu::decode_csr(sae_, a.indptr, a.indices, a.values, a.rows, a.out); break;
      case CodeFormat::dense: cpu::decode_dense(sae_, a.dense, a.rows, a.out); break;
    }
    run_hook(opts.hooks, HookPoint::sae_recons, a.out, a.rows, sae_.cfg.d_in);
  }

  void forward(Workspace& ws, const float* x, int64_t B, float* out, bool use_error_term,
               const CallOptions& opts) const override {
    ThreadsForCall threads(opts.cpu_threads);
    CpuWorkspace& w = state(ws);
    const Hooks* hooks = opts.hooks;
    const int64_t d = sae_.cfg.d_in, k = sae_.cfg.k;
    int32_t* idx = w.grow(w.idx, size_t(B * k));
    float* val = w.grow(w.val, size_t(B * k));
    reconstruct(w, x, B, hooks, idx, val, out);

    if (use_error_term) {
      float* e = w.grow(w.err, size_t(B * d));  // [B, d_in]
      const bool changed_by_hooks = observed(hooks, HookPoint::sae_input) ||
                                    observed(hooks, HookPoint::sae_acts_pre) ||
                                    observed(hooks, HookPoint::sae_acts_post) ||
                                    observed(hooks, HookPoint::sae_recons);
      // sae_lens recomputes the reconstruction with hooks disabled; without observers it is `out`.
      if (changed_by_hooks)
        reconstruct(w, x, B, nullptr, idx, val, e);
      else
        std::copy(out, out + B * d, e);
      for (int64_t i = 0; i < B * d; ++i) e[i] = x[i] - e[i];
      run_hook(hooks, HookPoint::sae_error, e, B, d);
      for (int64_t i = 0; i < B * d; ++i) out[i] = out[i] + e[i];
    }
    run_hook(hooks, HookPoint::sae_output, out, B, d);
  }

 private:
  // encode -> decode -> hook_sae_recons -> undo normalisation, into out [B, d_in].
  void reconstruct(CpuWorkspace& w, const float* x, int64_t B, const Hooks* hooks, int32_t* idx, float* val,
                   float* out) const {
    const float* z = encode_codes(w, x, B, hooks, idx, val, nullptr, true);
    if (z)
      cpu::decode_dense(sae_, z, B, out);
    else
      cpu::decode_topk(sae_, idx, val, B, sae_.cfg.k, out);
    run_hook(hooks, HookPoint::sae_recons, out, B, sae_.cfg.d_in);
    cpu::normalize_out(sae_.cfg.normalize, out, B, sae_.cfg.d_in, w.stats);
  }

  // x -> top-k pairs idx/val [B, k], running hook_sae_input and hook_sae_acts_pre. When
  // hook_sae_acts_post is observed, builds dense z (in dense_target if given), runs the observers
  // on it and returns it; otherwise returns nullptr and builds nothing dense.
  const float* encode_codes(CpuWorkspace& w, const float* x, int64_t B, const Hooks* hooks, int32_t* idx, float* val,
                            float* dense_target, bool keep_stats) const {
    const int64_t d = sae_.cfg.d_in, n = sae_.cfg.d_sae, k = sae_.cfg.k;
    if (observed(hooks, HookPoint::sae_input)) {  // observers may change x, which is the caller's
      float* xin = w.grow(w.xin, size_t(B * d));
      std::copy(x, x + B * d, xin);
      run_hook(hooks, HookPoint::sae_input, xin, B, d);
      x = xin;
    }
    float* u = w.grow(w.u, size_t(B * d));  // [B, d_in]
    w.reserve_stats(B);
    cpu::process_sae_in(sae_, x, B, u, keep_stats ? &w.stats : nullptr);
    float* h = w.grow(w.h, size_t(B * n));  // [B, d_sae]
    cpu::encode_pre(sae_, u, B, h);
    run_hook(hooks, HookPoint::sae_acts_pre, h, B, n);

    const int threads = std::max(1, omp_get_max_threads());
    int32_t* select = w.grow(w.select, size_t(threads) * size_t(n));
    cpu::topk_select(h, B, n, k, idx, val, select, threads);
    for (int64_t i = 0; i < B * k; ++i) val[i] = std::max(val[i], 0.f);  // ReLU after selection

    if (!observed(hooks, HookPoint::sae_acts_post)) return nullptr;
    float* z = dense_target;
    if (!z) {
      z = w.grow(w.z, size_t(B * n));
      ++w.dense_acts_built;
    }
    std::fill(z, z + B * n, 0.f);
    for (int64_t i = 0; i < B * k; ++i) z[(i / k) * n + idx[i]] = val[i];
    run_hook(hooks, HookPoint::sae_acts_post, z, B, n);
    return z;
  }

  const Sae& sae_;
};

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(const Sae& sae) { return std::make_unique<CpuEngine>(sae); }

}  // namespace topksae::detail
