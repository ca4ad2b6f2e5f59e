// Run under `mpirun -np R` in the CUDA emulation's build (tests/nccl_emu.cmake: R = 2 and 3, each
// rank on its own emulated device, NCCL emulated over MPI): the latent-sharded CUDA step
// (cuda::ShardedTrainStep) equals the single-process CUDA step. A CPU check of the logic, never a
// GPU run. Every rank runs, on the same batches (mixing buffer's synthetic rows, scaling factor
// on, AuxK active: a short dead_feature_window, many latents for k = 3):
//   * the sharded CUDA step on its part of the model (the encoder GEMM in chunks of 5 rows),
//   * the unsharded CUDA step (cuda::TrainStep, gather AuxK: aux_dense_cap 0, the path the
//     sharded step takes) on the whole model,
//   * cpu::train_step on the whole model and dist::sharded_train_step on its part (the CPU
//     references),
// and checks step by step: the same global top-k and AuxK selections as the CPU step (global
// latents, in order), the same dead counts and L0 as both unsharded steps, losses to 1e-6 of the
// unsharded CUDA step (1e-5 of the CPU's, the CUDA-vs-CPU tolerance of test_cuda_train.cpp); at
// the end its part of the weights and Adam moments to 1e-5 of the unsharded CUDA step's slice, the
// dead-latent counters exactly. Then: a resume from the downloaded state at step 7 is
// bit-identical to the run that went on, the state saved as a sharded checkpoint loads back
// bit for bit (the CPU sharded run's files), and a rank fed another batch is named.
// Exit 0: pass; 1: a check failed (messages on stderr).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <string>

#include "dist/collectives.h"
#include "dist/device_collectives.h"
#include "dist/sharded_files.h"
#include "dist/sharded_train.h"
#include "topksae/buffer.h"
#include "equivalence_check.h"
#include "topksae/error.h"
#include "topksae/ops_cpu.h"
#include "topksae/synthetic.h"
#include "topksae/train.h"
#include "topksae/train_cuda.h"
#include "train/sharded_step.h"

namespace fs = std::filesystem;
using namespace topksae;
using namespace topksae::mpi_test;

