// The CUDA twin of cpu::train_step (shared/spec/MATH.md, "Training forward", "Backward",
// "Optimiser step", "Dead latents"): orchestration only. The kernels are in kernels/train/, one
// file per phase (train_ops.h lists them); the sizes and the memory plan in src/train/train_plan.h.
// One dense GEMM (u @ W_enc, run in chunks of rows with the selections on each chunk's h, so h
// never holds the whole batch: TrainStepOptions::encode_rows); everything after it touches only
// the k (+k_aux) selected latents per token (train_backward.cu).
// AuxK (k_aux = d_in/2 latents among the dead, per token) runs one of two ways, picked per step:
//   * dense (the default): the dead latents are compacted into a [B, nd] sub-problem (nd = a host
//     bound on the dead count, DeadBound in src/train/dead_bound.h) and its four products (the aux
//     decode, dza, dW_dec and dW_enc of the dead rows/columns) are cuBLAS GEMMs; the top-k over the
//     dead runs on the compacted [B, nd] pre-activations instead of the full h (train_aux.cu);
//   * gather: the T entries join the sorted entry lists like the main top-k's, used when the bound
//     exceeds the dense capacity (many dead latents) or when the capacity is 0.
// The dead count, AuxK's k and scale and the clip factor (StepControl) and the metrics
// (DevMetrics) stay on the device; the host never waits inside a step (only, at most, for the
// step kLag+1 back, to bound the dead count).
// Gradients (TrainStepOptions::grad_storage): stored in `grad` for Adam's flat pass, or fused: the
// backward's dW_dec / dW_enc kernels run a norm pass, then (after the clip factor) an Adam pass that
// recomputes each value and updates the weights in place (train_ops.h, grad_*_fused).
#include <algorithm>
#include <cmath>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "common/cuda_raii.h"
#include "common/device_array.h"
#include "cuda_internal.h"
#include "gemm_lt.h"
#include "topksae/train_cuda.h"
#include "train/dead_bound.h"
#include "train/step_host.h"
#include "train/train_ops.h"
#include "train/train_plan.h"

namespace topksae::cuda {

using detail::DeviceArray;
using train::DevMetrics;
using train::StepControl;
using train::StepRecord;
using train_detail::AuxPath;
using train_detail::StepShape;
using train_detail::TrainPlan;

namespace {
train_detail::DeviceLimits device_limits(Context& ctx) {
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return {int64_t(optin), int64_t(ctx.l2_bytes()), int64_t(total_bytes)};
}

// The CUB temporary sizes, which only CUB can tell.
size_t sort_tmp_bytes_for(const TrainPlan& p) {
  size_t b = 0;
  for (int64_t cnt : p.sort_counts()) b = std::max(b, train::sort_entries_tmp_bytes(cnt, p.sort_bits));
  return b;
}
size_t scan_tmp_bytes_for(const TrainPlan& p) { return p.aux_cap > 0 ? train::compact_dead_tmp_bytes(p.n) : 0; }

// TrainStepOptions::cuda_graph: the graph's input buffer [Bmax, d] and the cuBLAS workspace.
constexpr size_t kGraphBlasWorkspaceBytes = detail::kLtWorkspaceBytes;  // cuBLAS's own default on Hopper
size_t graph_bytes_for(const TrainPlan& p, bool on) {
  return on ? size_t(p.Bmax * p.d) * sizeof(float) + kGraphBlasWorkspaceBytes : 0;
}
}  // namespace

struct TrainStep::Impl {
  Context& ctx;
  TrainConfig cfg;
  TrainPlan plan;
  Precision prec;
  EncoderGemm egemm;  // the encoder GEMM's library (TrainStepOptions::encoder_gemm)
  int64_t d, n, k;
  bool fused;  // plan.fused: no dense gradient
  double scaling = 1.0;
  std::optional<double> scaling_factor;  // as given (download returns it unchanged)
  int64_t step = 0, n_training_samples = 0, n_frac_active = 0;
  std::string data_position;
  size_t sort_tmp_bytes = 0, scan_tmp_bytes = 0;
  size_t bytes = 0;  // what the buffers below take (allocated_bytes)
  train_detail::DeadBound bound;
  AuxPathCounts path_counts;

