// Optimiser pieces against closed forms worked out here: global gradient clipping, torch Adam with
// bias correction, every learning-rate schedule of sae_lens's get_lr_scheduler, and the config
// validation (including sae_lens's "decay from 0 to 0" error).
#include <cmath>
#include <numbers>

#include "test_util.h"
#include "topksae/error.h"
#include "topksae/train.h"

using namespace topksae;
using namespace topksae::test;

namespace {

Params<double> filled(int64_t d, int64_t n, double v) {
  Params<double> p = Params<double>::zeros(d, n);
  for (auto* q : {&p.W_enc, &p.b_enc, &p.W_dec, &p.b_dec}) std::fill(q->begin(), q->end(), v);
  return p;
}

TrainConfig sched(LrScheduler s, int64_t total, int64_t warm, int64_t decay, std::optional<double> lr_end = {},
                  int64_t cycles = 1) {
  TrainConfig c;
  c.d_in = 4;
  c.d_sae = 8;
  c.k = 2;
  c.lr = 2.0;
  c.batch_size = 10;
  c.training_tokens = total * 10 + 7;  // a partial batch does not count: T = total
  c.lr_scheduler_name = s;
  c.lr_warm_up_steps = warm;
  c.lr_decay_steps = decay;
  c.lr_end = lr_end;
  c.n_restart_cycles = cycles;
  c.validate();
  return c;
}

}  // namespace

TEST(TrainClip, ScalesToUnitNormAboveOne) {
  const int64_t d = 3, n = 5;  // 15 + 5 + 15 + 3 = 38 elements
  Params<double> g = filled(d, n, 0.5);
  const double N = 0.5 * std::sqrt(38.0);
  EXPECT_DOUBLE_EQ(cpu::clip_grad_norm(&g), N);
  const double c = 1.0 / (N + 1e-6);
  for (auto* q : {&g.W_enc, &g.b_enc, &g.W_dec, &g.b_dec})
    for (double v : *q) EXPECT_DOUBLE_EQ(v, 0.5 * c);
}

TEST(TrainClip, LeavesSmallGradientsAlone) {
  Params<double> g = filled(3, 5, 0.01);
  g.b_dec[1] = -0.02;
  const double N = std::sqrt(37 * 1e-4 + 4e-4);
  EXPECT_NEAR(cpu::clip_grad_norm(&g), N, 1e-15);
  EXPECT_EQ(g.W_enc[0], 0.01);
  EXPECT_EQ(g.b_dec[1], -0.02);
}

TEST(TrainAdam, TwoStepsMatchHandComputation) {
  Params<double> p = filled(1, 1, 1.0), m = filled(1, 1, 0.0), v = filled(1, 1, 0.0);
  Params<double> g = filled(1, 1, 0.5);
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  cpu::adam_step(&p, &m, &v, g, lr, b1, b2, eps, 1);
  // t=1: m = 0.05, v = 0.00025, m_hat = 0.5, sqrt(v_hat) = 0.5.
  double p1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8);
  EXPECT_NEAR(m.W_enc[0], 0.05, 1e-15);
  EXPECT_NEAR(v.W_enc[0], 0.00025, 1e-16);
  EXPECT_NEAR(p.W_enc[0], p1, 1e-15);
  g = filled(1, 1, -0.2);
  cpu::adam_step(&p, &m, &v, g, lr, b1, b2, eps, 2);
  // t=2: m = 0.9*0.05 - 0.1*0.2 = 0.025; v = 0.999*0.00025 + 0.001*0.04 = 0.00028975;
  // bias corrections 1-0.81 = 0.19 and 1-0.998001 = 0.001999.
  const double p2 = p1 - (0.1 / 0.19) * 0.025 / (std::sqrt(0.00028975) / std::sqrt(0.001999) + 1e-8);
  EXPECT_NEAR(m.b_dec[0], 0.025, 1e-15);
  EXPECT_NEAR(v.b_dec[0], 0.00028975, 1e-16);
  EXPECT_NEAR(p.b_dec[0], p2, 1e-14);
  EXPECT_NE(p2, p1);
}