namespace {

// The metrics of two runs of the same math (dead counts and L0 exactly, the rest to tol).
void expect_metrics(const StepMetrics& g, const StepMetrics& r, double tol, const char* what, int64_t t) {
  EXPECT(g.step == r.step && g.dead_features == r.dead_features, what, " step ", t, ": dead ", g.dead_features,
         " vs ", r.dead_features);
  EXPECT(g.l0 == r.l0, what, " step ", t, ": l0 ", g.l0, " vs ", r.l0);
  EXPECT(close_rel(g.overall_loss, r.overall_loss, tol), what, " step ", t, ": loss ", g.overall_loss, " vs ",
         r.overall_loss);
  EXPECT(close_rel(g.mse_loss, r.mse_loss, tol), what, " step ", t, ": mse ", g.mse_loss, " vs ", r.mse_loss);
  EXPECT(close_rel(g.auxiliary_reconstruction_loss, r.auxiliary_reconstruction_loss, tol), what, " step ", t,
         ": aux loss ", g.auxiliary_reconstruction_loss, " vs ", r.auxiliary_reconstruction_loss);
  EXPECT(close_rel(g.explained_variance, r.explained_variance, tol), what, " step ", t, ": explained variance");
  EXPECT(close_rel(g.grad_norm, r.grad_norm, tol), what, " step ", t, ": grad norm ", g.grad_norm, " vs ", r.grad_norm);
  EXPECT(close_rel(g.mean_passes_since_fired, r.mean_passes_since_fired, 1e-12), what, " step ", t, ": mean passes");
  EXPECT(g.has_sparsity == r.has_sparsity && g.below_1e_5 == r.below_1e_5 && g.below_1e_6 == r.below_1e_6 &&
             close_rel(g.mean_log10_feature_sparsity, r.mean_log10_feature_sparsity, 1e-9),
         what, " step ", t, ": sparsity window metrics");
  EXPECT(g.lr_used == r.lr_used && g.n_training_samples == r.n_training_samples, what, " step ", t, ": lr / samples");
}

TrainState slice_state(const TrainState& full, const TrainConfig& cfg, const dist::ShardRange& r) {
  TrainState s = full;
  s.params = dist::slice_params(full.params, cfg.d_in, cfg.d_sae, r);
  s.adam_m = dist::slice_params(full.adam_m, cfg.d_in, cfg.d_sae, r);
  s.adam_v = dist::slice_params(full.adam_v, cfg.d_in, cfg.d_sae, r);
  s.stats.since_fired.assign(full.stats.since_fired.begin() + r.lo, full.stats.since_fired.begin() + r.hi);
  s.stats.act_freq.assign(full.stats.act_freq.begin() + r.lo, full.stats.act_freq.begin() + r.hi);
  return s;
}

void run(dist::DeviceCollectives& dc, const TrainConfig& cfg, const fs::path& tmp) {
  dist::Collectives& comm = dc.host();
  const int R = comm.size();
  const dist::ShardRange r = dist::shard_range(cfg.d_sae, comm.rank(), R);
  SyntheticSource src(equivalence_source(cfg.d_in));

  TrainState ref = TrainState::initial(cfg);
  ref.scaling_factor = cpu::estimate_scaling_factor(src, cfg.d_in, cfg.batch_size, cfg.n_batches_for_norm_estimate);
  TrainState cpu_sh = dist::initial_shard_state(cfg, r);
  cpu_sh.scaling_factor = ref.scaling_factor;
  const TrainState init_shard = cpu_sh;

  const int64_t steps = 12, resume_at = 7, B = cfg.batch_size;
  std::vector<std::vector<float>> batches(size_t(steps), std::vector<float>(size_t(B * cfg.d_in)));
  for (auto& b : batches) src.next(b.data(), B);

  cuda::Context ctx;
  cuda::TrainStepOptions uopts;
  uopts.aux_dense_cap = 0;  // the gather path, as the sharded step
  cuda::TrainStep unsharded(ctx, cfg, ref, uopts);
  cuda::TrainStepOptions sopts;
  sopts.encode_rows = 5;  // the encoder GEMM and the local selections in chunks of 5, 5, 5, 1 rows
  cuda::ShardedTrainStep sharded(ctx, dc, cfg, init_shard, sopts);
  DeviceBuffer x(size_t(B * cfg.d_in) * sizeof(float));
  float* xd = static_cast<float*>(x.data());

  cpu::TrainWorkspace rws;
  dist::ShardedWorkspace sws;
  int64_t max_dead = 0, aux_steps = 0;
  TrainState at_resume;
  for (int64_t t = 0; t < steps; ++t) {
    const std::vector<float>& xb = batches[size_t(t)];
    detail::copy_bytes(xd, Device::cuda, xb.data(), Device::cpu, xb.size() * sizeof(float));
    const StepMetrics mr = cpu::train_step(cfg, &ref, xb.data(), B, &rws);
    const StepMetrics ms = dist::sharded_train_step(comm, cfg, r, &cpu_sh, xb.data(), B, &sws);
    unsharded.step(xd, B);
    sharded.step(xd, B);
    const std::vector<StepMetrics> gu = unsharded.drain_metrics(), gs = sharded.drain_metrics();
    EXPECT(gu.size() == 1 && gs.size() == 1, "step ", t, ": ", gs.size(), " sharded / ", gu.size(), " metrics");
    if (gu.size() != 1 || gs.size() != 1) return;
    const cuda::ShardedTrainStep::Selections sel = sharded.last_selections();
    EXPECT(sel.top == rws.fwd.idx, "step ", t, ": the sharded CUDA top-k differs from the CPU step's");
    EXPECT(sel.k_aux == rws.fwd.k_aux, "step ", t, ": k_aux ", sel.k_aux, " vs ", rws.fwd.k_aux);
    if (sel.k_aux == rws.fwd.k_aux && sel.k_aux > 0)
      EXPECT(sel.aux == rws.fwd.aux_idx, "step ", t, ": the sharded CUDA AuxK selection differs from the CPU step's");
    expect_metrics(gs[0], gu[0], 1e-6, "sharded vs unsharded cuda", t);
    expect_metrics(gs[0], mr, 1e-5, "sharded cuda vs cpu", t);
    EXPECT(gs[0].dead_features == ms.dead_features, "step ", t, ": dead vs the CPU sharded step");
    max_dead = std::max(max_dead, rws.fwd.n_dead);
    aux_steps += sel.k_aux > 0 && gs[0].auxiliary_reconstruction_loss > 0;
    if (t + 1 == resume_at) sharded.download(&at_resume);
  }
  EXPECT(max_dead > 0 && aux_steps >= 3, "AuxK did not run (max dead ", max_dead, ", AuxK steps ", aux_steps, ")");

  TrainState gsh, gfull;
  sharded.download(&gsh);
  unsharded.download(&gfull);
  const TrainState gslice = slice_state(gfull, cfg, r);
  expect_params(gsh.params, gslice.params, 1e-5, "weights vs the unsharded cuda step");
  expect_params(gsh.adam_m, gslice.adam_m, 1e-5, "adam m vs the unsharded cuda step");
  expect_params(gsh.adam_v, gslice.adam_v, 1e-5, "adam v vs the unsharded cuda step");
  EXPECT(gsh.stats.since_fired == gslice.stats.since_fired && gsh.stats.act_freq == gslice.stats.act_freq &&
             gsh.stats.n_frac_active == gslice.stats.n_frac_active,
         "dead-latent counters differ from the unsharded cuda step's");
  EXPECT(gsh.stats.since_fired == cpu_sh.stats.since_fired, "dead-latent counters differ from the CPU sharded step's");
  expect_params(gsh.params, cpu_sh.params, 1e-4, "weights vs the CPU sharded step");
  EXPECT(max_abs_diff(gsh.params.W_enc, init_shard.params.W_enc) > 1e-3, "the weights did not move");
  if (comm.rank() == 0)
    std::cout << steps << " steps equal on " << R << " ranks (dead latents up to " << max_dead << ", AuxK on "
              << aux_steps << " steps); max |W_dec - unsharded| " << max_abs_diff(gsh.params.W_dec, gslice.params.W_dec)
              << "\n";

  // Exact resume: the state downloaded at step 7 (through a sharded checkpoint, the CPU run's
  // files) replayed on a new step object ends bit-identical to the run that went on.
  const fs::path ckpt = tmp / "ckpt";
  dist::save_sharded_checkpoint(comm, ckpt, cfg, r, at_resume);
  TrainState loaded = dist::load_sharded_checkpoint(comm, ckpt, r, nullptr);
  EXPECT(bit_equal(loaded, at_resume), "the sharded checkpoint does not load back the saved state");
  {
    cuda::ShardedTrainStep again(ctx, dc, cfg, loaded, sopts);
    for (int64_t t = resume_at; t < steps; ++t) {
      const std::vector<float>& xb = batches[size_t(t)];
      detail::copy_bytes(xd, Device::cuda, xb.data(), Device::cpu, xb.size() * sizeof(float));
      again.step(xd, B);
    }
    (void)again.drain_metrics();
    TrainState re;
    again.download(&re);
    EXPECT(bit_equal(re, gsh), "the resumed run is not bit-identical to the run that went on");
  }

  // A rank fed another batch: every rank names it when the step's metrics come back.
  {
    cuda::ShardedTrainStep other(ctx, dc, cfg, init_shard);
    std::vector<float> xb = batches[0];
    if (comm.rank() == 1) xb[3] += 0.25f;
    detail::copy_bytes(xd, Device::cuda, xb.data(), Device::cpu, xb.size() * sizeof(float));
    other.step(xd, B);
    try {
      (void)other.drain_metrics();
      EXPECT(false, "a rank fed another batch was not refused");
    } catch (const Error& e) {
      EXPECT(std::string(e.what()).find("rank 1 read a different batch than rank 0") != std::string::npos,
             "unexpected message: ", e.what());
    }
  }
}

// --bench B d_in d_sae k steps (tools/gpu_check.sh, issue 20 item 6): the sharded step on this
// rank's shard against the unsharded cuda::TrainStep on the whole model, in the same process, tf32,
// the same batch on the device; three rounds of `steps` steps each, alternating, best round of
// each. At R = 1 (mpirun -np 1, or no launcher) the ratio is what the NCCL path costs. Fresh
// weights: no latent is dead yet, so AuxK does not run in either (as bench_train_step).
int bench(dist::DeviceCollectives& dc, char** argv) {
  TrainConfig cfg;
  cfg.batch_size = std::stoll(argv[0]);
  cfg.d_in = std::stoll(argv[1]);
  cfg.d_sae = std::stoll(argv[2]);
  cfg.k = std::stoll(argv[3]);
  const int64_t steps = std::stoll(argv[4]);
  cfg.training_tokens = cfg.batch_size * 1000000;
  cfg.lr_warm_up_steps = 0;
  cfg.seed = 3;
  cfg.validate();
  const int64_t B = cfg.batch_size;
  const dist::ShardRange r = dist::shard_range(cfg.d_sae, dc.rank(), dc.size());
  std::vector<float> xb(size_t(B * cfg.d_in));
  uint64_t z = 88172645463325252ull;
  for (float& v : xb) {
    z ^= z << 13, z ^= z >> 7, z ^= z << 17;
    v = float(int64_t(z % 2001) - 1000) / 1000.f;
  }
  DeviceBuffer x(xb.size() * sizeof(float));
  detail::copy_bytes(x.data(), Device::cuda, xb.data(), Device::cpu, xb.size() * sizeof(float));
  const float* xd = static_cast<const float*>(x.data());
  cuda::Context ctx;
  cuda::TrainStepOptions o;
  o.precision = cuda::Precision::tf32;
  double best_sh = INFINITY, best_un = INFINITY;
  {
    const TrainState full = TrainState::initial(cfg);
    cuda::TrainStep un(ctx, cfg, full, o);
    cuda::ShardedTrainStep sh(ctx, dc, cfg, slice_state(full, cfg, r), o);
    auto time_steps = [&](auto& step_obj) {
      for (int w = 0; w < 2; ++w) step_obj.step(xd, B);  // warm-up
      (void)step_obj.drain_metrics();
      dc.host().barrier();
      const auto t0 = std::chrono::steady_clock::now();
      for (int64_t t = 0; t < steps; ++t) step_obj.step(xd, B);
      (void)step_obj.drain_metrics();
      return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / double(steps);
    };
    for (int round = 0; round < 3; ++round) {
      best_un = std::min(best_un, time_steps(un));
      best_sh = std::min(best_sh, time_steps(sh));
    }
  }
  if (dc.rank() == 0)
    std::cout << "sharded_step R=" << dc.size() << " shape=" << cfg.d_in << "x" << cfg.d_sae << " k=" << cfg.k
              << " B=" << B << " tf32 ms_per_step=" << best_sh << " unsharded_ms_per_step=" << best_un
              << " ratio=" << best_sh / best_un << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 7 && std::string(argv[1]) == "--bench") {
    try {
      auto comm = dist::make_mpi_collectives();
      auto dc = dist::make_nccl_collectives(comm);
      return bench(*dc, argv + 2);
    } catch (const std::exception& e) {
      std::cerr << "error: " << e.what() << "\n";
      return 1;
    }
  }
  if (argc != 2) {
    std::cerr << "usage: mpirun -np R cuda_sharded_equivalence TMPDIR\n"
                 "       [mpirun -np R] cuda_sharded_equivalence --bench B D_IN D_SAE K STEPS\n";
    return 2;
  }
  try {
    auto comm = dist::make_mpi_collectives();
    g_rank = comm->rank();
    if (comm->size() < 2) {
      std::cerr << "run me under mpirun -np 2 or more\n";
      return 2;
    }
    auto dc = dist::make_nccl_collectives(comm);
    const fs::path tmp = fs::path(argv[1]) / concat("np", comm->size());
    if (comm->rank() == 0) {
      fs::remove_all(tmp);
      fs::create_directories(tmp);
    }
    comm->barrier();

    TrainConfig a;  // sae_lens defaults, scaling factor on (as tests/mpi/sharded_equivalence.cpp)
    a.d_in = 20;
    a.d_sae = 200;  // 100 / 100, or 67 / 67 / 66
    a.k = 3;
    a.batch_size = 16;  // small: the emulation runs each kernel thread as a fiber (ASan: CI step 20)
    a.training_tokens = 16 * 100;
    a.lr = 5e-3;
    a.dead_feature_window = 3;
    a.feature_sampling_window = 5;
    a.normalize_activations = Normalize::expected_average_only_in;
    a.n_batches_for_norm_estimate = 2;
    a.seed = 11;
    run(*dc, a, tmp);

    double fails = g_fail;
    comm->all_reduce_sum(&fails, 1);
    if (comm->rank() == 0) std::cout << (fails == 0 ? "PASS\n" : "FAIL\n");
    return fails == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "rank " << g_rank << ": error: " << e.what() << "\n";
    return 1;
  }
}
