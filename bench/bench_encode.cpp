// bench_encode: x -> top-k codes on the GPU per precision mode (fp32 / tf32 / bf16 GEMM), the
// encoder GEMM alone (also per library, --encoder-gemm: in the training step's chunks of rows,
// against the cuBLAS ceiling measured in this binary) and the fused bias + top-k selection alone,
// beside the CPU twin. Each variant
// is validated on the first rows against a double-precision reference before it is timed; the
// input batches rotate.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <utility>

#include "bench_common.h"
#include "topksae/error.h"
#include "topksae/ops_cpu.h"
#ifdef TOPKSAE_HAS_CUDA
#include "gemm_lt.h"
#include "topk_select_testing.h"
#include "topksae/ops_cuda.h"
#endif

using namespace topksae;
using namespace topksae::bench;

namespace {
bool g_failed = false;

// Double reference pre-activations of the first R rows: (x - b_dec) @ W_enc + b_enc.
std::vector<double> reference_h(const std::vector<float>& x, const std::vector<float>& W_enc, const std::vector<float>& b_enc,
                                const std::vector<float>& b_dec, int64_t d, int64_t n, int64_t R) {
  std::vector<double> h(static_cast<size_t>(R * n));
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < n; j0 += 256) {
    const int64_t j1 = std::min(n, j0 + 256);
    for (int64_t b = 0; b < R; ++b) {
      for (int64_t j = j0; j < j1; ++j) h[size_t(b * n + j)] = b_enc[size_t(j)];
      for (int64_t i = 0; i < d; ++i) {
        const double u = double(x[size_t(b * d + i)]) - b_dec[size_t(i)];
        const float* w = W_enc.data() + i * n;
        for (int64_t j = j0; j < j1; ++j) h[size_t(b * n + j)] += u * w[j];
      }
    }
  }
  return h;
}

