// `topksae demo`: encode and decode random activations with a random SAE on the CPU; a smoke
// test of the build that needs no files.
#include <chrono>
#include <iostream>
#include <random>

#include "command.h"
#include "topksae/ops_cpu.h"

namespace topksae::cli {
namespace {
struct DemoArgs {
  int64_t d_in = 64, d_sae = 512, k = 8, batch = 256;
  uint64_t seed = 0;
};

void run_demo(const DemoArgs& a) {
  Sae s;
  s.cfg.d_in = a.d_in;
  s.cfg.d_sae = a.d_sae;
  s.cfg.k = a.k;
  s.params = SaeParams::zeros(s.cfg);
  std::mt19937_64 rng(a.seed);
  std::normal_distribution<float> nd(0.f, 1.f / float(std::sqrt(double(a.d_in))));
  for (auto& w : s.params.W_dec) w = nd(rng);
  for (int64_t i = 0; i < a.d_in; ++i)
    for (int64_t j = 0; j < a.d_sae; ++j) s.params.W_enc[size_t(i * a.d_sae + j)] = s.params.W_dec[size_t(j * a.d_in + i)];
  std::vector<float> x(size_t(a.batch * a.d_in));
  for (auto& v : x) v = nd(rng) * float(std::sqrt(double(a.d_in)));
  auto t0 = std::chrono::steady_clock::now();
  cpu::TopKCodes c = cpu::encode_topk(s, x.data(), a.batch);
  std::vector<float> xhat(x.size());
  cpu::decode_topk(s, c, xhat.data());
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  size_t nnz = 0;
  for (float v : c.values) nnz += v != 0.f;
  std::cout << "encoded " << a.batch << " rows of d_in=" << a.d_in << " into top-" << a.k << " of d_sae=" << a.d_sae
            << " latents and decoded them in " << ms << " ms; mean L0 = " << double(nnz) / double(a.batch) << "\n";
}

CommandRegistration reg([](CLI::App& app) {
  auto* cmd = app.add_subcommand("demo", "Encode and decode random activations with a random SAE (CPU)");
  auto args = std::make_shared<DemoArgs>();
  cmd->add_option("--d-in", args->d_in, "input width")->check(CLI::PositiveNumber);
  cmd->add_option("--d-sae", args->d_sae, "number of latents")->check(CLI::PositiveNumber);
  cmd->add_option("--k", args->k, "latents kept per token")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", args->batch, "rows")->check(CLI::PositiveNumber);
  cmd->add_option("--seed", args->seed, "RNG seed");
  cmd->callback([args] { run_demo(*args); });
});
}  // namespace
}  // namespace topksae::cli
