// Checkpoints: 20 steps straight and 10 + save + load + 10 give bit-identical weights, Adam
// moments and counters (with AuxK active and the scaling factor estimated); the checkpoint is an
// SAE directory plus the scaler and trainer-state files; a changed config is refused.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <unistd.h>

#include "formats_fixtures.h"  // expect_error
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
  sc.d_in = 20;
  sc.n_features = 60;
  sc.seed = 9;
  return sc;
}

TrainConfig train_cfg() {
  TrainConfig c;
  c.d_in = 20;
  c.d_sae = 90;
  c.k = 3;
  c.batch_size = 33;
  c.training_tokens = 33 * 20;
  c.lr = 3e-3;
  c.lr_scheduler_name = LrScheduler::cosineannealing;
  c.lr_warm_up_steps = 3;
  c.lr_decay_steps = 4;
  c.dead_feature_window = 2;  // AuxK from step 3 on
  c.feature_sampling_window = 7;
  c.normalize_activations = Normalize::expected_average_only_in;
  c.n_batches_for_norm_estimate = 2;
  c.seed = 17;
  return c;
}

template <typename T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

void expect_same_params(const Params<float>& a, const Params<float>& b, const char* what) {
  EXPECT_TRUE(same_bits(a.W_enc, b.W_enc)) << what << " W_enc";
  EXPECT_TRUE(same_bits(a.b_enc, b.b_enc)) << what << " b_enc";
  EXPECT_TRUE(same_bits(a.W_dec, b.W_dec)) << what << " W_dec";
  EXPECT_TRUE(same_bits(a.b_dec, b.b_dec)) << what << " b_dec";
}

}  // namespace

TEST(TrainResume, TenPlusTenIsBitIdenticalToTwenty) {
  test::TempDir tmp{"topksae_train_resume"};
  const TrainConfig c = train_cfg();
  int aux_steps = 0;
  SyntheticSource s1(source_cfg());
  TrainerOptions o1;
  o1.on_step = [&](const StepMetrics& m) { aux_steps += m.auxiliary_reconstruction_loss > 0; };
  Trainer straight(c, s1, o1);
  EXPECT_EQ(straight.run(), 20);
  EXPECT_GT(aux_steps, 0) << "the run should exercise AuxK";

  SyntheticSource s2(source_cfg());
  Trainer first(c, s2);
  EXPECT_EQ(first.run(10), 10);
  const fs::path ck = tmp.path / "ckpt";
  first.save_checkpoint(ck);
  for (const char* f : {"cfg.json", "sae_weights.safetensors", "activation_scaler.json", "trainer_state.json",
                        "trainer_state.bin"})
    EXPECT_TRUE(fs::exists(ck / f)) << f;
  EXPECT_FALSE(fs::exists(tmp.path / "ckpt.tmp"));

  SyntheticSource s3(source_cfg());  // a fresh source: the position comes from the checkpoint
  Trainer second(c, s3);
  second.resume(ck);
  EXPECT_EQ(second.state().step, 10);
  EXPECT_EQ(second.run(), 10);

  const TrainState& a = straight.state();
  const TrainState& b = second.state();
  ASSERT_TRUE(a.scaling_factor && b.scaling_factor);
  EXPECT_EQ(*a.scaling_factor, *b.scaling_factor);
  expect_same_params(a.params, b.params, "params");
  expect_same_params(a.adam_m, b.adam_m, "adam_m");
  expect_same_params(a.adam_v, b.adam_v, "adam_v");
  EXPECT_EQ(a.stats.since_fired, b.stats.since_fired);
  EXPECT_EQ(a.stats.act_freq, b.stats.act_freq);
  EXPECT_EQ(a.stats.n_frac_active, b.stats.n_frac_active);
  EXPECT_EQ(a.n_training_samples, b.n_training_samples);
  EXPECT_EQ(a.data_position, b.data_position);
  EXPECT_NONZERO(a.params.W_dec);
  // The run moved the weights (so equality is not trivially the initial state).
  const TrainState init = TrainState::initial(c);
  EXPECT_FALSE(same_bits(init.params.W_dec, a.params.W_dec));
}

