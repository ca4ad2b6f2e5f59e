// The latent-sharded CUDA training step (sharded_step.h; docs/scaling.md's phase table): kernels/
// train's launchers on this rank's block of latents, the collectives of src/dist/sharded_step.cpp
// over dist::DeviceCollectives, in the order of kernels/train_step.cu. Per step:
//   1. window + dead mask on the shard, then one all-reduce of 4 doubles (log-sparsity sum,
//      below 1e-5, below 1e-6, dead count): AuxK's k and scale from the global dead count;
//   2. u, the encoder GEMM over the shard's columns (chunks of rows), the local top-k (and, on a
//      step whose host bound allows dead latents, the local AuxK top-k over the shard's dead ones);
//   3. the global top-k: (value, latent) candidates all-gathered and merged (exact, ties included:
//      sharded_ops.h), then "keep owned": the slots whose latent is this rank's keep their local
//      index and value, the others get value 0 and index m (the decode skips it, the backward's
//      sort puts it after every latent of the shard); the partial decodes all-reduced into xhat
//      (rank 0 starts from b_dec); the same for AuxK into ehat;
//   4. losses, g, ga on the global xhat / ehat: identical on every rank, no collective;
//   5. bookkeeping and the sparse backward on the owned entries; db_dec without its cross-latent
//      term, then W_enc[:, shard] @ db_enc[shard] and the shard's squared gradient norm in one
//      all-reduce of d_in + 1 doubles; clip by the global norm, Adam on the shard;
//   6. the metrics the shard counted (dead after, since sum, near-dead) in one all-reduce of 3
//      doubles; each rank's batch fingerprint all-gathered (a rank fed another batch is named when
//      the step's metrics come back).
// The host never waits inside a step; AuxK's path is decided from a host bound on the global dead
// count (DeadBound over the all-reduced near-dead counts), so every rank takes the same path and
// issues the same collectives.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/cuda_raii.h"
#include "common/device_array.h"
#include "cuda_internal.h"
#include "gemm_lt.h"
#include "train/dead_bound.h"
#include "train/sharded_ops.h"
#include "train/sharded_step.h"
#include "train/step_host.h"
#include "train/train_ops.h"

namespace topksae::cuda {

using detail::DeviceArray;
using train::Candidate;
using train::DevMetrics;
using train::StepControl;

namespace sharded_detail {

// The step's device record: TrainStep's StepRecord plus what the shard adds; zeroed together at
// the start of a step and copied back together at its end.
struct ShardRecord {
  train::StepRecord step;
  int32_t local_dead;     // this rank's dead latents before the step
  int32_t local_k;        // AuxK candidates this rank offers: min(k_aux, local_dead, its list width)
  int32_t bad_batch;      // 1 + the lowest rank whose batch differs from rank 0's; 0: all the same
  int32_t pad_;
  unsigned long long fp;  // this rank's batch fingerprint
};

}  // namespace sharded_detail

using sharded_detail::ShardRecord;

namespace {

__global__ void head_pack_kernel(ShardRecord* r, double* red) {
  const DevMetrics& M = r->step.metrics;
  red[0] = M.log10_sparsity_sum;
  red[1] = double(M.below5);
  red[2] = double(M.below6);
  red[3] = double(M.n_dead_before);
  r->local_dead = int32_t(M.n_dead_before);
}

__global__ void head_unpack_kernel(const double* red, ShardRecord* r) {
  DevMetrics& M = r->step.metrics;
  M.log10_sparsity_sum = red[0];
  M.below5 = (unsigned long long)red[1];
  M.below6 = (unsigned long long)red[2];
  M.n_dead_before = (unsigned long long)red[3];
}

// After aux_params: the candidates this rank can offer for AuxK (its list has `width` columns).
__global__ void local_k_kernel(ShardRecord* r, int32_t width) {
  r->local_k = min(min(r->step.control.k_aux, r->local_dead), width);
}

// Slot e of the merged selection glob / val [count]: owned when lo <= latent < hi.
//   idx_dz  = owned ? latent - lo : 0   (a row the dz dot products may read)
//   idx_loc = owned ? latent - lo : m   (the decode with n_rows = m skips it; sorts after the shard)
//   h_loc   = owned ? value : 0         (dz_rows: w = relu(h) / h, dh = 0 for 0 on the S entries)
//   z_loc   = relu(h_loc), z_glob = relu(value) (either may be null)
__global__ void keep_owned_kernel(const int32_t* __restrict__ glob, const float* __restrict__ val, int64_t count,
                                  int64_t lo, int64_t hi, int32_t* __restrict__ idx_dz, int32_t* __restrict__ idx_loc,
                                  float* __restrict__ h_loc, float* __restrict__ z_loc, float* __restrict__ z_glob) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < count; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = glob[e];
    const float v = val[e];
    const bool owned = j >= lo && j < hi;
    idx_dz[e] = owned ? int32_t(j - lo) : 0;
    idx_loc[e] = owned ? int32_t(j - lo) : int32_t(hi - lo);
    const float h = owned ? v : 0.f;
    h_loc[e] = h;
    if (z_loc != nullptr) z_loc[e] = h > 0.f ? h : 0.f;
    if (z_glob != nullptr) z_glob[e] = v > 0.f ? v : 0.f;
  }
}

