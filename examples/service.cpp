// An example inference service: one SAE loaded once, N worker threads each with its own
// Workspace encoding batches into top-k pairs (the shape of a request handler), then a steering
// request (one latent ablated through a hook) and the throughput.
//
//   topksae_example_service [--sae-dir DIR] [--threads N] [--batches M] [--rows B]
//                           [--d-in D --d-sae S --k K]      (a random SAE when no directory)
//                           [--device cpu|cuda]             (cuda: host batches staged per call)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "topksae/api.h"

using namespace topksae;

namespace {

struct Args {
  std::string sae_dir;
  Device device = Device::cpu;
  int threads = 4, batches = 50;
  int64_t rows = 64, d_in = 256, d_sae = 4096, k = 32;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    auto next = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    if (!std::strcmp(argv[i], "--sae-dir")) a.sae_dir = next("--sae-dir");
    else if (!std::strcmp(argv[i], "--device")) {
      const std::string d = next("--device");
      if (d != "cpu" && d != "cuda") {
        std::fprintf(stderr, "--device must be cpu or cuda\n");
        std::exit(2);
      }
      a.device = d == "cuda" ? Device::cuda : Device::cpu;
    } else if (!std::strcmp(argv[i], "--threads")) a.threads = std::atoi(next("--threads"));
    else if (!std::strcmp(argv[i], "--batches")) a.batches = std::atoi(next("--batches"));
    else if (!std::strcmp(argv[i], "--rows")) a.rows = std::atoll(next("--rows"));
    else if (!std::strcmp(argv[i], "--d-in")) a.d_in = std::atoll(next("--d-in"));
    else if (!std::strcmp(argv[i], "--d-sae")) a.d_sae = std::atoll(next("--d-sae"));
    else if (!std::strcmp(argv[i], "--k")) a.k = std::atoll(next("--k"));
    else {
      std::fprintf(stderr, "unknown argument %s (see the comment at the top of service.cpp)\n", argv[i]);
      std::exit(2);
    }
  }
  if (a.threads < 1 || a.batches < 1 || a.rows < 1) {
    std::fprintf(stderr, "--threads, --batches and --rows must be >= 1\n");
    std::exit(2);
  }
  return a;
}

std::vector<float> gaussian(size_t n, uint64_t seed, float sd) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

Sae random_sae(const Args& a) {
  Sae s;
  s.cfg.d_in = a.d_in;
  s.cfg.d_sae = a.d_sae;
  s.cfg.k = a.k;
  const float scale = 1.f / std::sqrt(float(a.d_in));
  s.params.W_enc = gaussian(size_t(a.d_in * a.d_sae), 1, scale);
  s.params.b_enc = gaussian(size_t(a.d_sae), 2, 0.01f);
  s.params.W_dec = gaussian(size_t(a.d_sae * a.d_in), 3, scale);
  s.params.b_dec = gaussian(size_t(a.d_in), 4, 0.01f);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  try {
    ModelOptions mo;
    mo.device = a.device;
    auto model = a.sae_dir.empty() ? Model::from_sae(random_sae(a), mo) : Model::load(a.sae_dir, mo);
    const int64_t d_in = model->d_in(), k = model->k(), B = a.rows;
    std::printf("model: d_in=%lld d_sae=%lld k=%lld on %s (%s)\n", (long long)d_in, (long long)model->d_sae(),
                (long long)k, device_name(model->device()), a.sae_dir.empty() ? "random" : a.sae_dir.c_str());

    // Requests: a few distinct batches that the workers cycle through.
    std::vector<std::vector<float>> requests;
    for (int i = 0; i < 8; ++i) requests.push_back(gaussian(size_t(B * d_in), 100 + uint64_t(i), 1.f));

    // Per worker: a Workspace and output buffers, made once; calls after the first allocate nothing.
    const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
    CallOptions opts;
    if (a.device == Device::cpu) opts.cpu_threads = std::max(1, cores / a.threads);
    std::atomic<int64_t> active_latents{0};
    std::atomic<bool> failed{false};
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < a.threads; ++t)
      workers.emplace_back([&, t] {
        Workspace ws;
        std::vector<int32_t> idx(size_t(B * k));  // [B, k]
        std::vector<float> val(size_t(B * k));    // [B, k]
        int64_t active = 0;
        try {
          for (int i = 0; i < a.batches; ++i) {
            const auto& x = requests[size_t(i + t) % requests.size()];
            model->encode_topk(ws, {x.data(), B, d_in}, {idx.data(), B, k}, {val.data(), B, k}, opts);
            for (float v : val) active += v > 0.f;
          }
        } catch (const Error& e) {
          std::fprintf(stderr, "worker %d: %s\n", t, e.what());
          failed = true;
        }
        active_latents += active;
      });
    for (auto& w : workers) w.join();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (failed) return 1;
    const double rows = double(a.threads) * a.batches * double(B);
    std::printf("encode_topk: %d threads x %d batches of %lld rows: %.0f rows/s (%.3f s), mean L0 %.2f\n", a.threads,
                a.batches, (long long)B, rows / secs, secs, double(active_latents) / rows);

    // A steering request: forward with latent `j` ablated, error term on (sae_lens semantics), and
    // how far the output moved from the input.
    Workspace ws;
    std::vector<int32_t> idx(size_t(B * k));
    std::vector<float> val(size_t(B * k)), out(size_t(B * d_in));
    const auto& x = requests[0];
    model->encode_topk(ws, {x.data(), B, d_in}, {idx.data(), B, k}, {val.data(), B, k});
    const int32_t j = idx[0];
    Hooks steer;
    steer.add("hook_sae_acts_post", Hooks::ablate_latent(j));
    CallOptions steered;
    steered.hooks = &steer;
    model->forward(ws, {x.data(), B, d_in}, {out.data(), B, d_in}, /*use_error_term=*/true, steered);
    double moved = 0;
    for (size_t i = 0; i < out.size(); ++i) moved += double(out[i] - x[i]) * double(out[i] - x[i]);
    std::printf("steering: ablating latent %d moved the output by %.4f (L2 over the batch)\n", j, std::sqrt(moved));
    if (!(moved > 0)) {
      std::fprintf(stderr, "the ablation did not change the output\n");
      return 1;
    }
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
