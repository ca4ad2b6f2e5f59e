// The CPU inference engine: the CPU twins (ops_cpu.h) composed into encode / decode / forward over
// workspace scratch, with the hook points run where sae_lens runs them. The codes stay top-k
// pairs; a dense z is built only when hook_sae_acts_post is observed (or asked for as output).
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "api/engine.h"
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
  std::vector<std::pair<float, int32_t>> row;  // [d_sae] one row's non-zeros when rebuilding codes
  std::vector<int32_t> orig;    // [k] one row's original selection when rebuilding codes
  cpu::NormStats stats;         // [B] each

  Device device() const override { return Device::cpu; }
  size_t bytes() const override {
    return 4 * (xin.size() + u.size() + h.size() + idx.size() + val.size() + z.size() + err.size() +
                select.size() + orig.size() + stats.scale.capacity() + stats.shift.capacity()) +
           row.size() * sizeof(row[0]);
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

// Orders a row's non-zeros as the top-k pairs are ordered: value descending, lower index first.
bool before(const std::pair<float, int32_t>& a, const std::pair<float, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Gathers row b's non-zeros of z [B, n] into w.row, sorted; returns their count.
int64_t sorted_nonzeros(CpuWorkspace& w, const float* zrow, int64_t n) {
  int64_t c = 0;
  for (int64_t j = 0; j < n; ++j)
    if (zrow[j] != 0.f) w.row[size_t(c++)] = {zrow[j], int32_t(j)};
  std::sort(w.row.begin(), w.row.begin() + c, before);
  return c;
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
        if (z) rebuild_pairs(w, z, B, idx, val);
        return B * k;
      case CodeFormat::dense:
        if (!z) {  // no observer built it: scatter the pairs into the caller's z
          std::fill(a.dense, a.dense + B * n, 0.f);
          for (int64_t i = 0; i < B * k; ++i) a.dense[(i / k) * n + idx[i]] = val[i];
        }
        return 0;
      case CodeFormat::csr:
        return z ? csr_from_dense(w, z, B, a) : csr_from_pairs(idx, val, B, a);
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

  // Top-k pairs from an observed z: the non-zeros in pair order, then (value 0) the originally
  // selected latents that are now zero, in their original order, so an observer that changes
  // nothing leaves the pairs exactly as they were.
  void rebuild_pairs(CpuWorkspace& w, const float* z, int64_t B, int32_t* idx, float* val) const {
    const int64_t n = sae_.cfg.d_sae, k = sae_.cfg.k;
    w.grow(w.row, size_t(n));
    int32_t* orig = w.grow(w.orig, size_t(k));
    for (int64_t b = 0; b < B; ++b) {
      const float* zrow = z + b * n;
      const int64_t c = sorted_nonzeros(w, zrow, n);
      if (c > k)
        throw InvalidArgument(concat("encode_topk: after the hook_sae_acts_post observers row ", b, " has ", c,
                                     " non-zero latents, more than k=", k, "; ask for CSR or dense codes"));
      std::copy(idx + b * k, idx + (b + 1) * k, orig);
      int64_t s = 0;
      for (; s < c; ++s) {
        idx[b * k + s] = w.row[size_t(s)].second;
        val[b * k + s] = w.row[size_t(s)].first;
      }
      for (int64_t i = 0; i < k && s < k; ++i)
        if (zrow[orig[i]] == 0.f) {
          idx[b * k + s] = orig[i];
          val[b * k + s] = 0.f;
          ++s;
        }
    }
  }

  int64_t csr_from_pairs(const int32_t* idx, const float* val, int64_t B, const EncodeArgs& a) const {
    const int64_t k = sae_.cfg.k;
    int64_t nnz = 0;
    for (int64_t i = 0; i < B * k; ++i) nnz += val[i] != 0.f;
    check_capacity(nnz, a.capacity);
    int64_t p = 0;
    a.indptr[0] = 0;
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = b * k; i < (b + 1) * k; ++i)
        if (val[i] != 0.f) {
          a.indices[p] = idx[i];
          a.values[p++] = val[i];
        }
      a.indptr[b + 1] = p;
    }
    return nnz;
  }

  int64_t csr_from_dense(CpuWorkspace& w, const float* z, int64_t B, const EncodeArgs& a) const {
    const int64_t n = sae_.cfg.d_sae;
    w.grow(w.row, size_t(n));
    int64_t nnz = 0;
    for (int64_t i = 0; i < B * n; ++i) nnz += z[i] != 0.f;
    check_capacity(nnz, a.capacity);
    int64_t p = 0;
    a.indptr[0] = 0;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t c = sorted_nonzeros(w, z + b * n, n);
      for (int64_t s = 0; s < c; ++s) {
        a.indices[p] = w.row[size_t(s)].second;
        a.values[p++] = w.row[size_t(s)].first;
      }
      a.indptr[b + 1] = p;
    }
    return nnz;
  }

  static void check_capacity(int64_t nnz, int64_t capacity) {
    if (nnz > capacity)
      throw InvalidArgument(concat("encode_csr: the codes have ", nnz, " non-zeros but CsrOut::capacity is ",
                                   capacity, "; pass indices/values of at least ", nnz, " elements"));
  }

  const Sae& sae_;
};

}  // namespace

std::unique_ptr<Engine> make_cpu_engine(const Sae& sae) { return std::make_unique<CpuEngine>(sae); }

}  // namespace topksae::detail