// red [d + 1] = (du [d] in double, or zeros when du is null; the shard's squared gradient norm).
__global__ void bdec_pack_kernel(const float* __restrict__ du, int64_t d, const ShardRecord* r, double* red) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i <= d; i += int64_t(gridDim.x) * blockDim.x)
    red[i] = i == d ? r->step.metrics.sumsq : du != nullptr ? double(du[i]) : 0.0;
}

// db_dec -= the all-reduced W_enc @ db_enc (apply); the metrics' sumsq = the global one.
__global__ void bdec_unpack_kernel(const double* __restrict__ red, int64_t d, int apply, float* __restrict__ db_dec,
                                   ShardRecord* r) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i <= d; i += int64_t(gridDim.x) * blockDim.x) {
    if (i == d)
      r->step.metrics.sumsq = red[d];
    else if (apply)
      db_dec[i] -= float(red[i]);
  }
}

__global__ void tail_pack_kernel(const ShardRecord* r, double* red) {
  const DevMetrics& M = r->step.metrics;
  red[0] = double(M.dead_after);
  red[1] = double(M.since_sum);
  red[2] = double(M.near_dead);
}

__global__ void tail_unpack_kernel(const double* red, ShardRecord* r) {
  DevMetrics& M = r->step.metrics;
  M.dead_after = (unsigned long long)red[0];
  M.since_sum = (unsigned long long)red[1];
  M.near_dead = (unsigned long long)red[2];
}

// *out += sum over x [n] of bits(x[i]) * (2i + golden), mod 2^64 (order-free: integer sums), as
// the CPU sharded step's fingerprint.
constexpr int kFpThreads = 256;
__global__ void fingerprint_kernel(const float* __restrict__ x, int64_t n, unsigned long long* out) {
  __shared__ unsigned long long part[kFpThreads];
  unsigned long long h = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    h += (unsigned long long)__float_as_uint(x[i]) * (2ull * (unsigned long long)i + 0x9E3779B97F4A7C15ull);
  part[threadIdx.x] = h;
  __syncthreads();
  for (int w = kFpThreads / 2; w > 0; w /= 2) {
    if (int(threadIdx.x) < w) part[threadIdx.x] += part[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) atomicAdd(out, part[0]);
}

__global__ void compare_fingerprints_kernel(const unsigned long long* fps, int R, ShardRecord* r) {
  for (int q = 1; q < R; ++q)
    if (fps[q] != fps[0]) {
      r->bad_batch = q + 1;
      return;
    }
}

int smem_optin_bytes() {
  int dev = 0, optin = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  return optin;
}

}  // namespace

struct ShardedTrainStep::Impl {
  Context& ctx;
  dist::DeviceCollectives& comm;
  TrainConfig cfg;
  dist::ShardRange range;
  Precision prec;
  EncoderGemm egemm;
  int R;
  int64_t d, N, k, m;        // d_in, the global d_sae, k, this shard's latents
  int64_t half_d, kcap;      // d_in / 2 and AuxK's largest k, min(d_in / 2, d_sae) (global)
  int64_t kl, kal, kw;       // the local lists' widths min(k, m), min(kcap, m); the candidate width max(k, kcap)
  int64_t Bmax, hrows;
  int64_t oWenc, oBenc, oWdec, oBdec, P;  // the flat layout of the shard's parameters
  int sort_bits = 1, slab_tpt = 0;
  int64_t slabs = 0;
  double scaling = 1.0;
  std::optional<double> scaling_factor;
  int64_t step = 0, n_training_samples = 0, n_frac_active = 0;
  std::string data_position;
  size_t sort_tmp_bytes = 0, bytes = 0;
  train_detail::DeadBound bound;
  bool last_aux = false;  // whether the last queued step ran AuxK
  int64_t last_B = 0;
  int64_t last_k_aux = 0;

