// The Trainer on the GPU against the Trainer on the CPU, over the synthetic source: 20 steps in
// fp32 (every step's losses to 1e-5 relative, final weights close), checkpoints written on one
// device resuming on the other with the CPU's losses, and the metrics callback getting every
// step once, in order, including across run() calls and an early stop. Without a GPU (these
// skip), device cuda must be refused with the reason; should_stop and exhausted() are checked on
// the CPU too. The GPU suite is named CudaTrainer so that tools/gpu_check.sh (gtest Cuda*) runs it.
#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "precision_check.h"
#include "test_util.h"
#include "topksae/error.h"
#include "topksae/synthetic.h"
#include "topksae/train.h"

using namespace topksae;
using namespace topksae::test;
namespace fs = std::filesystem;

namespace {

SyntheticConfig source_cfg() {
  SyntheticConfig sc;
  sc.d_in = 37;
  sc.n_features = 70;
  sc.seed = 11;
  return sc;
}

// Sizes that are multiples of no block size; AuxK from step 3 on, sparsity logs at steps 6, 13.
TrainConfig train_cfg() {
  TrainConfig c;
  c.d_in = 37;
  c.d_sae = 203;
  c.k = 5;
  c.batch_size = 29;
  c.training_tokens = 29 * 20;
  c.lr = 3e-3;
  c.lr_scheduler_name = LrScheduler::cosineannealing;
  c.lr_warm_up_steps = 3;
  c.dead_feature_window = 2;
  c.feature_sampling_window = 7;
  c.normalize_activations = Normalize::expected_average_only_in;
  c.n_batches_for_norm_estimate = 2;
  c.seed = 23;
  return c;
}

TrainerOptions on(Device d, std::vector<StepMetrics>* log) {
  TrainerOptions o;
  o.device = d;
  o.on_step = [log](const StepMetrics& m) { log->push_back(m); };
  return o;
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

// got[i] is step first + i; ref is the CPU run from step 0.
void expect_losses_match(const std::vector<StepMetrics>& got, const std::vector<StepMetrics>& ref, int64_t first) {
  bool saw_aux = false;
  for (size_t i = 0; i < got.size(); ++i) {
    const StepMetrics& g = got[i];
    ASSERT_LT(size_t(first) + i, ref.size());
    const StepMetrics& c = ref[size_t(first) + i];
    SCOPED_TRACE(::testing::Message() << "step " << c.step);
    EXPECT_EQ(g.step, c.step);
    EXPECT_EQ(g.n_training_samples, c.n_training_samples);
    EXPECT_LE(rel(g.overall_loss, c.overall_loss), 1e-5) << g.overall_loss << " vs " << c.overall_loss;
    EXPECT_LE(rel(g.mse_loss, c.mse_loss), 1e-5);
    if (c.auxiliary_reconstruction_loss > 0) {
      saw_aux = true;
      EXPECT_LE(rel(g.auxiliary_reconstruction_loss, c.auxiliary_reconstruction_loss), 1e-5);
    } else {
      EXPECT_EQ(g.auxiliary_reconstruction_loss, 0.0);
    }
    EXPECT_NEAR(g.l0, c.l0, 1e-12);
    EXPECT_EQ(g.dead_features, c.dead_features);
    EXPECT_EQ(g.has_sparsity, c.has_sparsity);
  }
  if (!got.empty()) EXPECT_TRUE(saw_aux) << "AuxK never ran: the comparison lost part of its point";
}

void expect_params_close(const Params<float>& got, const Params<float>& ref) {
  EXPECT_NONZERO(got.W_enc);
  EXPECT_NONZERO(got.b_dec);
  EXPECT_ALLCLOSE(got.W_enc.data(), ref.W_enc.data(), ref.W_enc.size(), 1e-5, 1e-3) << "W_enc";
  EXPECT_ALLCLOSE(got.b_enc.data(), ref.b_enc.data(), ref.b_enc.size(), 1e-5, 1e-3) << "b_enc";
  EXPECT_ALLCLOSE(got.W_dec.data(), ref.W_dec.data(), ref.W_dec.size(), 1e-5, 1e-3) << "W_dec";
  EXPECT_ALLCLOSE(got.b_dec.data(), ref.b_dec.data(), ref.b_dec.size(), 1e-5, 1e-3) << "b_dec";
}

// The CPU run everything is compared with: its metrics, and the data position after n steps.
struct Reference {
  std::vector<StepMetrics> log;
  TrainState final_state;
  std::string position_after(int64_t steps) const {
    SyntheticSource s(source_cfg());
    Trainer t(train_cfg(), s);
    EXPECT_EQ(t.run(steps), steps);
    return t.state().data_position;
  }
};

Reference cpu_reference() {
  Reference r;
  SyntheticSource s(source_cfg());
  Trainer t(train_cfg(), s, on(Device::cpu, &r.log));
  EXPECT_EQ(t.run(), 20);
  r.final_state = t.state();
  return r;
}

TEST(CudaTrainer, Fp32MatchesTheCpuTrainerStepByStep) {
  SKIP_WITHOUT_GPU();
  const Reference ref = cpu_reference();
  ASSERT_EQ(ref.log.size(), 20u);

  std::vector<StepMetrics> log;
  SyntheticSource s(source_cfg());
  Trainer t(train_cfg(), s, on(Device::cuda, &log));
  EXPECT_EQ(t.run(), 20);
  EXPECT_TRUE(t.done());
  ASSERT_EQ(log.size(), 20u) << "every step's metrics are reported by the time run() returns";
  expect_losses_match(log, ref.log, 0);

  const TrainState& g = t.state();
  const TrainState& c = ref.final_state;
  EXPECT_EQ(g.step, 20);
  EXPECT_EQ(g.n_training_samples, c.n_training_samples);
  EXPECT_EQ(g.data_position, c.data_position);
  ASSERT_TRUE(g.scaling_factor && c.scaling_factor);
  EXPECT_EQ(*g.scaling_factor, *c.scaling_factor);  // estimated on the host either way
  EXPECT_EQ(g.stats.since_fired, c.stats.since_fired);
  EXPECT_EQ(g.stats.act_freq, c.stats.act_freq);
  EXPECT_EQ(g.stats.n_frac_active, c.stats.n_frac_active);
  expect_params_close(g.params, c.params);
}

// dead_feature_window 0 (sae_lens takes it: dead = did not fire in the previous step): the GPU's
// host-side bound on the dead count is then every latent, and the steps match the CPU's.
TEST(CudaTrainer, DeadFeatureWindowZeroMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  TrainConfig c = train_cfg();
  c.dead_feature_window = 0;
  std::vector<StepMetrics> ref, got;
  SyntheticSource s1(source_cfg()), s2(source_cfg());
  Trainer cpu_t(c, s1, on(Device::cpu, &ref));
  Trainer gpu_t(c, s2, on(Device::cuda, &got));
  EXPECT_EQ(cpu_t.run(), 20);
  EXPECT_EQ(gpu_t.run(), 20);
  ASSERT_EQ(got.size(), 20u);
  EXPECT_GT(ref[1].dead_features, 0);
  expect_losses_match(got, ref, 0);
  EXPECT_EQ(gpu_t.state().stats.since_fired, cpu_t.state().stats.since_fired);
  expect_params_close(gpu_t.state().params, cpu_t.state().params);
}

TEST(CudaTrainer, CheckpointOnOneDeviceResumesOnTheOther) {
  SKIP_WITHOUT_GPU();
  test::TempDir tmp{"topksae_trainer_cuda"};
  const Reference ref = cpu_reference();

  // cuda -> cpu. The trainer checkpoints itself after step 6 while more steps are queued behind
  // it: the checkpoint must hold exactly 6 steps and the data position after 6 batches.
  {
    const fs::path ck = tmp.path / "from_cuda";
    std::vector<StepMetrics> log;
    SyntheticSource s(source_cfg());
    TrainerOptions o = on(Device::cuda, &log);
    o.checkpoint_dir = ck;
    o.checkpoint_every = 6;
    Trainer t(train_cfg(), s, o);
    EXPECT_EQ(t.run(10), 10);
    TrainConfig saved;
    const TrainState st = load_checkpoint(ck, &saved);
    EXPECT_EQ(st.step, 6);
    EXPECT_EQ(st.n_training_samples, 6 * train_cfg().batch_size);
    EXPECT_EQ(st.data_position, ref.position_after(6));

    std::vector<StepMetrics> rest;
    SyntheticSource s2(source_cfg());
    Trainer resumed(train_cfg(), s2, on(Device::cpu, &rest));
    resumed.resume(ck);
    EXPECT_EQ(resumed.run(), 14);
    ASSERT_EQ(rest.size(), 14u);
    expect_losses_match(rest, ref.log, 6);
    expect_params_close(resumed.state().params, ref.final_state.params);
  }
  // cpu -> cuda, through Trainer::save_checkpoint after run(10).
  {
    const fs::path ck = tmp.path / "from_cpu";
    SyntheticSource s(source_cfg());
    Trainer t(train_cfg(), s);
    EXPECT_EQ(t.run(10), 10);
    t.save_checkpoint(ck);

    std::vector<StepMetrics> rest;
    SyntheticSource s2(source_cfg());
    Trainer resumed(train_cfg(), s2, on(Device::cuda, &rest));
    resumed.resume(ck);
    EXPECT_EQ(resumed.state().step, 10);
    EXPECT_EQ(resumed.run(), 10);
    ASSERT_EQ(rest.size(), 10u);
    expect_losses_match(rest, ref.log, 10);
    EXPECT_EQ(resumed.state().data_position, ref.final_state.data_position);
    expect_params_close(resumed.state().params, ref.final_state.params);

    // ... and its final save matches the CPU's folded SAE.
    resumed.save_final(tmp.path / "final");
    const Sae loaded = load_sae_dir(tmp.path / "final");
    const Sae want = final_sae(train_cfg(), ref.final_state);
    EXPECT_ALLCLOSE(loaded.params.W_dec.data(), want.params.W_dec.data(), want.params.W_dec.size(), 1e-5, 1e-3);
  }
}

TEST(CudaTrainer, MetricsOfEveryStepInOrderAcrossRunsAndAStop) {
  SKIP_WITHOUT_GPU();
  const Reference ref = cpu_reference();
  std::vector<StepMetrics> log;
  SyntheticSource s(source_cfg());
  TrainerOptions o = on(Device::cuda, &log);
  int polls = 0;
  o.should_stop = [&polls] { return ++polls == 13; };  // the 13th poll: after 12 batches in all
  Trainer t(train_cfg(), s, o);
  EXPECT_EQ(t.run(3), 3);
  EXPECT_EQ(log.size(), 3u);
  EXPECT_EQ(t.run(), 9);  // stopped: polls 4..12 queued steps 3..11
  EXPECT_FALSE(t.exhausted());
  EXPECT_EQ(t.state().step, 12);
  EXPECT_EQ(log.size(), 12u);
  EXPECT_EQ(t.state().data_position, ref.position_after(12));
  EXPECT_EQ(t.run(), 8);
  ASSERT_EQ(log.size(), 20u);
  for (size_t i = 0; i < log.size(); ++i) EXPECT_EQ(log[i].step, int64_t(i));
  expect_losses_match(log, ref.log, 0);
}

TEST(CudaTrainer, Tf32AndBf16RunAndStayClose) {
  SKIP_WITHOUT_GPU();
  const Reference ref = cpu_reference();
  SyntheticSource s5(source_cfg());
  Trainer cpu5(train_cfg(), s5);
  ASSERT_EQ(cpu5.run(5), 5);
  for (cuda::Precision p : {cuda::Precision::tf32, cuda::Precision::bf16}) {
    SCOPED_TRACE(std::string(cuda::precision_name(p)));
    std::vector<StepMetrics> log;
    SyntheticSource s(source_cfg());
    TrainerOptions o = on(Device::cuda, &log);
    o.precision = p;
    Trainer t(train_cfg(), s, o);
    EXPECT_EQ(t.run(5), 5);
    ASSERT_EQ(log.size(), 5u);
    double lr_steps = 0;  // the schedule's learning rates of these steps (warm-up)
    for (size_t i = 0; i < log.size(); ++i) {
      EXPECT_TRUE(std::isfinite(log[i].overall_loss));
      EXPECT_LE(rel(log[i].mse_loss, ref.log[i].mse_loss), 5e-2) << "step " << i;
      lr_steps += ref.log[i].lr_used;
    }
    // The weights, against the CPU's after the same 5 steps (fp32), and moved from the start.
    // Measured on the emulation: tf32 7e-5, bf16 0.033 of lr x steps; a bf16 copy of W_enc never
    // refreshed: 0.136.
    expect_params_track(t.state().params, cpu5.state().params, TrainState::initial(train_cfg()).params, lr_steps,
                        p == cuda::Precision::tf32 ? 0.01 : 0.1);
  }
}

TEST(CudaTrainer, RefusedWithTheReasonWithoutAGpu) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is usable here";
  SyntheticSource s(source_cfg());
  TrainerOptions o;
  o.device = Device::cuda;
  try {
    Trainer t(train_cfg(), s, o);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cuda"), std::string::npos) << msg;
    EXPECT_NE(msg.find(cuda_unavailable_reason()), std::string::npos) << msg;
  }
}

TEST(TrainerDevice, CpuRefusesAGpuPrecision) {
  SyntheticSource s(source_cfg());
  TrainerOptions o;
  o.precision = cuda::Precision::bf16;
  EXPECT_THROW({ Trainer t(train_cfg(), s, o); }, Error);
}

TEST(TrainerDevice, ShouldStopLeavesAConsistentStateOnTheCpu) {
  std::vector<StepMetrics> log;
  SyntheticSource s(source_cfg());
  TrainerOptions o = on(Device::cpu, &log);
  int polls = 0;
  o.should_stop = [&polls] { return ++polls > 4; };
  Trainer t(train_cfg(), s, o);
  EXPECT_EQ(t.run(), 4);
  EXPECT_EQ(t.state().step, 4);
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log.back().step, 3);
  const Reference ref;
  EXPECT_EQ(t.state().data_position, ref.position_after(4));
  EXPECT_FALSE(t.exhausted());
  // A source that runs dry mid-run.
  SyntheticConfig sc = source_cfg();
  sc.n_rows = 2 * 29 + 2 * 29 + 7;  // the scaling estimate reads 2 batches, then 2 steps
  SyntheticSource dry(sc);
  Trainer t2(train_cfg(), dry);
  EXPECT_EQ(t2.run(), 2);
  EXPECT_TRUE(t2.exhausted());
  EXPECT_FALSE(t2.done());
}

}  // namespace