  // TrainStepOptions::cuda_graph (graph_body): one executable graph per key, at most kMaxGraphs
  // (the least recently used is replaced); a key is captured the second time it occurs, after one
  // direct run (lazy kernel loading, first-use attributes and cublasLt's timed selection happen
  // outside any capture).
  static constexpr size_t kMaxGraphs = 8;
  // What the graph body launches depends on these only (the host values of a step that reach its
  // launches): the rows, and the AuxK path with its shapes (from the host's dead bound).
  struct GraphKey {
    int64_t B;
    AuxPath path;
    int64_t ndc, kc, kT, entries_offset, entries_per;
    bool operator==(const GraphKey& o) const {  // (.cu files are C++17: no defaulted ==)
      return B == o.B && path == o.path && ndc == o.ndc && kc == o.kc && kT == o.kT &&
             entries_offset == o.entries_offset && entries_per == o.entries_per;
    }
  };
  static GraphKey graph_key(int64_t B, const StepShape& sh) {
    return {B, sh.path, sh.ndc, sh.kc, sh.kT, sh.entries_offset, sh.entries_per};
  }
  struct Graph {
    GraphKey key;
    cudaGraphExec_t exec = nullptr;
    const int32_t* order = nullptr;  // what sort_entries picked while it was captured
    int64_t last_use = 0;
  };
  bool graph_on = false;
  std::vector<Graph> graphs;
  std::vector<GraphKey> warmed;  // keys that ran directly once
  GraphCounts graph_counts;
  DeviceArray<float> xg;          // [Bmax, d]: the graph's input; each step's x is copied in
  DeviceArray<uint8_t> blas_ws;   // cuBLAS's workspace while the graph mode is on (capture needs one)

  // Shapes below: P parameters, B = plan.Bmax rows, kcap = plan.kcap, ndc <= aux_cap.
  DeviceArray<float> param, grad, m, v;     // [P]: [W_enc | b_enc | W_dec | b_dec]; grad stored mode only
  DeviceArray<float> gbias;                 // fused mode: db_enc [n], db_dec [d]
  DeviceArray<uint16_t> w16, u16;           // bf16 only: W_enc [d, n], u [B, d]
  DeviceArray<float> u;                     // [B, d] s*x - a*b_dec
  DeviceArray<float> pre;                   // h [hrows, n], then G [B, ndc] (train_plan.h)
  DeviceArray<int32_t> idxS, idxT;          // [B, k], [B, kcap] (dense AuxK: idxT holds compact positions)
  DeviceArray<float> hS, zS, hT;            // [B, k], [B, k], [B, kcap]
  DeviceArray<float> xhat, ehat, g, ga;     // [B, d]
  DeviceArray<double> mu, stats;            // [d], [B, 4]
  DeviceArray<float> arena;                 // Hc, then Zd [B, ndc]; the entry arrays (train_plan.h)
  DeviceArray<int32_t> start;               // [n + 1]
  DeviceArray<float> part;                  // [slabs, B*k]: dz_slabs' partial dots
  DeviceArray<uint8_t> sort_tmp, scan_tmp;  // CUB temporary storage
  DeviceArray<uint8_t> dead, fired;         // [n]
  DeviceArray<int64_t> since, act;          // [n]
  DeviceArray<int32_t> dead32, pos, pos_of; // [n]
  DeviceArray<int32_t> dead_list;           // [aux_cap]
  DeviceArray<float> dbe;                   // [aux_cap] db_enc's dead part
  DeviceArray<float> aux_rows;              // [aux_cap, d]: W_dec[dead], dW_dec[dead], dW_enc[:, dead]^T (stored)
  DeviceArray<float> aux_rows2;             // fused mode: [aux_cap, d] dW_enc[:, dead]^T
  DeviceArray<StepRecord> rec;              // [1]: this step's metrics and control values

  struct Pending {
    StepMetrics meta;
    int64_t B;
    int slot;
  };
  HostBuffer ring;                     // pinned StepRecord [kMetricsRing]
  std::vector<detail::OwnedEvent> events;  // [kMetricsRing]: slot i's copy has landed
  std::deque<Pending> pending;
  std::vector<StepMetrics> ready;  // finished early (ring full, or the dead-count bound needed them)
  int next_slot = 0;

  // From a host state: allocate, upload it.
  Impl(Context& c, const TrainConfig& cf, const TrainState& st, const TrainStepOptions& opts)
      : Impl(c, cf, opts, st.stats.since_fired, st.step) {
    scaling_factor = st.scaling_factor;
    scaling = st.scaling_factor ? *st.scaling_factor : 1.0;
    n_training_samples = st.n_training_samples;
    n_frac_active = st.stats.n_frac_active;
    data_position = st.data_position;
    upload_state(st);
    prepare();
  }

  // A fresh state made on the device (DeviceInit): allocate, initialise in place.
  Impl(Context& c, const TrainConfig& cf, const DeviceInit& init, const TrainStepOptions& opts)
      : Impl(c, cf, opts, since_or_zeros(init, cf), 0) {
    TOPKSAE_CHECK(init.b_enc.empty() || int64_t(init.b_enc.size()) == n,
                  "TrainStep(DeviceInit): b_enc has ", init.b_enc.size(), " entries, not d_sae=", n);
    for (DeviceArray<float>* a : {&param, &m, &v}) CUDA_CHECK(cudaMemsetAsync(a->data(), 0, size_t(plan.P) * 4, detail::stream(ctx)));
    init_params_counter(ctx, cfg, param.data() + plan.oWenc, param.data() + plan.oWdec);
    if (!init.b_enc.empty()) param.upload(init.b_enc.data(), n, plan.oBenc);
    if (init.since_fired.empty())
      CUDA_CHECK(cudaMemsetAsync(since.data(), 0, size_t(n) * sizeof(int64_t), detail::stream(ctx)));
    else
      since.upload(init.since_fired.data(), n);  // its size was checked by since_or_zeros
    CUDA_CHECK(cudaMemsetAsync(act.data(), 0, size_t(n) * sizeof(int64_t), detail::stream(ctx)));
    CUDA_CHECK(cudaMemsetAsync(fired.data(), 0, size_t(n), detail::stream(ctx)));
    prepare();
  }