  // Shapes: P the shard's parameters, B = Bmax rows.
  DeviceArray<float> param, grad, mom, vel;    // [P]: [W_enc | b_enc | W_dec | b_dec] of the shard
  DeviceArray<float> u, h;                     // [B, d], [hrows, m]
  DeviceArray<int32_t> idxL, idxLT;            // [B, kl], [B, kal]: the local top-k lists
  DeviceArray<float> valL, valLT;              // [B, kl], [B, kal]
  DeviceArray<Candidate> cand, gathered;       // [B, kw], [R, B, kw]
  DeviceArray<int32_t> idxG, idxGT;            // [B, k], [B, kcap]: the global selections
  DeviceArray<float> hG, zG, hGT;              // [B, k] (values, relu), [B, kcap]
  DeviceArray<int32_t> idxS_dz, idxS_loc;      // [B, k] (keep_owned_kernel)
  DeviceArray<float> hS_loc, zS_loc;           // [B, k]
  DeviceArray<int32_t> idxT_dz, idxT_loc;      // [B, kcap]
  DeviceArray<float> hT_loc;                   // [B, kcap]
  DeviceArray<float> xhat, ehat, g, ga;        // [B, d]
  DeviceArray<double> mu, stats;               // [d], [B, 4]
  DeviceArray<float> arena;                    // the entry arrays: 6 x B (k + kcap)
  DeviceArray<int32_t> start;                  // [m + 1]
  DeviceArray<float> part;                     // [slabs, B k]
  DeviceArray<uint8_t> sort_tmp;
  DeviceArray<uint8_t> dead, fired;            // [m]
  DeviceArray<int64_t> since, act;             // [m]
  DeviceArray<int32_t> dead32;                 // [m]
  DeviceArray<float> du;                       // [d] W_enc[:, shard] @ db_enc[shard]
  DeviceArray<double> red;                     // [d + 1] the collectives' double buffers
  DeviceArray<unsigned long long> fps;         // [R] the batch fingerprints
  DeviceArray<ShardRecord> rec;                // [1]

  struct Pending {
    StepMetrics meta;
    int64_t B;
    int slot;
  };
  HostBuffer ring;                          // pinned ShardRecord [kMetricsRing]
  std::vector<detail::OwnedEvent> events;   // [kMetricsRing]
  std::deque<Pending> pending;
  std::vector<StepMetrics> ready;
  int next_slot = 0;

  static int64_t global_near(dist::DeviceCollectives& c, const TrainState& st, int64_t window) {
    double near = double(train_detail::DeadBound::count_near(st.stats.since_fired, window));
    c.host().all_reduce_sum(&near, 1);
    return int64_t(near);
  }

