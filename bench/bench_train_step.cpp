// bench_train_step: one full sae_lens training step (forward, MSE + AuxK with ~5% dead latents,
// sparse backward, clip, Adam) per precision mode, with the data pipeline off (batches already on
// the device, rotated) and on (each batch copied from pinned host memory on a second stream,
// double-buffered, overlapping the previous step). Validated first: a proxy shape against the
// CPU trainer for the same precision, and finite losses at the timed shape.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

#include "bench_common.h"
#include "topksae/error.h"
#include "topksae/train.h"
#ifdef TOPKSAE_HAS_CUDA
#include <cuda_runtime.h>
#include <nvtx3/nvToolsExt.h>

#include "topksae/train_cuda.h"
#endif

using namespace topksae;
using namespace topksae::bench;

namespace {
bool g_failed = false;

TrainConfig config_for(const Shape& s) {
  TrainConfig cfg;
  cfg.d_in = s.d_in;
  cfg.d_sae = s.d_sae;
  cfg.k = s.k;
  cfg.batch_size = s.batch;
  cfg.training_tokens = s.batch * 1000000;
  cfg.lr = 3e-4;
  return cfg;
}

// The initial state with ~5% of the latents dead (as the peers' benchmark), seeded. The peers
// keep their dead mask fixed, so AuxK runs in every step they time; here a dead latent that won a
// place in the main top-k would be revived (since_fired = 0) and AuxK would stop after a few
// steps. A bias of -2 on the dead latents keeps them out of the main top-k (pre-activations of
// the live ones are O(0.1) at init) while AuxK still selects among them (no ReLU there), so every
// timed step pays for AuxK, as the peers' do; the bench reports the steps that ran it.
struct DeadPattern {
  std::vector<float> b_enc;          // [d_sae]: -2 on the dead latents, 0 elsewhere
  std::vector<int64_t> since_fired;  // [d_sae]: window + 1 on the dead latents
};
DeadPattern dead_pattern(const TrainConfig& cfg) {
  DeadPattern p{std::vector<float>(size_t(cfg.d_sae), 0.f), std::vector<int64_t>(size_t(cfg.d_sae), 0)};
  std::mt19937_64 rng(7);
  for (int64_t j = 0; j < cfg.d_sae; ++j)
    if (rng() % 20 == 0) {
      p.since_fired[size_t(j)] = cfg.dead_feature_window + 1;
      p.b_enc[size_t(j)] = -2.f;
    }
  return p;
}
TrainState state_with_dead(const TrainConfig& cfg) {
  TrainState st = TrainState::initial(cfg);
  DeadPattern p = dead_pattern(cfg);
  st.params.b_enc = std::move(p.b_enc);
  st.stats.since_fired = std::move(p.since_fired);
  return st;
}

// Shapes whose host state would take more than 12 GiB (weights and both moments; 4096 x 2^20
// takes 96 GiB and a minute to draw) start from a state made on the device (cuda::DeviceInit:
// the same law and dead pattern, other random numbers) and time the plain step only: each variant
// builds its own TrainStep, and the one-card ceiling's takes 130 GiB. --device-init asks for it at
// any shape.
bool huge_shape(const Shape& s, const Args& a) {
  return a.device_init || 3.0 * 8.0 * double(s.d_in) * double(s.d_sae) > 12.0 * double(1ull << 30);
}

std::vector<float> host_batch(int64_t B, int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(size_t(B * d));
  for (float& v : x) v = nd(rng);
  return x;
}
}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = Args::parse(argc, argv, "bench_train_step", "one full TopK SAE training step per precision");
    Report rep("train_step", a);
    const bool gpu = gpu_usable(a);
    nlohmann::json ceil = gpu ? measure_ceilings(a.tiny) : nlohmann::json::object();
    rep.set_ceilings(ceil);
    for (const Shape& s : a.shapes) {
      const TrainConfig cfg = config_for(s);
      [[maybe_unused]] const double flop = 2.0 * double(s.batch) * double(s.d_in) * double(s.d_sae);
      auto base_row = [&](const std::string& variant) {
        nlohmann::json r;
        r["shape"] = s.str();
        r["d_in"] = s.d_in;
        r["d_sae"] = s.d_sae;
        r["k"] = s.k;
        r["batch"] = s.batch;
        r["variant"] = variant;
        r["targets"] = perf_targets(s);
        return r;
      };
      // ---- the CPU trainer (small shapes, or --cpu)
      const bool cpu_too = a.want_cpu || a.tiny || s.d_in * s.d_sae * s.batch <= (int64_t(1) << 28) || !gpu;
      if (cpu_too) {
        nlohmann::json r = base_row("cpu_twin_train_step_fp32");
        TrainState st = state_with_dead(cfg);
        cpu::TrainWorkspace ws;
        std::vector<std::vector<float>> xs = {host_batch(s.batch, s.d_in, 1), host_batch(s.batch, s.d_in, 2)};
        const StepMetrics m0 = cpu::train_step(cfg, &st, xs[0].data(), s.batch, &ws);
        if (!std::isfinite(m0.overall_loss)) {
          r["error"] = "non-finite loss";
          g_failed = true;
        } else {
          const Stats t = time_cpu([&](int i) { (void)cpu::train_step(cfg, &st, xs[size_t(i % 2)].data(), s.batch, &ws); },
                                   0, std::max(1, std::min(a.iters, 3)));
          r["ms"] = t.median_ms;
          r["tokens_per_s"] = double(s.batch) / (t.median_ms * 1e-3);
        }
        rep.add(r);
      } else {
        nlohmann::json r = base_row("cpu_twin_train_step_fp32");
        r["skipped"] = "large shape (pass --cpu to run it)";
        rep.add(r);
      }
      if (!gpu) {
        for (const std::string& p : a.precisions)
          for (const char* data : {"data_off", "data_on"}) {
            nlohmann::json r = base_row("gpu_train_step_" + p + "_" + data);
            r["skipped"] = a.no_gpu ? std::string("--no-gpu") : cuda_unavailable_reason();
            rep.add(r);
          }
        continue;
      }
#ifdef TOPKSAE_HAS_CUDA
      // --graph: every row on a created (blocking) stream, since CUDA cannot capture the legacy
      // default stream; the rows with and without the graph then share the stream.
      struct OwnStream {
        cudaStream_t s = nullptr;
        ~OwnStream() {
          if (s) (void)cudaStreamDestroy(s);
        }
      } own;  // declared before ctx: destroyed after it
      if (a.graph && cudaStreamCreate(&own.s) != cudaSuccess) TOPKSAE_FAIL("cudaStreamCreate failed");
      cuda::Context ctx(own.s);
      cudaStream_t main_s = reinterpret_cast<cudaStream_t>(ctx.stream());
      // Device batches (data off) and pinned host batches (data on).
      const int nsets = a.tiny ? 2 : 4;
      const size_t per = size_t(s.batch * s.d_in);
      std::vector<DeviceBuffer> dx;
      for (int q = 0; q < nsets; ++q) {
        dx.emplace_back(per * 4);
        cuda::fill_random(ctx, static_cast<float*>(dx.back().data()), int64_t(per), 40 + uint64_t(q), 1.f);
      }
      std::vector<HostBuffer> hx;
      for (int q = 0; q < 2; ++q) {
        hx.emplace_back(per * 4, HostMemory::pinned);
        topksae::detail::copy_bytes(hx.back().data(), Device::cpu, dx[size_t(q)].data(), Device::cuda, per * 4);
      }
      std::vector<DeviceBuffer> slot;
      for (int q = 0; q < 2; ++q) slot.emplace_back(per * 4);
      cudaStream_t copy_s = nullptr;
      if (cudaStreamCreateWithFlags(&copy_s, cudaStreamNonBlocking) != cudaSuccess) TOPKSAE_FAIL("cudaStreamCreate failed");
      cudaEvent_t copied[2], used[2];
      for (int q = 0; q < 2; ++q) {
        if (cudaEventCreateWithFlags(&copied[q], cudaEventDisableTiming) != cudaSuccess ||
            cudaEventCreateWithFlags(&used[q], cudaEventDisableTiming) != cudaSuccess)
          TOPKSAE_FAIL("cudaEventCreate failed");
      }
      const bool huge = huge_shape(s, a);
      const TrainState st0 = huge ? TrainState{} : state_with_dead(cfg);
      cuda::DeviceInit dinit;
      if (huge) {
        DeadPattern dp = dead_pattern(cfg);
        dinit.b_enc = std::move(dp.b_enc);
        dinit.since_fired = std::move(dp.since_fired);
      }

      for (const std::string& pn : a.precisions) {
        const cuda::Precision p = cuda::precision_from_name(pn);
        // Validation on a proxy shape against the CPU trainer (same precision on the GPU side).
        std::string bad;
        {
          Shape ps{64, 1024, std::min<int64_t>(s.k, 16), 128};
          TrainConfig pc = config_for(ps);
          pc.dead_feature_window = 2;  // AuxK active from step 3 on
          for (const std::string& gn : a.encoder_gemms)        // each encoder GEMM library timed below
          for (int64_t aux_cap : {int64_t(-1), int64_t(0)})    // AuxK's dense path, then its gather path
          for (bool graph : {false, true}) {                   // the CUDA graph too with --graph
            if (graph && !a.graph) continue;
            TrainState cst = TrainState::initial(pc);
            cuda::TrainStep g(ctx, pc, cst,
                              {.precision = p, .aux_dense_cap = aux_cap, .encoder_gemm = cuda::encoder_gemm_from_name(gn),
                               .cuda_graph = graph});
            cpu::TrainWorkspace ws;
            const double tol = p == cuda::Precision::fp32 ? 1e-4 : 5e-2;
            for (int t = 0; t < 5 && bad.empty(); ++t) {
              const std::vector<float> x = host_batch(ps.batch, ps.d_in, 500 + uint64_t(t));
              DeviceBuffer d(x.size() * 4);
              topksae::detail::copy_bytes(d.data(), Device::cuda, x.data(), Device::cpu, x.size() * 4);
              const StepMetrics cm = cpu::train_step(pc, &cst, x.data(), ps.batch, &ws);
              g.step(static_cast<float*>(d.data()), ps.batch);
              const auto gm = g.drain_metrics();
              const double rel = std::abs(gm.at(0).overall_loss - cm.overall_loss) / std::abs(cm.overall_loss);
              if (!(rel <= tol))
                bad = concat("proxy step ", t, " (aux_dense_cap ", aux_cap, ", encoder GEMM ", gn, graph ? ", graph" : "",
                             "): loss ",
                             gm[0].overall_loss, " vs CPU ",
                             cm.overall_loss);
            }
          }
        }
        // Variants: data off and data on; for the first precision only, what the newer kernels and
        // choices buy, each with the data off: AuxK forced onto its gather path; the main top-k's dz
        // over whole W_dec rows instead of column slabs; the encoder GEMM + top-k over the whole
        // batch at once (h [B, d_sae]) instead of 256 MiB chunks; chunks of 192 rows, whose h
        // (48 MiB at d_sae 65536) may stay in an H100/H200's L2 between the GEMM and the top-k; and
        // the fused gradient mode (GradStorage::fused, the one-card ceiling's 12 B/param plan).
        struct Variant {
          const char* suffix;
          bool data_on;
          cuda::TrainStepOptions opts;
        };
        std::vector<Variant> variants = {{"_data_off", false, {.precision = p}}, {"_data_on", true, {.precision = p}}};
        // The encoder GEMM through another library (--encoder-gemm lt / auto), every precision.
        for (const std::string& gn : a.encoder_gemms)
          if (gn != "cublas")
            variants.push_back({gn == "lt" ? "_data_off_egemm_lt" : "_data_off_egemm_auto", false,
                                {.precision = p, .encoder_gemm = cuda::encoder_gemm_from_name(gn)}});
        // The step replayed as a CUDA graph (--graph): data off for every precision, data on for the
        // first (a few seconds of device time in all).
        if (a.graph) {
          variants.push_back({"_data_off_graph", false, {.precision = p, .cuda_graph = true}});
          if (pn == a.precisions.front())
            variants.push_back({"_data_on_graph", true, {.precision = p, .cuda_graph = true}});
        }
        if (huge) {
          nlohmann::json r = base_row("gpu_train_step_" + pn + "_other_variants");
          r["skipped"] = "state made on the device (DeviceInit: --device-init, or over 12 GiB of host state), plain step only";
          rep.add(r);
          variants.resize(1);
        } else if (pn == a.precisions.front()) {
          variants.push_back({"_data_off_aux_gather", false, {.precision = p, .aux_dense_cap = 0}});
          variants.push_back({"_data_off_dz_whole_rows", false, {.precision = p, .slab_threads = -1}});
          variants.push_back({"_data_off_encode_whole_batch", false, {.precision = p, .encode_rows = -1}});
          variants.push_back({"_data_off_encode_rows192", false, {.precision = p, .encode_rows = 192}});
          // No stored gradient (12 B/param: a norm pass, then Adam inside a second backward pass).
          variants.push_back(
              {"_data_off_grad_fused", false, {.precision = p, .grad_storage = cuda::GradStorage::fused}});
        }
        for (const Variant& var : variants) {
          const bool data_on = var.data_on;
          nlohmann::json r = base_row("gpu_train_step_" + pn + var.suffix);
          if (!bad.empty()) {
            r["error"] = "validation failed: " + bad;
            g_failed = true;
            rep.add(r);
            continue;
          }
          ctx.synchronize();
          const size_t mem0 = device_memory_used();
          cuda::TrainStep g = huge ? cuda::TrainStep(ctx, cfg, dinit, var.opts) : cuda::TrainStep(ctx, cfg, st0, var.opts);
          auto run = [&](int i) {
            if (!data_on) {
              // The first timed step of the plain variant in an NVTX range "profile_<precision>",
              // so that Nsight Compute can time its kernels alone (tools/gpu_check.sh's profile stage).
              const bool mark = i == a.warmup && std::string(var.suffix) == "_data_off";
              if (mark) nvtxRangePushA(("profile_" + pn).c_str());
              g.step(static_cast<float*>(dx[size_t(i % nsets)].data()), s.batch);
              if (mark) nvtxRangePop();
            } else {
              // Batch i lives in slot i%2: copied on copy_s once step i-2 has released the slot.
              const int sl = i % 2;
              if (cudaStreamWaitEvent(copy_s, used[sl], 0) != cudaSuccess ||
                  cudaMemcpyAsync(slot[size_t(sl)].data(), hx[size_t(sl)].data(), per * 4, cudaMemcpyHostToDevice,
                                  copy_s) != cudaSuccess ||
                  cudaEventRecord(copied[sl], copy_s) != cudaSuccess || cudaStreamWaitEvent(main_s, copied[sl], 0) != cudaSuccess)
                TOPKSAE_FAIL("data pipeline: CUDA call failed");
              g.step(static_cast<float*>(slot[size_t(sl)].data()), s.batch);
              if (cudaEventRecord(used[sl], main_s) != cudaSuccess) TOPKSAE_FAIL("cudaEventRecord failed");
            }
            (void)g.poll_metrics();  // keep the metrics ring drained (never blocks)
          };
          // Prime the 'used' events so the first copies do not wait on nothing recorded.
          for (int q = 0; q < 2; ++q)
            if (cudaEventRecord(used[q], main_s) != cudaSuccess) TOPKSAE_FAIL("cudaEventRecord failed");
          const Stats t = time_gpu(ctx.stream(), run, a.warmup, a.iters);
          const auto ms = g.drain_metrics();
          const size_t mem1 = device_memory_used();
          bool finite = true;
          for (const auto& m : ms) finite = finite && std::isfinite(m.overall_loss);
          if (!finite) {
            r["error"] = "non-finite loss at the timed shape";
            g_failed = true;
          }
          r["ms"] = t.median_ms;
          r["ms_min"] = t.min_ms;
          r["ms_max"] = t.max_ms;
          r["tokens_per_s"] = double(s.batch) / (t.median_ms * 1e-3);
          r["TFLOPs"] = flop / (t.median_ms * 1e9);
          r["step_bytes_GiB"] = double(g.device_bytes()) / double(1ull << 30);
          r["device_mem_GiB"] = double(mem1 - std::min(mem0, mem1)) / double(1ull << 30);
          if (!ms.empty()) {
            r["last_loss"] = ms.back().overall_loss;
            r["last_dead"] = ms.back().dead_features;
          }
          const cuda::AuxPathCounts apc = g.aux_path_counts();
          r["aux_dense_cap"] = g.aux_dense_capacity();
          r["aux_steps_dense"] = apc.dense;
          r["aux_steps_gather"] = apc.gather;
          r["steps_run"] = a.warmup + a.iters;
          if (apc.dense + apc.gather < a.warmup + a.iters) {
            r["error"] = concat("AuxK ran in ", apc.dense + apc.gather, " of ", a.warmup + a.iters,
                                " steps: the dead latents did not stay dead, so the timing is not the peers' workload");
            g_failed = true;
          }
          r["dz_slab_threads"] = g.slab_threads();
          r["encode_rows"] = g.encode_rows();
          r["encoder_gemm"] = std::string(cuda::encoder_gemm_name(g.encoder_gemm()));
          r["grad_storage"] = g.grad_storage() == cuda::GradStorage::fused ? "fused" : "stored";
          r["initial_state"] = huge ? "device (DeviceInit)" : "host (TrainState::initial)";
          if (var.opts.cuda_graph) {  // steps whose body ran directly (first of a key), captures, replays
            const cuda::GraphCounts gc = g.graph_counts();
            r["graph_direct_steps"] = gc.direct;
            r["graph_captures"] = gc.captured;
            r["graph_replays"] = gc.replayed;
          }
          if (a.graph) r["stream"] = "created (blocking), for --graph";
          const std::string gc = "gemm_" + pn + "_TFLOPs";
          if (ceil.contains(gc)) r["gemm_ceiling_TFLOPs"] = ceil[gc];
          r["note"] = data_on ? "pinned H2D copy per step on a 2nd stream (generator not timed)"
                              : "TFLOP/s = encode GEMM flop / step time";
          rep.add(r);
        }
      }
      for (int q = 0; q < 2; ++q) {
        (void)cudaEventDestroy(copied[q]);
        (void)cudaEventDestroy(used[q]);
      }
      (void)cudaStreamDestroy(copy_s);
#endif
    }
    rep.finish();
    return g_failed ? 2 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: %s\n", e.what());
    return 1;
  }
}