  static std::vector<int64_t> since_or_zeros(const DeviceInit& init, const TrainConfig& cf) {
    TOPKSAE_CHECK(init.since_fired.empty() || int64_t(init.since_fired.size()) == cf.d_sae,
                  "TrainStep(DeviceInit): since_fired has ", init.since_fired.size(), " entries, not d_sae=", cf.d_sae);
    return init.since_fired.empty() ? std::vector<int64_t>(size_t(cf.d_sae), 0) : init.since_fired;
  }

  // Plans and allocates every buffer (the state's contents come from one of the two above).
  Impl(Context& c, const TrainConfig& cf, const TrainStepOptions& opts, const std::vector<int64_t>& since0,
       int64_t step0)
      : ctx(c), cfg(cf), plan(train_detail::plan_train_step(cf, opts, device_limits(c))), prec(opts.precision),
        egemm(opts.encoder_gemm), d(plan.d), n(plan.n), k(plan.k), fused(plan.fused), bound(since0, cf.dead_feature_window, step0),
        graph_on(opts.cuda_graph) {
    step = step0;
    sort_tmp_bytes = sort_tmp_bytes_for(plan);
    scan_tmp_bytes = scan_tmp_bytes_for(plan);
    const int64_t B = plan.Bmax;
    param = DeviceArray<float>(plan.P);
    if (plan.grad_elems > 0) grad = DeviceArray<float>(plan.grad_elems);
    if (plan.gbias_elems > 0) gbias = DeviceArray<float>(plan.gbias_elems);
    m = DeviceArray<float>(plan.P);
    v = DeviceArray<float>(plan.P);
    if (plan.w16_elems > 0) w16 = DeviceArray<uint16_t>(plan.w16_elems);
    if (plan.u16_elems > 0) u16 = DeviceArray<uint16_t>(plan.u16_elems);
    u = DeviceArray<float>(B * d);
    pre = DeviceArray<float>(plan.pre_elems);
    idxS = DeviceArray<int32_t>(B * k);
    hS = DeviceArray<float>(B * k);
    zS = DeviceArray<float>(B * k);
    idxT = DeviceArray<int32_t>(B * plan.kcap);
    hT = DeviceArray<float>(B * plan.kcap);
    xhat = DeviceArray<float>(B * d);
    ehat = DeviceArray<float>(B * d);
    g = DeviceArray<float>(B * d);
    ga = DeviceArray<float>(B * d);
    mu = DeviceArray<double>(d);
    stats = DeviceArray<double>(B * 4);
    arena = DeviceArray<float>(plan.arena_elems);
    start = DeviceArray<int32_t>(n + 1);
    if (plan.part_elems > 0) part = DeviceArray<float>(plan.part_elems);
    sort_tmp = DeviceArray<uint8_t>(int64_t(sort_tmp_bytes));
    dead = DeviceArray<uint8_t>(n);
    fired = DeviceArray<uint8_t>(n);
    since = DeviceArray<int64_t>(n);
    act = DeviceArray<int64_t>(n);
    dead32 = DeviceArray<int32_t>(n);
    if (plan.aux_cap > 0) {
      pos = DeviceArray<int32_t>(n);
      pos_of = DeviceArray<int32_t>(n);
      dead_list = DeviceArray<int32_t>(plan.aux_cap);
      dbe = DeviceArray<float>(plan.aux_cap);
      aux_rows = DeviceArray<float>(plan.aux_rows_elems);
      if (plan.aux_rows2_elems > 0) aux_rows2 = DeviceArray<float>(plan.aux_rows2_elems);
      scan_tmp = DeviceArray<uint8_t>(int64_t(scan_tmp_bytes));
    }
    rec = DeviceArray<StepRecord>(1);
    if (graph_on) {
      const cudaStream_t s = detail::stream(ctx);
      TOPKSAE_CHECK(s != nullptr && s != cudaStreamLegacy && s != cudaStreamPerThread,
                    "TrainStepOptions::cuda_graph: the Context runs on a default stream, which CUDA cannot capture; "
                    "build the Context on a stream of your own (cudaStreamCreate)");
      xg = DeviceArray<float>(B * d);
      // cuBLAS allocates from its default pool unless given a workspace, which a capture forbids.
      // Set for the direct steps too, so that both run the same cuBLAS algorithms (bit equality).
      blas_ws = DeviceArray<uint8_t>(int64_t(kGraphBlasWorkspaceBytes));
      CUBLAS_CHECK(cublasSetWorkspace(detail::cublas(ctx), blas_ws.data(), kGraphBlasWorkspaceBytes));
    }
    bytes = allocated_bytes();  // the test compares it with planned_bytes (the plan's own count)
    ring = HostBuffer(sizeof(StepRecord) * kMetricsRing, HostMemory::pinned);
    events.resize(kMetricsRing);
  }