  Impl(Context& cx, dist::DeviceCollectives& cm, const TrainConfig& cf, const TrainState& st,
       const TrainStepOptions& opts)
      : ctx(cx),
        comm(cm),
        cfg(cf),
        range(dist::shard_range(cf.d_sae, cm.rank(), cm.size())),
        prec(opts.precision),
        egemm(opts.encoder_gemm),
        // Known as of step st.step - 2 until the global count of st.step - 1 is observed below.
        bound(std::vector<int64_t>{}, cf.dead_feature_window, st.step - 1) {
    cfg.validate();
    TOPKSAE_CHECK(!cfg.rescale_acts_by_decoder_norm,
                  "sharded TrainStep (CUDA): rescale_acts_by_decoder_norm is not implemented on the GPU; train it on "
                  "the CPU");
    TOPKSAE_CHECK(prec == Precision::fp32 || prec == Precision::tf32,
                  "latent-sharded training on cuda runs in fp32 or tf32 for now (the bf16 encoder GEMM is not "
                  "wired into the sharded step): pass --precision fp32 or tf32");
    TOPKSAE_CHECK(opts.grad_storage != GradStorage::fused,
                  "latent-sharded training on cuda stores its gradients (the fused mode is not wired into the "
                  "sharded step yet)");
    R = comm.size();
    TOPKSAE_CHECK(R <= train::kMaxMergeRanks, "latent-sharded training on cuda: ", R, " ranks; at most ",
                  train::kMaxMergeRanks);
    d = cfg.d_in, N = cfg.d_sae, k = cfg.k, m = range.size();
    half_d = d / 2;
    kcap = std::min(half_d, N);
    kl = std::min(k, m);
    kal = std::min(kcap, m);
    kw = std::max(k, kcap);
    Bmax = opts.max_batch > 0 ? opts.max_batch : cfg.batch_size;
    hrows = encode_chunk_rows(m, Bmax, opts.encode_rows);
    TOPKSAE_CHECK(k <= kMaxTopK && kcap <= kMaxTopK, "sharded TrainStep: k=", k, " and AuxK's d_in/2=", kcap,
                  " must be <= ", kMaxTopK);
    TOPKSAE_CHECK(Bmax * (k + kcap) < (int64_t(1) << 31), "sharded TrainStep: batch*(k + d_in/2) must be < 2^31");
    TOPKSAE_CHECK(int64_t(2) * d * 4 <= smem_optin_bytes(), "sharded TrainStep: d_in=", d, " needs ", 8 * d,
                  " bytes of shared memory per block");
    oWenc = 0, oBenc = d * m, oWdec = oBenc + m, oBdec = oWdec + m * d, P = oBdec + d;
    while ((int64_t(1) << sort_bits) <= m) ++sort_bits;  // keys in [0, m]
    // The swept dz of the main top-k (as plan_train_step picks it; needs float4 rows of W_dec).
    const bool vec_ok = d % 4 == 0 && oWdec % 4 == 0;
    const int st_opt = opts.slab_threads;
    TOPKSAE_CHECK(st_opt <= 0 || vec_ok, "sharded TrainStep: slab_threads needs d_in % 4 == 0 and a shard whose "
                  "W_dec starts 16-byte aligned");
    if (st_opt > 0)
      slab_tpt = st_opt;
    else if (st_opt == 0 && vec_ok)
      slab_tpt = detail::widest_slab_threads(std::min(m, Bmax * k), int64_t(ctx.l2_bytes()) / 4, 128);
    slabs = slab_tpt > 0 ? (d + 4 * slab_tpt - 1) / (4 * slab_tpt) : 0;
    bound.observe(st.step - 1, global_near(comm, st, cfg.dead_feature_window));

    scaling_factor = st.scaling_factor;
    scaling = st.scaling_factor ? *st.scaling_factor : 1.0;
    step = st.step;
    n_training_samples = st.n_training_samples;
    n_frac_active = st.stats.n_frac_active;
    data_position = st.data_position;
    sort_tmp_bytes = train::sort_entries_tmp_bytes(Bmax * k, sort_bits);
    if (kcap > 0)
      sort_tmp_bytes = std::max(sort_tmp_bytes, train::sort_entries_tmp_bytes(Bmax * (k + kcap), sort_bits));

    const int64_t B = Bmax;
    param = DeviceArray<float>(P);
    grad = DeviceArray<float>(P);
    mom = DeviceArray<float>(P);
    vel = DeviceArray<float>(P);
    u = DeviceArray<float>(B * d);
    h = DeviceArray<float>(hrows * m);
    idxL = DeviceArray<int32_t>(B * kl);
    valL = DeviceArray<float>(B * kl);
    idxLT = DeviceArray<int32_t>(B * kal);
    valLT = DeviceArray<float>(B * kal);
    cand = DeviceArray<Candidate>(B * kw);
    gathered = DeviceArray<Candidate>(int64_t(R) * B * kw);
    idxG = DeviceArray<int32_t>(B * k);
    hG = DeviceArray<float>(B * k);
    zG = DeviceArray<float>(B * k);
    idxGT = DeviceArray<int32_t>(B * kcap);
    hGT = DeviceArray<float>(B * kcap);
    idxS_dz = DeviceArray<int32_t>(B * k);
    idxS_loc = DeviceArray<int32_t>(B * k);
    hS_loc = DeviceArray<float>(B * k);
    zS_loc = DeviceArray<float>(B * k);
    idxT_dz = DeviceArray<int32_t>(B * kcap);
    idxT_loc = DeviceArray<int32_t>(B * kcap);
    hT_loc = DeviceArray<float>(B * kcap);
    xhat = DeviceArray<float>(B * d);
    ehat = DeviceArray<float>(B * d);
    g = DeviceArray<float>(B * d);
    ga = DeviceArray<float>(B * d);
    mu = DeviceArray<double>(d);
    stats = DeviceArray<double>(B * 4);
    arena = DeviceArray<float>(6 * B * (k + kcap));
    start = DeviceArray<int32_t>(m + 1);
    if (slab_tpt > 0) part = DeviceArray<float>(slabs * B * k);
    sort_tmp = DeviceArray<uint8_t>(int64_t(sort_tmp_bytes));
    dead = DeviceArray<uint8_t>(m);
    fired = DeviceArray<uint8_t>(m);
    since = DeviceArray<int64_t>(m);
    act = DeviceArray<int64_t>(m);
    dead32 = DeviceArray<int32_t>(m);
    du = DeviceArray<float>(d);
    red = DeviceArray<double>(d + 1);
    fps = DeviceArray<unsigned long long>(R);
    rec = DeviceArray<ShardRecord>(1);
    bytes = param.bytes() * 4 + u.bytes() + h.bytes() + idxL.bytes() + valL.bytes() + idxLT.bytes() + valLT.bytes() +
            cand.bytes() + gathered.bytes() + idxG.bytes() + hG.bytes() + zG.bytes() + idxGT.bytes() + hGT.bytes() +
            idxS_dz.bytes() * 4 + idxT_dz.bytes() * 3 + xhat.bytes() * 4 + mu.bytes() + stats.bytes() +
            arena.bytes() + start.bytes() + part.bytes() + sort_tmp.bytes() + dead.bytes() * 2 + since.bytes() * 2 +
            dead32.bytes() + du.bytes() + red.bytes() + fps.bytes() + rec.bytes();
    ring = HostBuffer(sizeof(ShardRecord) * TrainStep::kMetricsRing, HostMemory::pinned);
    events.resize(TrainStep::kMetricsRing);

    TOPKSAE_CHECK(train::state_fits(st, layout()), "sharded TrainStep: the state is not rank ", range.rank,
                  "'s part (latents [", range.lo, ", ", range.hi, ") of d_in=", d, ", d_sae=", N, ")");
    train::upload_state_arrays(st, layout(), param, mom, vel, since, act);
    CUDA_CHECK(cudaMemsetAsync(fired.data(), 0, size_t(m), detail::stream(ctx)));
    for (int64_t r0 = 0; egemm != EncoderGemm::cublas && r0 < B; r0 += hrows)
      (void)detail::encoder_gemm_prepare(ctx, egemm, prec, std::min(hrows, B - r0), m, d, u.data() + r0 * d,
                                         param.data() + oWenc, nullptr, h.data());
    ctx.synchronize();
  }