TEST(TrainAdam, ConstantGradientMovesLrPerStep) {
  // With a constant gradient the bias-corrected moments are exactly g and g^2, so every step moves
  // by lr * g / (|g| + eps) regardless of t.
  Params<double> p = filled(2, 3, 0.0), m = filled(2, 3, 0.0), v = filled(2, 3, 0.0);
  Params<double> g = filled(2, 3, -3.0);
  for (int t = 1; t <= 5; ++t) cpu::adam_step(&p, &m, &v, g, 0.01, 0.9, 0.999, 1e-8, t);
  for (double x : p.W_dec) EXPECT_NEAR(x, 5 * 0.01 * 3.0 / (3.0 + 1e-8), 1e-13);
  // Float path agrees.
  Params<float> pf = Params<float>::zeros(2, 3), mf = pf, vf = pf, gf = pf;
  std::fill(gf.W_enc.begin(), gf.W_enc.end(), -3.f);
  for (int t = 1; t <= 5; ++t) cpu::adam_step(&pf, &mf, &vf, gf, 0.01, 0.9, 0.999, 1e-8, t);
  EXPECT_NEAR(pf.W_enc[0], 0.05, 1e-6);
  EXPECT_EQ(pf.b_enc[0], 0.f);  // zero gradient, zero moments: no movement
}

TEST(TrainLr, ConstantIsFlat) {
  TrainConfig c = sched(LrScheduler::constant, 10, 0, 0);
  for (int t = 0; t <= 10; ++t) EXPECT_DOUBLE_EQ(cpu::lr_at(c, t), 2.0);
}

TEST(TrainLr, WarmUpIsLinearFromLrOverW) {
  TrainConfig c = sched(LrScheduler::constant, 10, 4, 0);
  // start factor 1/4, reaching 1 after W-1 = 3 steps.
  const double want[] = {0.5, 1.0, 1.5, 2.0, 2.0, 2.0};
  for (int t = 0; t < 6; ++t) EXPECT_NEAR(cpu::lr_at(c, t), want[t], 1e-15) << "t=" << t;
  TrainConfig one = sched(LrScheduler::constant, 10, 1, 0);
  EXPECT_DOUBLE_EQ(cpu::lr_at(one, 0), 2.0);
}

TEST(TrainLr, CosineAnnealingToLrEnd) {
  TrainConfig c = sched(LrScheduler::cosineannealing, 10, 0, 0, 0.2);
  EXPECT_DOUBLE_EQ(cpu::lr_at(c, 0), 2.0);
  EXPECT_NEAR(cpu::lr_at(c, 5), 0.2 + 1.8 * 0.5, 1e-15);  // cos(pi/2) = 0
  EXPECT_NEAR(cpu::lr_at(c, 9), 0.2 + 1.8 * (1 + std::cos(0.9 * std::numbers::pi)) / 2, 1e-15);
  EXPECT_NEAR(cpu::lr_at(c, 10), 0.2, 1e-15);
  // lr_end defaults to lr / 10.
  TrainConfig d = sched(LrScheduler::cosineannealing, 10, 0, 0);
  EXPECT_NEAR(cpu::lr_at(d, 5), 0.2 + 1.8 * 0.5, 1e-15);
  // After a warm-up of 2 the cosine runs over M = 8 steps starting at lr.
  TrainConfig w = sched(LrScheduler::cosineannealing, 10, 2, 0, 0.2);
  EXPECT_NEAR(cpu::lr_at(w, 0), 1.0, 1e-15);
  EXPECT_NEAR(cpu::lr_at(w, 2), 2.0, 1e-15);
  EXPECT_NEAR(cpu::lr_at(w, 6), 0.2 + 1.8 * 0.5, 1e-15);
}

TEST(TrainLr, WarmRestartsRepeatEveryPeriod) {
  // M = 12, 3 cycles: period 4.
  TrainConfig c = sched(LrScheduler::cosineannealingwarmrestarts, 12, 0, 0, 0.4, 3);
  const double mid = 0.4 + 1.6 * 0.5;
  const double q1 = 0.4 + 1.6 * (1 + std::cos(std::numbers::pi / 4)) / 2;
  const double want[] = {2.0, q1, mid, 0.4 + 1.6 * (1 + std::cos(3 * std::numbers::pi / 4)) / 2, 2.0, q1, mid};
  for (int t = 0; t < 7; ++t) EXPECT_NEAR(cpu::lr_at(c, t), want[t], 1e-15) << "t=" << t;
  EXPECT_NEAR(cpu::lr_at(c, 8), 2.0, 1e-15);
  // Period = M // cycles: M = 13, 3 cycles -> period 4 still.
  TrainConfig d = sched(LrScheduler::cosineannealingwarmrestarts, 13, 0, 0, 0.4, 3);
  EXPECT_NEAR(cpu::lr_at(d, 4), 2.0, 1e-15);
}