// Checks codes (rows 0..R-1) against the reference: each value equals relu(h_ref) of its latent
// within tol, and each winner's h_ref is not below the reference k-th value by more than 2 tol.
std::string check_codes(const cpu::TopKCodes& c, const std::vector<double>& h, int64_t n, int64_t R, double tol) {
  std::vector<double> row(static_cast<size_t>(n));
  for (int64_t b = 0; b < R; ++b) {
    std::copy(h.begin() + b * n, h.begin() + (b + 1) * n, row.begin());
    std::nth_element(row.begin(), row.begin() + (c.k - 1), row.end(), std::greater<double>());
    const double kth = row[size_t(c.k - 1)];
    for (int64_t i = 0; i < c.k; ++i) {
      const int32_t j = c.indices[size_t(b * c.k + i)];
      if (j < 0 || j >= n) return concat("row ", b, ": latent index ", j, " out of range");
      const double hv = h[size_t(b * n + j)];
      const double v = c.values[size_t(b * c.k + i)];
      if (!(std::abs(v - std::max(hv, 0.0)) <= tol)) return concat("row ", b, " latent ", j, ": value ", v, " vs ", hv);
      if (!(hv >= kth - 2 * tol)) return concat("row ", b, " picked latent ", j, " with h ", hv, " < k-th ", kth);
    }
  }
  return "";
}
}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = Args::parse(argc, argv, "bench_encode", "x -> top-k codes: encoder GEMM per precision + fused bias/top-k");
    Report rep("encode", a);
    const bool gpu = gpu_usable(a);
    nlohmann::json ceil = gpu ? measure_ceilings(a.tiny) : nlohmann::json::object();
    rep.set_ceilings(ceil);
    const int nsets = a.tiny ? 2 : 3;
    for (const Shape& s : a.shapes) {
      const int64_t d = s.d_in, n = s.d_sae, B = s.batch, k = s.k;
      const int64_t R = std::min<int64_t>(B, 16);
      const double flop = 2.0 * double(B) * double(d) * double(n);
      auto base_row = [&](const std::string& variant) {
        nlohmann::json r;
        r["shape"] = s.str();
        r["d_in"] = d;
        r["d_sae"] = n;
        r["k"] = k;
        r["batch"] = B;
        r["variant"] = variant;
        r["targets"] = perf_targets(s);
        return r;
      };
      Sae host;
      host.cfg.d_in = d;
      host.cfg.d_sae = n;
      host.cfg.k = k;
      std::vector<std::vector<float>> xs;
#ifdef TOPKSAE_HAS_CUDA
      std::unique_ptr<cuda::Context> ctx;
      cuda::DeviceSae ds;
      std::vector<DeviceBuffer> dx;
      if (gpu) {
        ctx = std::make_unique<cuda::Context>();
        ds.cfg = host.cfg;
        ds.W_enc = DeviceBuffer(size_t(d * n) * 4);
        ds.b_enc = DeviceBuffer(size_t(n) * 4);
        ds.b_dec = DeviceBuffer(size_t(d) * 4);
        cuda::fill_random(*ctx, ds.w_enc(), d * n, 21, float(1.0 / std::sqrt(double(d))));
        cuda::fill_random(*ctx, ds.bias_enc(), n, 22, 0.05f);
        cuda::fill_random(*ctx, ds.bias_dec(), d, 23, 0.1f);
        for (int q = 0; q < nsets; ++q) {
          dx.emplace_back(size_t(B * d) * 4);
          cuda::fill_random(*ctx, static_cast<float*>(dx.back().data()), B * d, 30 + uint64_t(q), 1.f);
        }
        ctx->synchronize();
        host.params.W_enc.resize(size_t(d * n));
        host.params.b_enc.resize(size_t(n));
        host.params.b_dec.resize(size_t(d));
        topksae::detail::copy_bytes(host.params.W_enc.data(), Device::cpu, ds.W_enc.data(), Device::cuda, size_t(d * n) * 4);
        topksae::detail::copy_bytes(host.params.b_enc.data(), Device::cpu, ds.b_enc.data(), Device::cuda, size_t(n) * 4);
        topksae::detail::copy_bytes(host.params.b_dec.data(), Device::cpu, ds.b_dec.data(), Device::cuda, size_t(d) * 4);
        for (int q = 0; q < nsets; ++q) {
          xs.emplace_back(size_t(B * d));
          topksae::detail::copy_bytes(xs.back().data(), Device::cpu, dx[size_t(q)].data(), Device::cuda, size_t(B * d) * 4);
        }
      }
#endif
      if (!gpu) {
        std::mt19937_64 rng(21);
        std::normal_distribution<float> nd(0.f, 1.f);
        const float ws = float(1.0 / std::sqrt(double(d)));
        host.params.W_enc.resize(size_t(d * n));
        for (float& w : host.params.W_enc) w = ws * nd(rng);
        host.params.b_enc.resize(size_t(n));
        for (float& w : host.params.b_enc) w = 0.05f * nd(rng);
        host.params.b_dec.resize(size_t(d));
        for (float& w : host.params.b_dec) w = 0.1f * nd(rng);
        for (int q = 0; q < nsets; ++q) {
          xs.emplace_back(size_t(B * d));
          for (float& w : xs.back()) w = nd(rng);
        }
      }
      const std::vector<double> href = reference_h(xs[0], host.params.W_enc, host.params.b_enc, host.params.b_dec, d, n, R);

      // ---- CPU twin (fp32)
      const bool cpu_too = a.want_cpu || a.tiny || d * n * B <= (int64_t(1) << 28) || !gpu;
      if (cpu_too) {
        host.params.W_dec.assign(size_t(n * d), 0.f);  // encode never reads it; check_shapes wants it
        nlohmann::json r = base_row("cpu_twin_encode_topk_fp32");
        const cpu::TopKCodes c = cpu::encode_topk(host, xs[0].data(), B);
        const std::string bad = check_codes(c, href, n, R, 1e-4);
        if (!bad.empty()) {
          r["error"] = "validation failed: " + bad;
          g_failed = true;
        } else {
          const Stats st = time_cpu([&](int i) { (void)cpu::encode_topk(host, xs[size_t(i % nsets)].data(), B); },
                                    std::min(a.warmup, 1), std::max(1, std::min(a.iters, 3)));
          r["ms"] = st.median_ms;
          r["TFLOPs"] = flop / (st.median_ms * 1e9);
        }
        rep.add(r);
      } else {
        nlohmann::json r = base_row("cpu_twin_encode_topk_fp32");
        r["skipped"] = "large shape (pass --cpu to run it)";
        rep.add(r);
      }

      if (!gpu) {
        for (const std::string& p : a.precisions) {
          nlohmann::json r = base_row("gpu_encode_topk_" + p);
          r["skipped"] = a.no_gpu ? std::string("--no-gpu") : cuda_unavailable_reason();
          rep.add(r);
        }
        continue;
      }
#ifdef TOPKSAE_HAS_CUDA
      cuda::Context& c = *ctx;
      DeviceBuffer du(size_t(B * d) * 4), dh(size_t(B * n) * 4);
      auto* u = static_cast<float*>(du.data());
      auto* h = static_cast<float*>(dh.data());
      for (const std::string& pn : a.precisions) {
        const cuda::Precision p = cuda::precision_from_name(pn);
        const double tol = p == cuda::Precision::fp32 ? 1e-3 : (p == cuda::Precision::tf32 ? 2e-2 : 8e-2);
        if (p == cuda::Precision::bf16) ds.ensure_bf16(c);
        const std::string gemm_ceiling = "gemm_" + pn + "_TFLOPs";
        // The automatic chunks of rows (encode_chunk_rows); for the first precision also the
        // whole batch at once and chunks of 192 rows (h small enough to stay in L2 on an H100/H200).
        std::vector<std::pair<int64_t, std::string>> chunkings = {{0, ""}};
        if (pn == a.precisions.front()) {
          chunkings.push_back({-1, "_whole_batch"});
          chunkings.push_back({192, "_rows192"});
        }
        for (const auto& [chunk_rows, suffix] : chunkings) {
          nlohmann::json r = base_row("gpu_encode_topk_" + pn + suffix);
          cuda::TopKCodes codes;
          cuda::encode_topk(c, ds, static_cast<float*>(dx[0].data()), B, p, codes, chunk_rows);
          const std::string bad = check_codes(codes.download(), href, n, R, tol);
          if (!bad.empty()) {
            r["error"] = "validation failed: " + bad;
            g_failed = true;
            rep.add(r);
            continue;
          }
          const Stats st = time_gpu(c.stream(), [&](int i) {
            cuda::encode_topk(c, ds, static_cast<float*>(dx[size_t(i % nsets)].data()), B, p, codes, chunk_rows);
          }, a.warmup, a.iters);
          r["ms"] = st.median_ms;
          r["ms_min"] = st.min_ms;
          r["TFLOPs"] = flop / (st.median_ms * 1e9);
          r["tokens_per_s"] = double(B) / (st.median_ms * 1e-3);
          r["chunk_rows"] = cuda::encode_chunk_rows(n, B, chunk_rows);
          if (ceil.contains(gemm_ceiling)) r["gemm_ceiling_TFLOPs"] = ceil[gemm_ceiling];
          r["note"] = "x -> top-k pairs, TFLOP/s of the GEMM part";
          rep.add(r);
        }
        {
          nlohmann::json r = base_row("gpu_gemm_" + pn);
          const Stats st = time_gpu(c.stream(), [&](int i) {
            cuda::process_sae_in(c, ds, static_cast<float*>(dx[size_t(i % nsets)].data()), B, u);
            cuda::encode_pre(c, ds, u, B, h, p, /*add_bias=*/false);
          }, a.warmup, a.iters);
          r["ms"] = st.median_ms;
          r["TFLOPs"] = flop / (st.median_ms * 1e9);
          if (ceil.contains(gemm_ceiling)) r["gemm_ceiling_TFLOPs"] = ceil[gemm_ceiling];
          rep.add(r);
        }
      }
      // The encoder GEMM alone per library (--encoder-gemm), as the training step runs it: u made
      // once (and its bf16 copy), then chunks of encode_chunk_rows rows, each writing the same
      // [rows, d_sae] h (the step's h holds one chunk). Validated on chunk 0's first rows; for
      // cublasLt the selection (timed once per chunk shape, before the timed runs) is reported.
      {
        const int64_t rows = cuda::encode_chunk_rows(n, B, 0);
        DeviceBuffer du16(size_t(B * d) * 2);
        auto* u16 = static_cast<uint16_t*>(du16.data());
        cuda::process_sae_in(c, ds, static_cast<float*>(dx[0].data()), B, u);
        for (const std::string& pn : a.precisions) {
          const cuda::Precision p = cuda::precision_from_name(pn);
          const bool bf16 = p == cuda::Precision::bf16;
          if (bf16) {
            ds.ensure_bf16(c);
            cuda::to_bf16(c, u, u16, B * d);
          }
          const double tol = p == cuda::Precision::fp32 ? 1e-3 : (p == cuda::Precision::tf32 ? 2e-2 : 8e-2);
          auto A_at = [&](int64_t r0) -> const void* { return bf16 ? static_cast<const void*>(u16 + r0 * d) : u + r0 * d; };
          const void* W = bf16 ? static_cast<const void*>(ds.w_enc_bf16()) : ds.w_enc();
          const std::string gemm_ceiling = "gemm_" + pn + "_TFLOPs";
          for (const std::string& gn : a.encoder_gemms) {
            const cuda::EncoderGemm how = cuda::encoder_gemm_from_name(gn);
            nlohmann::json r = base_row("gpu_encoder_gemm_" + pn + "_" + gn);
            cuda::detail::EncoderGemmChoice choice;
            for (int64_t r0 = 0; r0 < B; r0 += rows)
              choice = cuda::detail::encoder_gemm_prepare(c, how, p, std::min(rows, B - r0), n, d, A_at(r0), W, nullptr, h);
            cuda::detail::encoder_gemm(c, how, p, std::min(rows, B), n, d, A_at(0), W, nullptr, h);
            const int64_t Rv = std::min(R, rows);  // rows of chunk 0 checked
            std::vector<float> got(size_t(Rv * n));
            c.synchronize();
            topksae::detail::copy_bytes(got.data(), Device::cpu, h, Device::cuda, got.size() * 4);
            double worst = 0;
            for (int64_t b = 0; b < Rv; ++b)
              for (int64_t j = 0; j < n; ++j) {
                const double want = href[size_t(b * n + j)] - host.params.b_enc[size_t(j)];
                const double err = std::abs(got[size_t(b * n + j)] - want) / (1.0 + std::abs(want));
                if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err;
              }
            if (!(worst <= tol)) {
              r["error"] = concat("validation failed: relative error ", worst, " > ", tol);
              g_failed = true;
              rep.add(r);
              continue;
            }
            const Stats st = time_gpu(c.stream(), [&](int) {
              for (int64_t r0 = 0; r0 < B; r0 += rows)
                cuda::detail::encoder_gemm(c, how, p, std::min(rows, B - r0), n, d, A_at(r0), W, nullptr, h);
            }, a.warmup, a.iters);
            r["ms"] = st.median_ms;
            r["ms_min"] = st.min_ms;
            r["TFLOPs"] = flop / (st.median_ms * 1e9);
            r["chunk_rows"] = rows;
            if (ceil.contains(gemm_ceiling)) {
              r["gemm_ceiling_TFLOPs"] = ceil[gemm_ceiling];
              r["of_ceiling"] = flop / (st.median_ms * 1e9) / ceil[gemm_ceiling].get<double>();
            }
            if (how != cuda::EncoderGemm::cublas) {  // the last chunk shape's selection
              r["lt_candidates"] = choice.candidates;
              r["lt_algo_rank"] = choice.algo_rank;
              r["lt_workspace_MiB"] = double(choice.workspace) / double(1 << 20);
              r["lt_select_ms"] = choice.lt_ms;
              if (how == cuda::EncoderGemm::automatic) {
                r["cublas_select_ms"] = choice.cublas_ms;
                r["auto_chose"] = choice.use_lt ? "lt" : "cublas";
              }
            }
            r["note"] = "GEMM alone in the step's chunks of rows (no bias), u made once";
            rep.add(r);
          }
        }
      }
      cuda::process_sae_in(c, ds, static_cast<float*>(dx[0].data()), B, u);
      cuda::encode_pre(c, ds, u, B, h, cuda::Precision::fp32, false);
      cuda::TopKCodes codes = cuda::TopKCodes::allocate(B, k, n);
      for (bool sorted : {true, false}) {
        // The selection alone on h (precision-independent): bias fused, ReLU on the winners;
        // sorted (the main top-k) and unsorted (AuxK's dense path; its own template instance).
        nlohmann::json r = base_row(sorted ? "gpu_bias_topk_select" : "gpu_bias_topk_select_unsorted");
        cuda::TopKOptions o;
        o.bias = ds.bias_enc();
        o.relu = true;
        o.sorted = sorted;
        const Stats st = time_gpu(c.stream(), [&](int) { cuda::topk_select(c, h, B, n, k, codes.idx(), codes.val(), o); },
                                  a.warmup, a.iters);
        r["ms"] = st.median_ms;
        r["GBps"] = double(B * n) * 4 / (st.median_ms * 1e6);
        // Which path each row took, from one more launch of the counting instance (a separate
        // kernel: the timed launches above never count; kernels/topk_select_testing.h).
        cuda::detail::set_topk_path_counting(true);
        cuda::topk_select(c, h, B, n, k, codes.idx(), codes.val(), o);
        const cuda::detail::TopKPathRows pr = cuda::detail::take_topk_path_rows();
        cuda::detail::set_topk_path_counting(false);
        r["rows_one_read"] = pr.one_read;
        r["rows_two_reads"] = pr.two_reads;
        r["rows_four_reads"] = pr.four_reads;
        r["note"] = concat("GB/s = one read of h / t; rows by reads of h: ", pr.one_read, " one, ", pr.two_reads,
                           " two, ", pr.four_reads, " four (of ", B, ")");
        rep.add(r);
      }
#endif
    }
    rep.finish();
    return g_failed ? 2 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_encode: %s\n", e.what());
    return 1;
  }
}