  ~Impl() { (void)cudaStreamSynchronize(detail::stream(ctx)); }

  // Waits for event ev; when it takes long (a collective waiting for a peer), through the
  // engine's synchronize, whose deadline and error polling end a hang with an Error.
  void wait_event(cudaEvent_t ev) {
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t e = cudaEventQuery(ev);
      if (e != cudaErrorNotReady) {
        CUDA_CHECK(e);
        return;
      }
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(1)) {
        comm.synchronize(detail::stream(ctx));
        return;
      }
      std::this_thread::yield();
    }
  }

  void retire_oldest() {
    wait_event(events[size_t(pending.front().slot)].get());
    ready.push_back(finish(pending.front()));
    pending.pop_front();
  }

  void run(const float* x, int64_t B) {
    TOPKSAE_CHECK(B >= 1 && B <= Bmax, "sharded TrainStep::step: batch of ", B, " rows, expected 1..", Bmax);
    cudaStream_t s = detail::stream(ctx);
    void* cs = static_cast<void*>(s);
    ShardRecord* RR = rec.data();
    DevMetrics* M = &RR->step.metrics;
    StepControl* C = &RR->step.control;
    float* prm = param.data();
    float* grd = grad.data();
    const int64_t lo = range.lo, hi = range.hi;

    if (int(pending.size()) >= TrainStep::kMetricsRing) retire_oldest();
    while (!bound.can_bound(step)) {
      TOPKSAE_CHECK(!pending.empty(), "sharded TrainStep: internal error: no step to bound the dead count from");
      retire_oldest();
    }
    // The bound is global (the all-reduced near-dead counts), so every rank decides alike.
    const int64_t nd_bound = kcap > 0 ? std::min(bound.bound(step), N) : 0;
    const bool aux = nd_bound > 0;
    const int64_t kT = aux ? kcap : 0;
    last_aux = aux;
    last_B = B;

    StepMetrics meta;
    meta.step = step;
    CUDA_CHECK(cudaMemsetAsync(RR, 0, sizeof(ShardRecord), s));
    // The batch every rank read must be the same: fingerprints all-gathered, compared on the device
    // (one rank has nothing to compare with).
    if (R > 1) {
      fingerprint_kernel<<<detail::grid_for(B * d, kFpThreads, 1024), kFpThreads, 0, s>>>(x, B * d, &RR->fp);
      CUDA_CHECK_LAUNCH();
      comm.all_gather(&RR->fp, sizeof(unsigned long long), fps.data(), cs);
      compare_fingerprints_kernel<<<1, 1, 0, s>>>(fps.data(), R, RR);
      CUDA_CHECK_LAUNCH();
    }

    // 1. the sparsity window (sums over the shard), the dead mask; both summed over the ranks.
    if ((step + 1) % cfg.feature_sampling_window == 0) {
      meta.has_sparsity = true;
      train::sparsity_metrics(s, act.data(), m, double(n_frac_active), M);
      CUDA_CHECK(cudaMemsetAsync(act.data(), 0, size_t(m) * 8, s));
      n_frac_active = 0;
    }
    train::dead_mask(s, since.data(), m, cfg.dead_feature_window, dead.data(), dead32.data(), M);
    head_pack_kernel<<<1, 1, 0, s>>>(RR, red.data());
    CUDA_CHECK_LAUNCH();
    comm.all_reduce_sum(red.data(), 4, cs);
    head_unpack_kernel<<<1, 1, 0, s>>>(red.data(), RR);
    CUDA_CHECK_LAUNCH();
    train::aux_params(s, half_d, kcap > 0 ? nd_bound : N, M, C);
    if (aux) {
      local_k_kernel<<<1, 1, 0, s>>>(RR, int32_t(kal));
      CUDA_CHECK_LAUNCH();
    }

    // 2. u, the encoder GEMM over the shard's columns and the local selections, chunk by chunk.
    const float* b_dec = prm + oBdec;
    const float* b_enc = prm + oBenc;
    const float* W_dec = prm + oWdec;
    train::prep_input(s, x, float(scaling), cfg.apply_b_dec_to_input ? b_dec : nullptr, B, d, u.data());
    TopKOptions o;
    o.bias = b_enc;
    TopKOptions oa;
    oa.bias = b_enc;
    oa.mask = dead.data();
    oa.k_dev = &RR->local_k;
    for (int64_t r0 = 0; r0 < B; r0 += hrows) {
      const int64_t rows = std::min(hrows, B - r0);
      detail::encoder_gemm(ctx, egemm, prec, rows, m, d, u.data() + r0 * d, prm + oWenc, nullptr, h.data());
      topk_select(ctx, h.data(), rows, m, kl, idxL.data() + r0 * kl, valL.data() + r0 * kl, o);
      if (aux) topk_select(ctx, h.data(), rows, m, kal, idxLT.data() + r0 * kal, valLT.data() + r0 * kal, oa);
    }

    // 3. the global top-k, the owned entries, the partial decodes summed over the ranks.
    const unsigned gk = detail::grid_for(B * k, 256), gt = detail::grid_for(B * kcap, 256);
    const float* bias0 = range.rank == 0 ? b_dec : nullptr;  // xhat = b_dec + the sum of every rank's part
    train::pack_candidates(s, idxL.data(), valL.data(), B, kl, kl, k, lo, cand.data());
    comm.all_gather(cand.data(), size_t(B * k) * sizeof(Candidate), gathered.data(), cs);
    train::merge_candidates(s, gathered.data(), R, B, k, idxG.data(), hG.data());
    keep_owned_kernel<<<gk, 256, 0, s>>>(idxG.data(), hG.data(), B * k, lo, hi, idxS_dz.data(), idxS_loc.data(),
                                         hS_loc.data(), zS_loc.data(), zG.data());
    CUDA_CHECK_LAUNCH();
    gather_decode(ctx, W_dec, bias0, idxS_loc.data(), zS_loc.data(), B, k, k, nullptr, d, xhat.data(), m);
    comm.all_reduce_sum(xhat.data(), size_t(B * d), cs);
    if (aux) {
      train::pack_candidates(s, idxLT.data(), valLT.data(), B, kal, kal, kcap, lo, cand.data(), &RR->local_k);
      comm.all_gather(cand.data(), size_t(B * kcap) * sizeof(Candidate), gathered.data(), cs);
      train::merge_candidates(s, gathered.data(), R, B, kcap, idxGT.data(), hGT.data());
      keep_owned_kernel<<<gt, 256, 0, s>>>(idxGT.data(), hGT.data(), B * kcap, lo, hi, idxT_dz.data(),
                                           idxT_loc.data(), hT_loc.data(), nullptr, nullptr);
      CUDA_CHECK_LAUNCH();
      gather_decode(ctx, W_dec, bias0, idxT_loc.data(), hT_loc.data(), B, kcap, kcap, &C->k_aux, d, ehat.data(), m);
      comm.all_reduce_sum(ehat.data(), size_t(B * d), cs);
    }

    // 4. losses, g and ga (identical on every rank), 5. bookkeeping on the owned entries.
    train::column_sums(s, x, nullptr, B, d, scaling / double(B), mu.data(), nullptr);
    train::loss_rows(s, x, float(scaling), xhat.data(), aux ? ehat.data() : nullptr, mu.data(), zG.data(), B, d, k,
                     cfg.aux_loss_coefficient, C, g.data(), ga.data(), stats.data());
    train::reduce_loss_rows(s, stats.data(), B, M);
    train::mark_fired(s, idxS_dz.data(), zS_loc.data(), B * k, fired.data(), act.data());
    train::update_since(s, since.data(), fired.data(), m, cfg.dead_feature_window, M);
    n_frac_active += B;

    // 6. the backward on the owned entries (the others sort after the shard's latents).
    const train::EntryArrays ea = train::carve_entries(arena.data(), Bmax * (k + kT));
    if (slab_tpt > 0 && kT == 0)
      train::dz_slabs(s, slab_tpt, W_dec, g.data(), idxS_dz.data(), hS_loc.data(), B, d, k, slabs, part.data(), ea);
    else
      train::dz_rows(s, W_dec, g.data(), ga.data(), idxS_dz.data(), hS_loc.data(), idxT_dz.data(), hT_loc.data(), B,
                     d, k, kT, C, ea);
    const int32_t* order = train::sort_entries(s, idxS_loc.data(), idxT_loc.data(), B, k, kT, m, sort_bits, C,
                                               sort_tmp.data(), sort_tmp_bytes, ea, start.data());
    train::grad_dec(s, start.data(), order, ea.w, g.data(), ga.data(), B, d, m, k, kT, nullptr, nullptr,
                    grd + oWdec, M);
    train::grad_enc(s, start.data(), order, ea.dh, u.data(), B, d, m, k, kT, nullptr, nullptr, nullptr, grd + oWenc,
                    grd + oBenc, M);
    float* db_dec = grd + oBdec;
    train::grad_bias_dec(ctx, g.data(), ga.data(), B, d, false, nullptr, nullptr, m, db_dec);
    if (cfg.apply_b_dec_to_input) {  // du [d] = W_enc[:, shard] [d, m] @ db_enc[shard]
      const float one = 1.f, zero = 0.f;
      CUBLAS_CHECK(cublasSgemv(detail::cublas(ctx), CUBLAS_OP_T, int(m), int(d), &one, prm + oWenc, int(m),
                               grd + oBenc, 1, &zero, du.data(), 1));
    }
    const unsigned gd = detail::grid_for(d + 1, 256);
    bdec_pack_kernel<<<gd, 256, 0, s>>>(cfg.apply_b_dec_to_input ? du.data() : nullptr, d, RR, red.data());
    CUDA_CHECK_LAUNCH();
    comm.all_reduce_sum(red.data(), size_t(d + 1), cs);
    bdec_unpack_kernel<<<gd, 256, 0, s>>>(red.data(), d, cfg.apply_b_dec_to_input ? 1 : 0, db_dec, RR);
    CUDA_CHECK_LAUNCH();
    train::add_sumsq(s, db_dec, d, M);  // b_dec is replicated: counted once
    // 7. clip by the global norm, Adam on the shard (t = step + 1).
    train::clip_factor(s, M, C);
    const double lr = cpu::lr_at(cfg, step);
    train::adam(s, ctx.sm_count(), prm, mom.data(), vel.data(), grd, P, C, lr, cfg.adam_beta1, cfg.adam_beta2,
                kAdamEps, step + 1, nullptr, d * m);
    // 8. the shard's counts summed over the ranks; the record back to the host, asynchronously.
    tail_pack_kernel<<<1, 1, 0, s>>>(RR, red.data());
    CUDA_CHECK_LAUNCH();
    comm.all_reduce_sum(red.data(), 3, cs);
    tail_unpack_kernel<<<1, 1, 0, s>>>(red.data(), RR);
    CUDA_CHECK_LAUNCH();
    const int slot = next_slot;
    next_slot = (next_slot + 1) % TrainStep::kMetricsRing;
    auto* host = static_cast<ShardRecord*>(ring.data()) + slot;
    CUDA_CHECK(cudaMemcpyAsync(host, RR, sizeof(ShardRecord), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaEventRecord(events[size_t(slot)].get(), s));
    n_training_samples += B;
    meta.lr_used = lr;
    meta.current_learning_rate = cpu::lr_at(cfg, step + 1);
    meta.n_training_samples = n_training_samples;
    pending.push_back(Pending{meta, B, slot});
    ++step;
  }

  StepMetrics finish(const Pending& p) {
    const ShardRecord& rr = static_cast<const ShardRecord*>(ring.data())[p.slot];
    TOPKSAE_CHECK(rr.bad_batch == 0, "step ", p.meta.step, ": rank ", rr.bad_batch - 1,
                  " read a different batch than rank 0; every rank must be given the same data and flags");
    TOPKSAE_CHECK(rr.step.control.aux_overflow == 0, "sharded TrainStep: internal error at step ", p.meta.step,
                  ": more dead latents than the host's bound sized AuxK for (", rr.step.metrics.n_dead_before, ")");
    bound.observe(p.meta.step, int64_t(rr.step.metrics.near_dead));
    last_k_aux = rr.step.control.k_aux;
    return train::step_metrics_from(cfg, p.meta, rr.step, p.B, N);
  }

  std::vector<StepMetrics> collect(bool wait) {
    std::vector<StepMetrics> out;
    out.swap(ready);
    while (!pending.empty()) {
      const cudaEvent_t ev = events[size_t(pending.front().slot)].get();
      if (wait) {
        wait_event(ev);
      } else {
        const cudaError_t e = cudaEventQuery(ev);
        if (e == cudaErrorNotReady) break;
        CUDA_CHECK(e);
      }
      out.push_back(finish(pending.front()));
      pending.pop_front();
    }
    return out;
  }

  train::FlatParams layout() const { return {d, m, oWenc, oBenc, oWdec, oBdec}; }
};

