// bench_decode: how much sparsity buys at decode. out [B, d_in] = z @ W_dec + b_dec from top-k
// codes, four ways on the GPU (the gather kernel over top-k pairs, cuSPARSE SpMM on CSR and on COO,
// dense cuBLAS on the materialised z) and the CPU twin. Every variant is checked against a double
// reference on the first rows before it is timed; inputs rotate over several code sets.
#include <cmath>
#include <cstdio>
#include <random>
#include <set>

#include "bench_common.h"
#include "topksae/error.h"
#include "topksae/ops_cpu.h"
#ifdef TOPKSAE_HAS_CUDA
#include "topksae/ops_cuda.h"
#endif

using namespace topksae;
using namespace topksae::bench;

namespace {

// Random codes: k distinct latents per row, values U(0.1, 2) with ~1/8 zeros (L0 < k).
cpu::TopKCodes random_codes(const Shape& s, uint64_t seed) {
  cpu::TopKCodes c;
  c.rows = s.batch;
  c.k = s.k;
  c.d_sae = s.d_sae;
  c.indices.resize(size_t(s.batch * s.k));
  c.values.resize(size_t(s.batch * s.k));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> pick(0, int32_t(s.d_sae - 1));
  std::uniform_real_distribution<float> val(0.1f, 2.f);
  std::set<int32_t> row;
  for (int64_t b = 0; b < s.batch; ++b) {
    row.clear();
    while (int64_t(row.size()) < s.k) row.insert(pick(rng));
    int64_t i = 0;
    for (int32_t j : row) {
      c.indices[size_t(b * s.k + i)] = j;
      c.values[size_t(b * s.k + i)] = (rng() % 8 == 0) ? 0.f : val(rng);
      ++i;
    }
  }
  return c;
}

// Double-precision reference of the first `rows` rows.
std::vector<float> reference(const cpu::TopKCodes& c, const std::vector<float>& W_dec, const std::vector<float>& b_dec,
                             int64_t d, int64_t rows) {
  std::vector<float> out(size_t(rows * d));
  std::vector<double> acc(static_cast<size_t>(d));
  for (int64_t b = 0; b < rows; ++b) {
    for (int64_t i = 0; i < d; ++i) acc[size_t(i)] = b_dec[size_t(i)];
    for (int64_t q = 0; q < c.k; ++q) {
      const double v = c.values[size_t(b * c.k + q)];
      const float* w = W_dec.data() + int64_t(c.indices[size_t(b * c.k + q)]) * d;
      for (int64_t i = 0; i < d; ++i) acc[size_t(i)] += v * w[i];
    }
    for (int64_t i = 0; i < d; ++i) out[size_t(b * d + i)] = float(acc[size_t(i)]);
  }
  return out;
}

int64_t unique_rows(const cpu::TopKCodes& c) {
  std::vector<uint8_t> seen(static_cast<size_t>(c.d_sae), 0);
  int64_t u = 0;
  for (size_t i = 0; i < c.indices.size(); ++i)
    if (c.values[i] != 0.f && !seen[size_t(c.indices[i])]) {
      seen[size_t(c.indices[i])] = 1;
      ++u;
    }
  return u;
}

bool g_failed = false;

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = Args::parse(argc, argv, "bench_decode",
                               "decode from top-k codes: gather kernel vs cuSPARSE CSR/COO vs dense cuBLAS vs CPU");
    Report rep("decode", a);
    const bool gpu = gpu_usable(a);
    if (gpu) rep.set_ceilings(measure_ceilings(a.tiny));
    const int nsets = a.tiny ? 2 : 3;
    for (const Shape& s : a.shapes) {
      const int64_t d = s.d_in, n = s.d_sae, B = s.batch;
      const std::string sh = s.str();
      std::vector<cpu::TopKCodes> codes;
      for (int q = 0; q < nsets; ++q) codes.push_back(random_codes(s, 1000 + uint64_t(q)));
      const int64_t R = std::min<int64_t>(B, 64);
      const double floor_bytes = double(unique_rows(codes[0])) * double(d) * 4 + double(B * d) * 4 + double(B * s.k) * 8;
      [[maybe_unused]] const double gather_bytes = double(B * s.k) * double(d) * 4;
      [[maybe_unused]] const double dense_flop = 2.0 * double(B) * double(n) * double(d);
      auto base_row = [&](const char* variant) {
        nlohmann::json r;
        r["shape"] = sh;
        r["d_in"] = d;
        r["d_sae"] = n;
        r["k"] = s.k;
        r["batch"] = B;
        r["variant"] = variant;
        r["targets"] = perf_targets(s);
        return r;
      };

      // Host copies of the weights (from the device when there is one: cheaper than a host RNG).
      Sae host;
      host.cfg.d_in = d;
      host.cfg.d_sae = n;
      host.cfg.k = s.k;
      const bool cpu_too = a.want_cpu || a.tiny || d * n <= (int64_t(1) << 22) || !gpu;
#ifdef TOPKSAE_HAS_CUDA
      std::unique_ptr<cuda::Context> ctx;
      cuda::DeviceSae ds;
      if (gpu) {
        ctx = std::make_unique<cuda::Context>();
        ds.cfg = host.cfg;
        ds.W_dec = DeviceBuffer(size_t(n * d) * 4);
        ds.b_dec = DeviceBuffer(size_t(d) * 4);
        cuda::fill_random(*ctx, ds.w_dec(), n * d, 11, 0.05f);
        cuda::fill_random(*ctx, ds.bias_dec(), d, 12, 0.1f);
        ctx->synchronize();
        host.params.W_dec.resize(size_t(n * d));
        host.params.b_dec.resize(size_t(d));
        topksae::detail::copy_bytes(host.params.W_dec.data(), Device::cpu, ds.W_dec.data(), Device::cuda, size_t(n * d) * 4);
        topksae::detail::copy_bytes(host.params.b_dec.data(), Device::cpu, ds.b_dec.data(), Device::cuda, size_t(d) * 4);
      }
#endif
      if (!gpu) {
        std::mt19937_64 rng(11);
        std::normal_distribution<float> nd(0.f, 0.05f);
        host.params.W_dec.resize(size_t(n * d));
        for (float& w : host.params.W_dec) w = nd(rng);
        host.params.b_dec.resize(size_t(d));
        for (float& w : host.params.b_dec) w = nd(rng);
      }
      const std::vector<float> ref = reference(codes[0], host.params.W_dec, host.params.b_dec, d, R);

      // ---- CPU twin
      if (cpu_too) {
        host.params.W_enc.assign(size_t(d * n), 0.f);  // decode never reads it; check_shapes wants it
        host.params.b_enc.assign(size_t(n), 0.f);
        std::vector<float> out(size_t(B * d));
        cpu::decode_topk(host, codes[0], out.data());
        const double err = rel_l2(out.data(), ref.data(), ref.size());
        nlohmann::json r = base_row("cpu_twin_topk");
        r["rel_err"] = err;
        if (!(err <= 1e-5)) {
          r["error"] = concat("validation failed: rel err ", err);
          g_failed = true;
        } else {
          const Stats st = time_cpu([&](int i) { cpu::decode_topk(host, codes[size_t(i % nsets)], out.data()); },
                                    std::min(a.warmup, 1), std::max(1, std::min(a.iters, 5)));
          r["ms"] = st.median_ms;
          r["ms_min"] = st.min_ms;
          r["GBps"] = floor_bytes / (st.median_ms * 1e6);
        }
        rep.add(r);
      } else {
        nlohmann::json r = base_row("cpu_twin_topk");
        r["skipped"] = "large shape (pass --cpu to run it)";
        rep.add(r);
      }

      // ---- GPU variants
      if (!gpu) {
        for (const char* v : {"gpu_gather_topk", "gpu_gather_slab64", "gpu_gather_slab128", "gpu_gather_slab256",
                              "gpu_gather_slab512", "gpu_cusparse_csr", "gpu_cusparse_coo", "gpu_dense_cublas_fp32"}) {
          nlohmann::json r = base_row(v);
          r["skipped"] = a.no_gpu ? std::string("--no-gpu") : cuda_unavailable_reason();
          rep.add(r);
        }
        continue;
      }
#ifdef TOPKSAE_HAS_CUDA
      cuda::Context& c = *ctx;
      std::vector<cuda::TopKCodes> dc;
      std::vector<cuda::Csr> csr(static_cast<size_t>(nsets));
      std::vector<cuda::Coo> coo(static_cast<size_t>(nsets));
      for (int q = 0; q < nsets; ++q) dc.push_back(cuda::TopKCodes::upload(codes[size_t(q)]));
      for (int q = 0; q < nsets; ++q) {
        cuda::topk_to_csr(c, dc[size_t(q)], csr[size_t(q)]);
        cuda::topk_to_coo(c, dc[size_t(q)], coo[size_t(q)]);
        csr[size_t(q)].sync_nnz(c);
        coo[size_t(q)].sync_nnz(c);
      }
      DeviceBuffer out(size_t(B * d) * 4);
      auto* o = static_cast<float*>(out.data());
      auto run_variant = [&](const char* name, const std::function<void(int)>& fn, bool dense,
                             const nlohmann::json& extra = nlohmann::json::object()) {
        nlohmann::json r = base_row(name);
        for (auto it = extra.begin(); it != extra.end(); ++it) r[it.key()] = it.value();
        cuda::fill_random(c, o, B * d, 99, 1e3f);  // poison: stale output cannot pass
        fn(0);
        c.synchronize();
        std::vector<float> got(size_t(R * d));
        topksae::detail::copy_bytes(got.data(), Device::cpu, o, Device::cuda, got.size() * 4);
        const double err = rel_l2(got.data(), ref.data(), ref.size());
        r["rel_err"] = err;
        if (!(err <= 1e-5)) {
          r["error"] = concat("validation failed: rel err ", err);
          g_failed = true;
          rep.add(r);
          return;
        }
        const Stats st = time_gpu(c.stream(), fn, a.warmup, a.iters);
        r["ms"] = st.median_ms;
        r["ms_min"] = st.min_ms;
        r["ms_max"] = st.max_ms;
        r["GBps"] = floor_bytes / (st.median_ms * 1e6);  // the floor's bytes over the time
        if (dense) {
          r["TFLOPs"] = dense_flop / (st.median_ms * 1e9);
        } else {
          r["gather_GBps"] = gather_bytes / (st.median_ms * 1e6);  // k rows per token, as read
        }
        r["note"] = dense ? "GB/s = sparse floor bytes / t" : "GB/s = floor bytes / t";
        rep.add(r);
      };
      run_variant("gpu_gather_topk", [&](int i) { cuda::decode_topk(c, ds, dc[size_t(i % nsets)], o); }, false,
                  {{"threads_per_token", cuda::gather_threads_per_token(c, s.d_sae)}});
      // The gather kernel at each column-slab width (4 columns per thread): which one the L2 likes.
      for (int tpt : {16, 32, 64, 128}) {
        const std::string name = "gpu_gather_slab" + std::to_string(4 * tpt);
        run_variant(name.c_str(), [&, tpt](int i) {
          const cuda::TopKCodes& q = dc[size_t(i % nsets)];
          cuda::gather_decode(c, ds.w_dec(), ds.bias_dec(), q.idx(), q.val(), q.rows, q.k, q.k, nullptr, d, o,
                              s.d_sae, tpt);
        }, false, {{"threads_per_token", tpt}});
      }
      run_variant("gpu_cusparse_csr", [&](int i) { cuda::decode_csr(c, ds, csr[size_t(i % nsets)], o); }, false);
      run_variant("gpu_cusparse_coo", [&](int i) { cuda::decode_coo(c, ds, coo[size_t(i % nsets)], o); }, false);
      {
        // The conversion a CSR user pays first (top-k pairs -> CSR), timed on its own.
        nlohmann::json r = base_row("gpu_topk_to_csr");
        const Stats st = time_gpu(c.stream(), [&](int i) { cuda::topk_to_csr(c, dc[size_t(i % nsets)], csr[size_t(i % nsets)]); },
                                  a.warmup, a.iters);
        for (int q = 0; q < nsets; ++q) csr[size_t(q)].sync_nnz(c);
        r["ms"] = st.median_ms;
        r["note"] = "conversion only";
        rep.add(r);
      }
      {
        // Dense: materialise z [B, d_sae] once (1 GiB at the larger PERF shape).
        const std::vector<float> z = cpu::topk_to_dense(codes[0]);
        DeviceBuffer dz(z.size() * 4);
        topksae::detail::copy_bytes(dz.data(), Device::cuda, z.data(), Device::cpu, z.size() * 4);
        run_variant("gpu_dense_cublas_fp32",
                    [&](int) { cuda::decode_dense(c, ds, static_cast<float*>(dz.data()), B, o, cuda::Precision::fp32); },
                    true);
      }
#endif
    }
    rep.finish();
    return g_failed ? 2 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_decode: %s\n", e.what());
    return 1;
  }
}