TEST(TrainResume, OverwritesThePreviousCheckpointAndRefusesAnotherConfig) {
  test::TempDir tmp{"topksae_train_resume"};
  const TrainConfig c = train_cfg();
  SyntheticSource s(source_cfg());
  TrainerOptions o;
  o.checkpoint_dir = tmp.path / "run";
  o.checkpoint_every = 4;
  Trainer tr(c, s, o);
  tr.run(9);  // checkpoints after steps 4 and 8
  TrainConfig loaded;
  const TrainState st = load_checkpoint(tmp.path / "run", &loaded);
  EXPECT_EQ(st.step, 8);
  EXPECT_EQ(train_config_to_json(loaded), train_config_to_json(c));

  // Another learning rate is refused, with a message that says why (any other Error, such as a
  // failed read, would not do).
  TrainConfig other = c;
  other.lr = 1e-2;
  SyntheticSource s2(source_cfg());
  Trainer tr2(other, s2);
  expect_error([&] { tr2.resume(tmp.path / "run"); },
               {"run", "was written with a different training config", "\"lr\": 0.01", "\"lr\": 0.003"});

  // A changed training_tokens (a longer run) is accepted: the run goes on from step 8 to the new end.
  TrainConfig longer = c;
  longer.training_tokens = c.training_tokens + 5 * c.batch_size;
  SyntheticSource s3(source_cfg());
  Trainer tr3(longer, s3);
  ASSERT_NO_THROW(tr3.resume(tmp.path / "run"));
  EXPECT_EQ(tr3.state().step, 8);
  EXPECT_EQ(tr3.run(), 25 - 8);
  EXPECT_EQ(tr3.state().step, 25);

  // A corrupt trainer_state.bin is detected.
  {
    std::fstream f(tmp.path / "run" / "trainer_state.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x55');
  }
  EXPECT_THROW(load_checkpoint(tmp.path / "run", nullptr), Error);
  EXPECT_THROW(load_checkpoint(tmp.path / "missing", nullptr), Error);
  // A save interrupted between its two renames: the message points at <dir>.old.
  fs::rename(tmp.path / "run", tmp.path / "run.old");
  try {
    load_checkpoint(tmp.path / "run", nullptr);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run.old"), std::string::npos) << e.what();
  }
}

TEST(TrainResume, FinalSaveIsFoldedAndLoads) {
  test::TempDir tmp{"topksae_train_resume"};
  TrainConfig c = train_cfg();
  SyntheticSource s(source_cfg());
  Trainer tr(c, s);
  tr.run(5);
  tr.save_final(tmp.path / "final");
  const Sae loaded = load_sae_dir(tmp.path / "final");
  const Sae want = final_sae(c, tr.state());
  EXPECT_EQ(loaded.cfg.normalize, Normalize::none);
  EXPECT_TRUE(same_bits(loaded.params.W_enc, want.params.W_enc));
  EXPECT_TRUE(same_bits(loaded.params.b_dec, want.params.b_dec));
  EXPECT_FALSE(same_bits(loaded.params.W_enc, tr.state().params.W_enc));  // folded: s != 1
}

TEST(TrainRun, StepCountFollowsSaeLensFitLoop) {
  // training_tokens = 3 batches + 1 token: sae_lens runs 4 steps (while samples < tokens), with
  // the LR schedule sized for 3.
  TrainConfig c = train_cfg();
  c.training_tokens = 3 * c.batch_size + 1;
  c.lr_scheduler_name = LrScheduler::constant;
  c.lr_warm_up_steps = 0;
  c.lr_decay_steps = 0;
  c.normalize_activations = Normalize::none;
  SyntheticSource s(source_cfg());
  std::vector<StepMetrics> log;
  TrainerOptions o;
  o.on_step = [&](const StepMetrics& m) { log.push_back(m); };
  Trainer tr(c, s, o);
  EXPECT_EQ(c.total_training_steps(), 3);
  EXPECT_EQ(tr.run(), 4);
  EXPECT_TRUE(tr.done());
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log.back().n_training_samples, 4 * c.batch_size);
  EXPECT_EQ(tr.run(), 0);
  // A finite source that runs dry stops the run early.
  SyntheticConfig sc = source_cfg();
  sc.n_rows = 2 * c.batch_size + 5;
  SyntheticSource dry(sc);
  Trainer tr2(c, dry);
  EXPECT_EQ(tr2.run(), 2);
  EXPECT_FALSE(tr2.done());
}