  void upload_state(const TrainState& st) {
    TOPKSAE_CHECK(train::state_fits(st, layout()), "TrainStep: the state's parameters, moments or statistics do not "
                  "have the shapes of d_in=", d, ", d_sae=", n);
    train::upload_state_arrays(st, layout(), param, m, v, since, act);
    CUDA_CHECK(cudaMemsetAsync(fired.data(), 0, size_t(n), detail::stream(ctx)));
  }

  // Once the state is on the device: the bf16 copy of W_enc, the encoder GEMM's algorithms.
  void prepare() {
    const int64_t B = plan.Bmax;
    if (prec == Precision::bf16) to_bf16(ctx, param.data() + plan.oWenc, w16.data(), d * n);
    // cublasLt's algorithm for every chunk a full batch makes, timed now (it synchronises) rather
    // than inside a step; h is overwritten, u is not read for its values.
    for (int64_t r0 = 0; egemm != EncoderGemm::cublas && r0 < B; r0 += plan.hrows)
      gemm_chunk(r0, std::min(plan.hrows, B - r0), pre.data(), /*prepare_only=*/true);
    ctx.synchronize();
  }

  ~Impl() {
    const cudaStream_t s = detail::stream(ctx);
    (void)cudaStreamSynchronize(s);
    for (Graph& g : graphs) (void)cudaGraphExecDestroy(g.exec);
    // cublasSetStream puts cuBLAS back on its default workspace pool before blas_ws is freed.
    if (graph_on) (void)cublasSetStream(detail::cublas(ctx), s);
  }

  // What the buffers above hold, counted from the allocations themselves.
  size_t allocated_bytes() const {
    size_t b = param.bytes() + grad.bytes() + m.bytes() + v.bytes() + w16.bytes() + u16.bytes() + u.bytes();
    b += pre.bytes() + idxS.bytes() + idxT.bytes() + hS.bytes() + zS.bytes() + hT.bytes();
    b += xhat.bytes() + ehat.bytes() + g.bytes() + ga.bytes() + mu.bytes() + stats.bytes() + arena.bytes();
    b += start.bytes() + part.bytes() + sort_tmp.bytes() + scan_tmp.bytes() + dead.bytes() + fired.bytes();
    b += since.bytes() + act.bytes() + dead32.bytes() + pos.bytes() + pos_of.bytes() + dead_list.bytes();
    b += dbe.bytes() + aux_rows.bytes() + rec.bytes() + gbias.bytes() + aux_rows2.bytes();
    b += xg.bytes() + blas_ws.bytes();
    return b;
  }

  // h [rows, n] = u[r0 : r0+rows] @ W_enc (bf16: u16, converted by the caller, @ the bf16 copy).
  // prepare_only: only select cublasLt's algorithm for this chunk (gemm_lt.h).
  void gemm_chunk(int64_t r0, int64_t rows, float* h, bool prepare_only = false) {
    const bool bf16 = prec == Precision::bf16;
    const void* A = bf16 ? static_cast<const void*>(u16.data() + r0 * d) : u.data() + r0 * d;
    const void* W = bf16 ? static_cast<const void*>(w16.data()) : param.data() + plan.oWenc;
    if (prepare_only)
      (void)detail::encoder_gemm_prepare(ctx, egemm, prec, rows, n, d, A, W, nullptr, h);
    else
      detail::encoder_gemm(ctx, egemm, prec, rows, n, d, A, W, nullptr, h);
  }