TEST(TrainLr, LinearDecayFromLrEnd) {
  // Constant scheduler: the decay starts at lr (lr_end is ignored), T = 10, D = 4.
  TrainConfig c = sched(LrScheduler::constant, 10, 0, 4, 0.5);
  EXPECT_DOUBLE_EQ(cpu::lr_at(c, 5), 2.0);
  EXPECT_DOUBLE_EQ(cpu::lr_at(c, 6), 2.0);
  EXPECT_NEAR(cpu::lr_at(c, 7), 1.5, 1e-15);
  EXPECT_NEAR(cpu::lr_at(c, 9), 0.5, 1e-15);
  EXPECT_NEAR(cpu::lr_at(c, 10), 0.0, 1e-15);
  // Cosine with warm-up 2, decay 3, T = 10: M = 5; the decay starts from lr_end = 0.6.
  TrainConfig d = sched(LrScheduler::cosineannealing, 10, 2, 3, 0.6);
  EXPECT_NEAR(cpu::lr_at(d, 0), 1.0, 1e-15);
  EXPECT_NEAR(cpu::lr_at(d, 2), 2.0, 1e-15);
  EXPECT_NEAR(cpu::lr_at(d, 6), 0.6 + 1.4 * (1 + std::cos(0.8 * std::numbers::pi)) / 2, 1e-15);
  EXPECT_NEAR(cpu::lr_at(d, 7), 0.6, 1e-15);
  EXPECT_NEAR(cpu::lr_at(d, 8), 0.4, 1e-15);
  EXPECT_NEAR(cpu::lr_at(d, 9), 0.2, 1e-15);
}

TEST(TrainLr, DecayToZeroIsRejectedLikeSaeLens) {
  try {
    sched(LrScheduler::cosineannealing, 10, 0, 3, 0.0);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("this would decay from 0 to 0 and be a waste"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sched(LrScheduler::cosineannealingwarmrestarts, 10, 0, 3, 0.0), Error);
  // sae_lens replaces lr_end by lr for the constant scheduler before it checks.
  EXPECT_NO_THROW(sched(LrScheduler::constant, 10, 0, 3, 0.0));
  // No decay: lr_end 0 is fine for cosine (anneal to 0).
  TrainConfig c = sched(LrScheduler::cosineannealing, 10, 0, 0, 0.0);
  EXPECT_NEAR(cpu::lr_at(c, 10), 0.0, 1e-15);
}

TEST(TrainConfigTest, ValidateNamesTheField) {
  auto expect_msg = [](TrainConfig c, const std::string& needle) {
    try {
      c.validate();
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  TrainConfig ok = sched(LrScheduler::constant, 10, 0, 0);
  TrainConfig c = ok;
  c.rescale_acts_by_decoder_norm = true;
  expect_msg(c, "rescale_acts_by_decoder_norm");
  c = ok;
  c.normalize_activations = Normalize::layer_norm;
  expect_msg(c, "normalize_activations");
  c = ok;
  c.lr_warm_up_steps = 8;
  c.lr_decay_steps = 3;
  expect_msg(c, "exceed the total");
  c = ok;
  c.training_tokens = 5;
  expect_msg(c, "training_tokens");
  c = ok;
  c.k = 9;
  expect_msg(c, "k must be");
  EXPECT_THROW(lr_scheduler_from_name("linear"), Error);
  EXPECT_EQ(lr_scheduler_from_name("CosineAnnealing"), LrScheduler::cosineannealing);
}

TEST(TrainConfigTest, JsonRoundTrip) {
  TrainConfig c = sched(LrScheduler::cosineannealingwarmrestarts, 30, 3, 4, 0.125, 2);
  c.normalize_activations = Normalize::expected_average_only_in;
  c.decoder_init_norm.reset();
  c.seed = 1234567890123ull;
  c.aux_loss_coefficient = 0.25;
  const TrainConfig r = train_config_from_json(train_config_to_json(c));
  EXPECT_EQ(train_config_to_json(r), train_config_to_json(c));
  EXPECT_EQ(r.seed, c.seed);
  EXPECT_FALSE(r.decoder_init_norm.has_value());
  EXPECT_EQ(r.lr_end, 0.125);
  EXPECT_THROW(train_config_from_json(R"({"d_in": 4, "learning_rate": 1})"), Error);
  EXPECT_THROW(train_config_from_json(R"({"d_in": "four"})"), Error);
}