// --init's path: start_from_sae gives the state the old way gave (the weights written as a step-0
// checkpoint with the scaling factor unfolded, then resumed), bit for bit, and the same run after.
TEST(TrainResume, StartFromSaeMatchesTheStepZeroCheckpointRoundTrip) {
  test::TempDir tmp{"topksae_train_resume"};
  const TrainConfig c = train_cfg();  // expected_average_only_in: the weights must be unfolded
  SyntheticSource s0(source_cfg());
  Trainer t0(c, s0);
  t0.run(5);
  const Sae init = final_sae(c, t0.state());  // folded: works on raw inputs

  SyntheticSource s1(source_cfg());
  Trainer old_way(c, s1);
  {
    TrainState st = TrainState::initial(c);
    SaeParams p = init.params;
    const double s = cpu::estimate_scaling_factor(s1, c.d_in, c.batch_size, c.n_batches_for_norm_estimate);
    cpu::fold_scaling_factor(&p, 1.0 / s);
    st.scaling_factor = s;
    st.params = from_sae_params(p);
    st.data_position = s1.position();
    save_checkpoint(tmp.path / "step0", c, st);
    old_way.resume(tmp.path / "step0");
  }
  SyntheticSource s2(source_cfg());
  Trainer now(c, s2);
  now.start_from_sae(init);
  ASSERT_TRUE(now.state().scaling_factor.has_value());
  EXPECT_EQ(*now.state().scaling_factor, *old_way.state().scaling_factor);
  EXPECT_EQ(now.state().step, 0);
  EXPECT_EQ(now.state().data_position, old_way.state().data_position);
  expect_same_params(now.state().params, old_way.state().params, "at the start");
  // Folding the factor back gives the SAE that was given (to the rounding of s and 1/s).
  const Sae back = final_sae(c, now.state());
  EXPECT_ALLCLOSE(back.params.W_enc.data(), init.params.W_enc.data(), init.params.W_enc.size(), 1e-6, 1e-5);
  EXPECT_ALLCLOSE(back.params.W_dec.data(), init.params.W_dec.data(), init.params.W_dec.size(), 1e-6, 1e-5);
  EXPECT_EQ(now.run(), 20);
  EXPECT_EQ(old_way.run(), 20);
  expect_same_params(now.state().params, old_way.state().params, "after the run");
  EXPECT_EQ(now.state().data_position, old_way.state().data_position);

  // start_from checks the state's shapes against the config.
  TrainState wrong = TrainState::initial(c);
  wrong.params.b_enc.pop_back();
  SyntheticSource s3(source_cfg());
  Trainer t3(c, s3);
  EXPECT_THROW(t3.start_from(wrong), Error);
}

// The Trainer owns the checkpoints' timing: every checkpoint_every steps and at the end of the run;
// a checkpoint that cannot be written goes to on_checkpoint_error and training goes on.
TEST(TrainResume, TheTrainerOwnsTheCheckpointTiming) {
  test::TempDir tmp{"topksae_train_resume"};
  const TrainConfig c = train_cfg();  // 20 steps
  SyntheticSource s(source_cfg());
  TrainerOptions o;
  o.checkpoint_dir = tmp.path / "ck";
  o.checkpoint_every = 6;
  std::vector<int64_t> saved_at;
  o.on_step = [&](const StepMetrics& m) {
    TrainConfig ignored;
    if (fs::exists(tmp.path / "ck")) saved_at.push_back(load_checkpoint(tmp.path / "ck", &ignored).step);
    (void)m;
  };
  Trainer t(c, s, o);
  EXPECT_EQ(t.run(), 20);
  EXPECT_EQ(t.last_checkpoint_step(), 20) << "a finished run leaves a checkpoint at its end";
  TrainConfig loaded;
  EXPECT_EQ(load_checkpoint(tmp.path / "ck", &loaded).step, 20);
  ASSERT_FALSE(saved_at.empty());
  EXPECT_EQ(saved_at.front(), 6);
  EXPECT_EQ(std::set<int64_t>(saved_at.begin(), saved_at.end()), (std::set<int64_t>{6, 12, 18}));

  // Resuming from checkpoint_dir knows that checkpoint.
  SyntheticSource s2(source_cfg());
  Trainer r(c, s2, o);
  r.resume(tmp.path / "ck");
  EXPECT_EQ(r.last_checkpoint_step(), 20);

  // checkpoint_dir under a regular file: every save fails; each is reported, the run goes on.
  { std::ofstream(tmp.path / "file") << "x"; }
  SyntheticSource s3(source_cfg());
  TrainerOptions bad;
  bad.checkpoint_dir = tmp.path / "file" / "ck";
  bad.checkpoint_every = 5;
  std::vector<int64_t> kept;
  bad.on_checkpoint_error = [&](const std::string& error, int64_t kept_step) {
    EXPECT_FALSE(error.empty());
    kept.push_back(kept_step);
  };
  Trainer b(c, s3, bad);
  EXPECT_EQ(b.run(), 20);
  EXPECT_EQ(kept, (std::vector<int64_t>{-1, -1, -1, -1})) << "steps 5, 10, 15 and the end";
  EXPECT_FALSE(b.checkpoint());
  EXPECT_EQ(b.last_checkpoint_step(), -1);
  // Without the callback the error propagates.
  SyntheticSource s4(source_cfg());
  bad.on_checkpoint_error = nullptr;
  Trainer b2(c, s4, bad);
  EXPECT_ANY_THROW(b2.run());
}