ShardedTrainStep::ShardedTrainStep(Context& ctx, dist::DeviceCollectives& comm, const TrainConfig& cfg,
                                   const TrainState& st, const TrainStepOptions& opts)
    : impl_(std::make_unique<Impl>(ctx, comm, cfg, st, opts)) {}
ShardedTrainStep::~ShardedTrainStep() = default;

void ShardedTrainStep::step(const float* x, int64_t B) { impl_->run(x, B); }
std::vector<StepMetrics> ShardedTrainStep::poll_metrics() { return impl_->collect(false); }
std::vector<StepMetrics> ShardedTrainStep::drain_metrics() { return impl_->collect(true); }
const dist::ShardRange& ShardedTrainStep::range() const { return impl_->range; }
int64_t ShardedTrainStep::steps_done() const { return impl_->step; }
size_t ShardedTrainStep::device_bytes() const { return impl_->bytes; }

void ShardedTrainStep::download(TrainState* st) {
  Impl& I = *impl_;
  I.comm.synchronize(detail::stream(I.ctx));
  train::download_state_arrays(I.layout(), I.param, I.mom, I.vel, I.since, I.act, st);
  st->step = I.step;
  st->n_training_samples = I.n_training_samples;
  st->stats.n_frac_active = I.n_frac_active;
  st->data_position = I.data_position;
  st->scaling_factor = I.scaling_factor;
}

ShardedTrainStep::Selections ShardedTrainStep::last_selections() {
  Impl& I = *impl_;
  I.comm.synchronize(detail::stream(I.ctx));
  TOPKSAE_CHECK(I.pending.empty(), "ShardedTrainStep::last_selections: call drain_metrics() first");
  Selections sel;
  const int64_t B = I.last_B;
  sel.top.resize(size_t(B * I.k));
  I.idxG.download(sel.top.data(), B * I.k);
  sel.k_aux = I.last_aux ? I.last_k_aux : 0;
  if (sel.k_aux > 0) {
    std::vector<int32_t> all(size_t(B * I.kcap));
    I.idxGT.download(all.data(), B * I.kcap);
    sel.aux.resize(size_t(B * sel.k_aux));
    for (int64_t b = 0; b < B; ++b)
      std::copy(all.begin() + b * I.kcap, all.begin() + b * I.kcap + sel.k_aux, sel.aux.begin() + b * sel.k_aux);
  }
  return sel;
}

}  // namespace topksae::cuda