  // The step's body (run's `body`, steps 2-7 up to the clip factor) through a CUDA graph: replayed
  // when its key has one; captured when the key ran once already; else run directly (warm-up).
  // The input: x is copied into xg, the graph's fixed input, before each replay: B x d floats, at
  // 768 x 4096 about 25 MB of traffic, ~8 us at an H100's bandwidth (an estimate, ~0.4% of the
  // 2.3 ms step). The alternative, rewriting the x argument of the three kernel nodes that read it
  // (cudaGraphExecKernelNodeSetParams), would tie this file to those kernels' parameter lists.
  template <class Body>
  void graph_body(const float* x, int64_t B, const StepShape& sh, Body& body, const int32_t** order) {
    const cudaStream_t s = detail::stream(ctx);
    const GraphKey key = graph_key(B, sh);
    auto it = std::find_if(graphs.begin(), graphs.end(), [&](const Graph& g) { return g.key == key; });
    if (it == graphs.end()) {
      if (std::find(warmed.begin(), warmed.end(), key) == warmed.end()) {
        warmed.push_back(key);
        ++graph_counts.direct;
        body(x);
        return;
      }
      it = capture(key, B, body, order);
    }
    it->last_use = step;
    *order = it->order;
    CUDA_CHECK(cudaMemcpyAsync(xg.data(), x, size_t(B * d) * sizeof(float), cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaGraphLaunch(it->exec, s));
    ++graph_counts.replayed;
  }

  template <class Body>
  std::vector<Graph>::iterator capture(const GraphKey& key, int64_t B, Body& body, const int32_t** order) {
    const cudaStream_t s = detail::stream(ctx);
    // cublasLt's timed selection synchronises: done for these chunk shapes before the capture.
    for (int64_t r0 = 0; egemm != EncoderGemm::cublas && r0 < B; r0 += plan.hrows)
      gemm_chunk(r0, std::min(plan.hrows, B - r0), pre.data(), /*prepare_only=*/true);
    // Thread-local: another thread's unrelated CUDA calls (a data loader's) cannot break it.
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    cudaGraph_t graph = nullptr;
    try {
      body(xg.data());
    } catch (...) {
      (void)cudaStreamEndCapture(s, &graph);  // ends the (invalidated) capture; the error is the body's
      if (graph) (void)cudaGraphDestroy(graph);
      (void)cudaGetLastError();
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    CUDA_CHECK(e);
    ++graph_counts.captured;
    if (graphs.size() >= kMaxGraphs) {  // replace the least recently used (a queued launch of it still runs)
      auto lru = std::min_element(graphs.begin(), graphs.end(),
                                  [](const Graph& a, const Graph& b) { return a.last_use < b.last_use; });
      CUDA_CHECK(cudaGraphExecDestroy(lru->exec));
      graphs.erase(lru);
    }
    graphs.push_back(Graph{key, exec, *order, step});
    return graphs.end() - 1;
  }

  // Moves the oldest pending step's metrics to `ready` (waiting for it).
  void retire_oldest() {
    CUDA_CHECK(cudaEventSynchronize(events[size_t(pending.front().slot)].get()));
    ready.push_back(finish(pending.front()));
    pending.pop_front();
  }

  void run(const float* x, int64_t B) {
    TOPKSAE_CHECK(B >= 1 && B <= plan.Bmax, "TrainStep::step: batch of ", B, " rows, expected 1..", plan.Bmax);
    cudaStream_t s = detail::stream(ctx);
    DevMetrics* M = &rec.data()->metrics;
    StepControl* C = &rec.data()->control;
    float* prm = param.data();
    float* grd = grad.data();
    const int64_t kcap = plan.kcap;

    // Wait for a free metrics slot (only when the consumer is kMetricsRing steps behind).
    // Its host copy is finished into `ready` first, so nothing is overwritten before collection.
    if (int(pending.size()) >= kMetricsRing) retire_oldest();
    // A host bound on this step's dead count: waits only when the host is more than kLag steps
    // ahead of the device (DeadBound).
    while (!bound.can_bound(step)) {
      TOPKSAE_CHECK(!pending.empty(), "TrainStep: internal error: no step to bound the dead count from");
      retire_oldest();
    }
    const int64_t nd_bound = kcap > 0 ? std::min(bound.bound(step), n) : 0;
    const StepShape sh = plan.shape(nd_bound);
    const AuxPath path = sh.path;
    const int64_t ndc = sh.ndc, kc = sh.kc, kT = sh.kT;
    // The step's buffers that share storage (train_plan.h); one name per meaning.
    float* h = pre.data();       // [hrows, n] pre-activations, during the forward
    float* G = pre.data();       // [B, ndc] dza (dense AuxK), in the backward: h is dead by then
    float* Hc = arena.data();    // [B, ndc] the dead columns of h (+ b_enc), read by AuxK's top-k
    float* Zd = arena.data();    // [B, ndc] AuxK's codes, written after that top-k: Hc is dead
    float* Wd_dead = aux_rows.data();   // [ndc, d] W_dec[dead], read by the ehat and G GEMMs
    float* dWd_dead = aux_rows.data();  // [ndc, d] dW_dec[dead], written after the G GEMM
    // [ndc, d] dW_enc[:, dead]^T, written after grad_dec (fused: its own buffer, dW_dec[dead] is read again)
    float* dWe_dead = fused ? aux_rows2.data() : aux_rows.data();
    float* db_enc = fused ? gbias.data() : grd + plan.oBenc;  // [n]
    float* db_dec = fused ? gbias.data() + n : grd + plan.oBdec;  // [d]
    const train::EntryArrays ea = train::carve_entries(arena.data() + sh.entries_offset, sh.entries_per);
    const Precision aux_prec = prec == Precision::fp32 ? Precision::fp32 : Precision::tf32;
    switch (path) {
      case AuxPath::none: ++path_counts.none; break;
      case AuxPath::dense: ++path_counts.dense; break;
      case AuxPath::gather: ++path_counts.gather; break;
    }

    StepMetrics meta;
    meta.step = step;
    CUDA_CHECK(cudaMemsetAsync(rec.data(), 0, sizeof(StepRecord), s));
    // 1. a new feature-sampling window: log the closed window's sparsity, then reset.
    if ((step + 1) % cfg.feature_sampling_window == 0) {
      meta.has_sparsity = true;
      train::sparsity_metrics(s, act.data(), n, double(n_frac_active), M);
      CUDA_CHECK(cudaMemsetAsync(act.data(), 0, size_t(n) * 8, s));
      n_frac_active = 0;
    }
    // 2. dead mask of the step before, AuxK's size; dense AuxK: the compacted dead list.
    train::dead_mask(s, since.data(), n, cfg.dead_feature_window, dead.data(), dead32.data(), M);
    train::aux_params(s, plan.half_d, kcap > 0 ? nd_bound : n, M, C);
    // Steps 2 (the compacted dead list) to 7 (the clip factor): launched directly, or captured into
    // and replayed from a CUDA graph (TrainStepOptions::cuda_graph). Everything they launch
    // depends on B and the StepShape only (the graph's key); x is the graph's input buffer there.
    const int32_t* order = nullptr;  // the entry order sort_entries picked (host-side, fixed per key)
    const int32_t* pos_of_or_null = path == AuxPath::dense ? pos_of.data() : nullptr;
    auto body = [&](const float* xin) {
      if (path == AuxPath::dense)
        train::compact_dead(s, dead32.data(), n, ndc, pos.data(), scan_tmp.data(), scan_tmp_bytes, dead_list.data(),
                            pos_of.data(), C);
      // 3. forward: u = s*x - a*b_dec, h = u @ W_enc, S = top-k(h + b_enc), T = top-k over dead.
      const float* b_dec = prm + plan.oBdec;
      const float* b_enc = prm + plan.oBenc;
      const float* W_dec = prm + plan.oWdec;
      train::prep_input(s, xin, float(scaling), cfg.apply_b_dec_to_input ? b_dec : nullptr, B, d, u.data());
      if (prec == Precision::bf16) to_bf16(ctx, u.data(), u16.data(), B * d);
      // The encoder GEMM and every selection on h, one chunk of rows at a time (h holds one chunk).
      TopKOptions o;
      o.bias = b_enc;
      TopKOptions oa;  // the gather path's AuxK over the dead latents
      oa.bias = b_enc;
      oa.mask = dead.data();
      oa.k_dev = &C->k_aux;
      for (int64_t r0 = 0; r0 < B; r0 += plan.hrows) {
        const int64_t rows = std::min(plan.hrows, B - r0);
        gemm_chunk(r0, rows, h);
        topk_select(ctx, h, rows, n, k, idxS.data() + r0 * k, hS.data() + r0 * k, o);
        if (path == AuxPath::dense)  // the dead columns (+ b_enc) into rows r0.. of Hc
          train::gather_dead_cols(s, h, b_enc, dead_list.data(), rows, n, ndc, Hc + r0 * ndc);
        else if (path == AuxPath::gather)
          topk_select(ctx, h, rows, n, kcap, idxT.data() + r0 * kcap, hT.data() + r0 * kcap, oa);
      }
      train::relu(s, hS.data(), zS.data(), B * k);
      gather_decode(ctx, W_dec, b_dec, idxS.data(), zS.data(), B, k, k, nullptr, d, xhat.data(), n);
      if (path == AuxPath::dense) {
        // T over the compacted columns: positions r in [0, ndc) in idxT, values in hT ([B, kc]).
        TopKOptions oc;
        oc.k_dev = &C->k_aux;
        oc.sorted = false;  // scatter_aux and mask_aux_grad need only the set
        topk_select(ctx, Hc, B, ndc, kc, idxT.data(), hT.data(), oc);
        train::scatter_aux(s, idxT.data(), hT.data(), B, kc, ndc, C, Zd);
        train::gather_dead_rows(s, W_dec, dead_list.data(), ndc, d, Wd_dead);
        // ehat [B, d] = b_dec + Zd @ W_dec[dead]
        detail::fill_rows(ctx, ehat.data(), b_dec, B, d);
        detail::gemm_rowmajor_ex(ctx, false, false, B, d, ndc, Zd, ndc, Wd_dead, d, 1.f, ehat.data(), d, aux_prec);
      } else if (path == AuxPath::gather) {
        gather_decode(ctx, W_dec, b_dec, idxT.data(), hT.data(), B, kcap, kcap, &C->k_aux, d, ehat.data(), n);
      }
      // 4. losses, g and ga, metrics.
      train::column_sums(s, xin, nullptr, B, d, scaling / double(B), mu.data(), nullptr);
      train::loss_rows(s, xin, float(scaling), xhat.data(), path != AuxPath::none ? ehat.data() : nullptr, mu.data(),
                       zS.data(), B, d, k, cfg.aux_loss_coefficient, C, g.data(), ga.data(), stats.data());
      train::reduce_loss_rows(s, stats.data(), B, M);
      // 5. bookkeeping after the forward.
      train::mark_fired(s, idxS.data(), zS.data(), B * k, fired.data(), act.data());
      train::update_since(s, since.data(), fired.data(), n, cfg.dead_feature_window, M);
      // 6. backward.
      if (path == AuxPath::dense) {
        // G = ga @ W_dec[dead]^T, then dW_dec[dead] = Zd^T @ ga over W_dec[dead] (read just before).
        detail::gemm_rowmajor_ex(ctx, false, true, B, ndc, d, ga.data(), d, Wd_dead, d, 0.f, G, ndc, aux_prec);
        detail::gemm_rowmajor_ex(ctx, true, false, ndc, d, B, Zd, ndc, ga.data(), d, 0.f, dWd_dead, d, aux_prec);
        train::mask_aux_grad(s, idxT.data(), B, kc, ndc, C, G);
        // db_enc's dead part: column sums of dza.
        train::column_sums(s, G, nullptr, B, ndc, 1.0, nullptr, dbe.data());
      }
      if (plan.slab_tpt > 0 && kT == 0)  // the S entries' dz swept over column slabs (T entries, if any, are GEMMs here)
        train::dz_slabs(s, plan.slab_tpt, W_dec, g.data(), idxS.data(), hS.data(), B, d, k, plan.slabs, part.data(), ea);
      else
        train::dz_rows(s, W_dec, g.data(), ga.data(), idxS.data(), hS.data(), idxT.data(), hT.data(), B, d, k, kT, C,
                       ea);
      order = train::sort_entries(s, idxS.data(), idxT.data(), B, k, kT, n, plan.sort_bits, C,
                                  sort_tmp.data(), sort_tmp_bytes, ea, start.data());
      if (fused)  // the norm pass (the Adam pass is in 7.)
        train::grad_dec_fused(s, train::FusedPass::norm, start.data(), order, ea.w, g.data(), ga.data(), B, d, n, k, kT,
                              pos_of_or_null, dWd_dead, {}, M);
      else
        train::grad_dec(s, start.data(), order, ea.w, g.data(), ga.data(), B, d, n, k, kT, pos_of_or_null, dWd_dead,
                        grd + plan.oWdec, M);
      if (path == AuxPath::dense)  // dW_enc[:, dead]^T = dza^T @ u, over dW_dec[dead] (consumed by grad_dec)
        detail::gemm_rowmajor_ex(ctx, true, false, ndc, d, B, G, ndc, u.data(), d, 0.f, dWe_dead, d, aux_prec);
      if (fused)
        train::grad_enc_fused(s, train::FusedPass::norm, start.data(), order, ea.dh, u.data(), B, d, n, k, kT,
                              pos_of_or_null, dWe_dead, dbe.data(), db_enc, {}, M);
      else
        train::grad_enc(s, start.data(), order, ea.dh, u.data(), B, d, n, k, kT, pos_of_or_null, dWe_dead, dbe.data(),
                        grd + plan.oWenc, db_enc, M);
      train::grad_bias_dec(ctx, g.data(), ga.data(), B, d, cfg.apply_b_dec_to_input, prm + plan.oWenc, db_enc, n, db_dec);
      train::add_sumsq(s, db_dec, d, M);
      // 7. clip (Adam below, t = step + 1).
      train::clip_factor(s, M, C);
    };
    if (graph_on)
      graph_body(x, B, sh, body, &order);
    else
      body(x);
    n_frac_active += B;
    const double lr = cpu::lr_at(cfg, step);
    uint16_t* w16_or_null = prec == Precision::bf16 ? w16.data() : nullptr;
    if (fused) {
      // The Adam pass: the same sums again, each value into its parameter's update.
      const train::AdamParams ap = train::adam_params(lr, cfg.adam_beta1, cfg.adam_beta2, kAdamEps, step + 1);
      const train::AdamBlock we{prm + plan.oWenc, m.data() + plan.oWenc, v.data() + plan.oWenc, w16_or_null, C, ap};
      const train::AdamBlock wd{prm + plan.oWdec, m.data() + plan.oWdec, v.data() + plan.oWdec, nullptr, C, ap};
      train::grad_enc_fused(s, train::FusedPass::adam, start.data(), order, ea.dh, u.data(), B, d, n, k, kT,
                            pos_of_or_null, dWe_dead, dbe.data(), nullptr, we, M);
      train::grad_dec_fused(s, train::FusedPass::adam, start.data(), order, ea.w, g.data(), ga.data(), B, d, n, k, kT,
                            pos_of_or_null, dWd_dead, wd, M);
      train::adam_range(s, prm + plan.oBenc, m.data() + plan.oBenc, v.data() + plan.oBenc, db_enc, n, C, ap);
      train::adam_range(s, prm + plan.oBdec, m.data() + plan.oBdec, v.data() + plan.oBdec, db_dec, d, C, ap);
    } else {
      train::adam(s, ctx.sm_count(), prm, m.data(), v.data(), grd, plan.P, C, lr, cfg.adam_beta1, cfg.adam_beta2,
                  kAdamEps, step + 1, w16_or_null, d * n);
    }
    // 8. metrics back to the host, asynchronously.
    const int slot = next_slot;
    next_slot = (next_slot + 1) % kMetricsRing;
    auto* host = static_cast<StepRecord*>(ring.data()) + slot;
    CUDA_CHECK(cudaMemcpyAsync(host, rec.data(), sizeof(StepRecord), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaEventRecord(events[size_t(slot)].get(), s));
    n_training_samples += B;
    meta.lr_used = lr;
    meta.current_learning_rate = cpu::lr_at(cfg, step + 1);
    meta.n_training_samples = n_training_samples;
    pending.push_back(Pending{meta, B, slot});
    ++step;
  }

  StepMetrics finish(const Pending& p) {
    const StepRecord& rr = static_cast<const StepRecord*>(ring.data())[p.slot];
    TOPKSAE_CHECK(rr.control.aux_overflow == 0, "TrainStep: internal error at step ", p.meta.step,
                  ": more dead latents than the host's bound sized AuxK for (", rr.metrics.n_dead_before, ")");
    bound.observe(p.meta.step, int64_t(rr.metrics.near_dead));
    return train::step_metrics_from(cfg, p.meta, rr, p.B, n);
  }

  std::vector<StepMetrics> collect(bool wait) {
    std::vector<StepMetrics> out;
    out.swap(ready);
    while (!pending.empty()) {
      const Pending& p = pending.front();
      const cudaEvent_t ev = events[size_t(p.slot)].get();
      if (wait) {
        CUDA_CHECK(cudaEventSynchronize(ev));
      } else {
        const cudaError_t e = cudaEventQuery(ev);
        if (e == cudaErrorNotReady) break;
        CUDA_CHECK(e);
      }
      out.push_back(finish(p));
      pending.pop_front();
    }
    return out;
  }

  train::FlatParams layout() const { return {d, n, plan.oWenc, plan.oBenc, plan.oWdec, plan.oBdec}; }
};

TrainStep::TrainStep(Context& ctx, const TrainConfig& cfg, const TrainState& st, const TrainStepOptions& opts)
    : impl_(std::make_unique<Impl>(ctx, cfg, st, opts)) {}
TrainStep::TrainStep(Context& ctx, const TrainConfig& cfg, const DeviceInit& init, const TrainStepOptions& opts)
    : impl_(std::make_unique<Impl>(ctx, cfg, init, opts)) {}
size_t TrainStep::planned_bytes(Context& ctx, const TrainConfig& cfg, const TrainStepOptions& opts) {
  const TrainPlan p = train_detail::plan_train_step(cfg, opts, device_limits(ctx));
  return p.bytes(sort_tmp_bytes_for(p), scan_tmp_bytes_for(p), sizeof(StepRecord)) + graph_bytes_for(p, opts.cuda_graph);
}
TrainStep::~TrainStep() = default;

void TrainStep::step(const float* x, int64_t B) { impl_->run(x, B); }
std::vector<StepMetrics> TrainStep::poll_metrics() { return impl_->collect(false); }
std::vector<StepMetrics> TrainStep::drain_metrics() { return impl_->collect(true); }
int64_t TrainStep::steps_done() const { return impl_->step; }
Precision TrainStep::precision() const { return impl_->prec; }
size_t TrainStep::device_bytes() const { return impl_->bytes; }
int64_t TrainStep::aux_dense_capacity() const { return impl_->plan.aux_cap; }
int TrainStep::slab_threads() const { return impl_->plan.slab_tpt; }
GradStorage TrainStep::grad_storage() const { return impl_->fused ? GradStorage::fused : GradStorage::stored; }
EncoderGemm TrainStep::encoder_gemm() const { return impl_->egemm; }
int64_t TrainStep::encode_rows() const { return impl_->plan.hrows; }
AuxPathCounts TrainStep::aux_path_counts() const { return impl_->path_counts; }
GraphCounts TrainStep::graph_counts() const { return impl_->graph_counts; }

void TrainStep::download(TrainState* st) {
  Impl& I = *impl_;
  I.ctx.synchronize();
  train::download_state_arrays(I.layout(), I.param, I.m, I.v, I.since, I.act, st);
  st->step = I.step;
  st->n_training_samples = I.n_training_samples;
  st->stats.n_frac_active = I.n_frac_active;
  st->data_position = I.data_position;
  st->scaling_factor = I.scaling_factor;
}

void TrainStep::download_grads(Params<float>* grad) {
  TOPKSAE_CHECK(!impl_->fused, "TrainStep::download_grads: this step keeps no dense gradients (grad_storage fused)");
  impl_->ctx.synchronize();
  train::download_params(impl_->grad, impl_->layout(), grad);
}

}  // namespace topksae::cuda
