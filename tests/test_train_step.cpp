// The whole CPU step: initialisation, dead-latent and sparsity bookkeeping over several steps
// (against counts recomputed here from the selections), AuxK switching on once latents are dead,
// the sparsity-window log and reset, the logged metrics, and folding the scaling factor.
#include <algorithm>
#include <cmath>
#include <map>

#include "test_util.h"
#include "topksae/ops_cpu.h"
#include "topksae/train.h"

using namespace topksae;
using namespace topksae::test;

namespace {
// MATH.md's initial law, for either generator: rows of W_dec at norm 0.1, W_enc = W_dec^T exactly,
// zero biases, seeded; without decoder_init_norm, raw U(-sqrt(6/d_in), sqrt(6/d_in)).
template <typename InitF, typename InitD>
void expect_init_law(InitF init_f, InitD init_d) {
  TrainConfig c;
  c.d_in = 37;
  c.d_sae = 101;
  c.k = 5;
  c.seed = 3;
  Params<float> p = init_f(c);
  for (int64_t j = 0; j < c.d_sae; ++j) {
    double s = 0;
    for (int64_t i = 0; i < c.d_in; ++i) {
      const float w = p.W_dec[size_t(j * c.d_in + i)];
      s += double(w) * w;
      ASSERT_EQ(w, p.W_enc[size_t(i * c.d_sae + j)]);  // W_enc = W_dec^T exactly
    }
    EXPECT_NEAR(std::sqrt(s), 0.1, 1e-6);
  }
  for (float b : p.b_enc) EXPECT_EQ(b, 0.f);
  for (float b : p.b_dec) EXPECT_EQ(b, 0.f);
  // Same seed, same weights; another seed, others.
  EXPECT_EQ(init_f(c).W_dec, p.W_dec);
  c.seed = 4;
  EXPECT_NE(init_f(c).W_dec, p.W_dec);
  // Without decoder_init_norm: raw U(-sqrt(6/d_in), sqrt(6/d_in)), mean ~ 0, spread ~ bound/sqrt(3).
  c.decoder_init_norm.reset();
  Params<double> r = init_d(c);
  const double bound = std::sqrt(6.0 / 37);
  double mean = 0, sq = 0, mx = 0;
  for (double w : r.W_dec) mean += w, sq += w * w, mx = std::max(mx, std::abs(w));
  mean /= double(r.W_dec.size());
  sq /= double(r.W_dec.size());
  EXPECT_LE(mx, bound);
  EXPECT_GT(mx, 0.95 * bound);
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(std::sqrt(sq), bound / std::sqrt(3.0), 0.02);
}
}  // namespace

TEST(TrainInit, KaimingRowsAtInitNormAndTiedEncoder) {
  expect_init_law(cpu::init_params<float>, cpu::init_params<double>);
}

// The counter-based twin (what TrainStep's DeviceInit makes on the device): the same law, other
// numbers, and row j depends on (seed, j, d_in) alone, so a wider dictionary starts with the same
// first rows.
TEST(TrainInit, CounterInitSameLawOtherNumbersRowsIndependent) {
  expect_init_law(cpu::init_params_counter<float>, cpu::init_params_counter<double>);
  TrainConfig c;
  c.d_in = 37;
  c.d_sae = 101;
  c.k = 5;
  const Params<float> p = cpu::init_params_counter<float>(c);
  EXPECT_NE(p.W_dec, cpu::init_params<float>(c).W_dec);
  c.d_sae = 50;
  const Params<float> q = cpu::init_params_counter<float>(c);
  EXPECT_TRUE(std::equal(q.W_dec.begin(), q.W_dec.end(), p.W_dec.begin()));
}

TEST(TrainStep, BookkeepingOverSeveralSteps) {
  TrainConfig c;
  c.d_in = 12;
  c.d_sae = 150;  // many latents, few selections: some never fire
  c.k = 2;
  c.batch_size = 9;
  c.training_tokens = 9 * 50;
  c.dead_feature_window = 2;
  c.feature_sampling_window = 3;
  c.lr = 1e-3;
  c.seed = 8;
  TrainState st = TrainState::initial(c);
  cpu::TrainWorkspace ws;
  std::vector<int64_t> since(static_cast<size_t>(c.d_sae), 0), freq(static_cast<size_t>(c.d_sae), 0);
  int64_t n_frac = 0;
  for (int step = 0; step < 8; ++step) {
    auto x = randn(size_t(c.batch_size * c.d_in), 100 + step);
    const bool window = (step + 1) % 3 == 0;
    std::map<int64_t, int64_t> closed_freq;  // what the window log must report
    int64_t expect_dead_before = 0;
    for (int64_t s : since) expect_dead_before += s > 2;
    if (window) {
      std::fill(freq.begin(), freq.end(), 0);
      n_frac = 0;
    }
    const StepMetrics m = cpu::train_step(c, &st, x.data(), c.batch_size, &ws);
    // AuxK runs exactly when the counters before this step had dead latents.
    EXPECT_EQ(ws.fwd.n_dead, expect_dead_before) << "step " << step;
    EXPECT_EQ(m.auxiliary_reconstruction_loss > 0, expect_dead_before > 0) << "step " << step;
    EXPECT_EQ(m.has_sparsity, window);
    // Recompute the counters from the selections.
    for (auto& s : since) ++s;
    int64_t nnz = 0;
    for (int64_t e = 0; e < c.batch_size * c.k; ++e)
      if (ws.fwd.z[size_t(e)] != 0.f) {
        since[size_t(ws.fwd.idx[size_t(e)])] = 0;
        ++freq[size_t(ws.fwd.idx[size_t(e)])];
        ++nnz;
      }
    n_frac += c.batch_size;
    EXPECT_EQ(st.stats.since_fired, since) << "step " << step;
    EXPECT_EQ(st.stats.act_freq, freq) << "step " << step;
    EXPECT_EQ(st.stats.n_frac_active, n_frac);
    EXPECT_EQ(st.step, step + 1);
    EXPECT_EQ(m.step, step);
    EXPECT_EQ(m.n_training_samples, (step + 1) * c.batch_size);
    EXPECT_DOUBLE_EQ(m.l0, double(nnz) / double(c.batch_size));
    int64_t dead_after = 0;
    double mean_since = 0;
    for (int64_t s : since) dead_after += s > 2, mean_since += double(s);
    EXPECT_EQ(m.dead_features, dead_after);
    EXPECT_DOUBLE_EQ(m.mean_passes_since_fired, mean_since / double(c.d_sae));
    EXPECT_DOUBLE_EQ(m.current_learning_rate, 1e-3);
    EXPECT_GT(m.mse_loss, 0);
    EXPECT_DOUBLE_EQ(m.overall_loss, m.mse_loss + m.auxiliary_reconstruction_loss);
    EXPECT_LE(m.explained_variance, 1.0);
  }
  // By step 3 the never-fired latents are dead (since_fired 3 > window 2).
  int64_t never = 0;
  for (int64_t s : since) never += s == 8;
  EXPECT_GT(never, 0);
}

TEST(TrainStep, SparsityWindowLogsTheClosedWindow) {
  TrainConfig c;
  c.d_in = 6;
  c.d_sae = 40;
  c.k = 3;
  c.batch_size = 5;
  c.training_tokens = 100;
  c.feature_sampling_window = 2;
  TrainState st = TrainState::initial(c);
  cpu::TrainWorkspace ws;
  auto x = randn(size_t(c.batch_size * c.d_in), 1);
  cpu::train_step(c, &st, x.data(), c.batch_size, &ws);
  const SparsityStats before = st.stats;
  const StepMetrics m = cpu::train_step(c, &st, x.data(), c.batch_size, &ws);  // step 1: (1+1) % 2 == 0
  ASSERT_TRUE(m.has_sparsity);
  double sum = 0;
  int64_t b5 = 0, b6 = 0;
  for (size_t j = 0; j < before.act_freq.size(); ++j) {
    const double dens = double(before.act_freq[j]) / double(before.n_frac_active);
    sum += std::log10(dens + 1e-10);
    b5 += dens < 1e-5;
    b6 += dens < 1e-6;
  }
  EXPECT_NEAR(m.mean_log10_feature_sparsity, sum / double(c.d_sae), 1e-5);
  EXPECT_EQ(m.below_1e_5, b5);
  EXPECT_EQ(m.below_1e_6, b6);
  EXPECT_GT(b5, 0);  // 40 latents, 15 selections: some never fired
  EXPECT_EQ(st.stats.n_frac_active, c.batch_size);  // reset, then this step's batch
  // named() carries the sae_lens keys.
  auto named = m.named();
  std::map<std::string, double> byname(named.begin(), named.end());
  for (const char* key : {"losses/overall_loss", "losses/mse_loss", "losses/auxiliary_reconstruction_loss", "metrics/l0",
                          "metrics/explained_variance", "sparsity/dead_features", "sparsity/mean_passes_since_fired",
                          "details/current_learning_rate", "details/n_training_samples",
                          "metrics/mean_log10_feature_sparsity", "sparsity/below_1e-5", "sparsity/below_1e-6"})
    EXPECT_TRUE(byname.count(key)) << key;
  EXPECT_EQ(byname["details/n_training_samples"], 10.0);
}

TEST(TrainStep, LossDecreasesOnAFixedBatch) {
  TrainConfig c;
  c.d_in = 16;
  c.d_sae = 64;
  c.k = 4;
  c.batch_size = 32;
  c.training_tokens = 32 * 100;
  c.lr = 1e-2;
  TrainState st = TrainState::initial(c);
  cpu::TrainWorkspace ws;
  auto x = randn(size_t(c.batch_size * c.d_in), 5);
  const double first = cpu::train_step(c, &st, x.data(), c.batch_size, &ws).mse_loss;
  double last = first;
  for (int i = 0; i < 60; ++i) last = cpu::train_step(c, &st, x.data(), c.batch_size, &ws).mse_loss;
  EXPECT_LT(last, 0.7 * first);
}

TEST(TrainScaling, FoldingKeepsRawEncodeDecode) {
  TrainConfig c;
  c.d_in = 19;
  c.d_sae = 70;
  c.k = 6;
  c.normalize_activations = Normalize::expected_average_only_in;
  const int64_t B = 11;
  Sae s = random_sae(c.d_in, c.d_sae, c.k, 42);
  TrainState st;
  st.params = from_sae_params(s.params);
  st.scaling_factor = 2.75;
  auto x = randn(size_t(B * c.d_in), 43, 3.f);
  // What training sees: codes and reconstruction of s*x.
  TrainForward<float> f;
  cpu::train_forward(c, st.params, x.data(), B, *st.scaling_factor, nullptr, &f);
  // The folded SAE on raw x.
  const Sae folded = final_sae(c, st);
  EXPECT_EQ(folded.cfg.normalize, Normalize::none);
  const cpu::TopKCodes codes = cpu::encode_topk(folded, x.data(), B);
  EXPECT_EQ(codes.indices, f.idx);
  EXPECT_ALLCLOSE(codes.values.data(), f.z.data(), f.z.size(), 1e-5, 1e-4);
  std::vector<float> out(static_cast<size_t>(B * c.d_in));
  cpu::decode_topk(folded, codes, out.data());
  std::vector<float> want(f.xhat);
  for (float& v : want) v /= 2.75f;
  EXPECT_ALLCLOSE(out.data(), want.data(), want.size(), 1e-5, 1e-4);
  EXPECT_NONZERO(out);
}

TEST(TrainScaling, FoldingDecoderNormsKeepsRawEncodeDecode) {
  // rescale_acts_by_decoder_norm: the final save folds the scaling factor, then the decoder norms;
  // the result is an ordinary TopK SAE that selects and reconstructs as training did.
  TrainConfig c;
  c.d_in = 17;
  c.d_sae = 60;
  c.k = 5;
  c.normalize_activations = Normalize::expected_average_only_in;
  c.rescale_acts_by_decoder_norm = true;
  const int64_t B = 9;
  Sae s = random_sae(c.d_in, c.d_sae, c.k, 52);
  for (int64_t j = 0; j < c.d_sae; ++j)
    for (int64_t i = 0; i < c.d_in; ++i) s.params.W_dec[size_t(j * c.d_in + i)] *= 0.3f + 0.25f * float(j % 5);
  TrainState st;
  st.params = from_sae_params(s.params);
  st.scaling_factor = 1.7;
  auto x = randn(size_t(B * c.d_in), 53, 2.f);
  TrainForward<float> f;
  cpu::train_forward(c, st.params, x.data(), B, *st.scaling_factor, nullptr, &f);
  const Sae folded = final_sae(c, st);
  for (int64_t j = 0; j < c.d_sae; ++j) {
    double s2 = 0;
    for (int64_t i = 0; i < c.d_in; ++i) s2 += double(folded.params.W_dec[size_t(j * c.d_in + i)]) * folded.params.W_dec[size_t(j * c.d_in + i)];
    EXPECT_NEAR(std::sqrt(s2), 1.0, 1e-5);
  }
  const cpu::TopKCodes codes = cpu::encode_topk(folded, x.data(), B);
  EXPECT_EQ(codes.indices, f.idx);
  std::vector<float> out(static_cast<size_t>(B * c.d_in));
  cpu::decode_topk(folded, codes, out.data());
  std::vector<float> want(f.xhat);
  for (float& v : want) v /= 1.7f;
  EXPECT_ALLCLOSE(out.data(), want.data(), want.size(), 1e-5, 1e-4);
  EXPECT_NONZERO(out);
}

TEST(TrainScaling, EstimateIsSqrtDinOverMeanNorm) {
  // A source whose every row has norm 2: s = sqrt(d_in) / 2.
  struct Const : ActivationSource {
    int64_t pos = 0;
    int64_t d_in() const override { return 4; }
    int64_t next(float* out, int64_t rows) override {
      for (int64_t r = 0; r < rows; ++r)
        for (int i = 0; i < 4; ++i) out[r * 4 + i] = ((pos + r + i) % 2 ? 1.f : -1.f);
      pos += rows;
      return rows;
    }
    std::string position() const override { return std::to_string(pos); }
    void seek(const std::string& p) override { pos = std::stoll(p); }
    std::string describe() const override { return "const"; }
  } src;
  EXPECT_DOUBLE_EQ(cpu::estimate_scaling_factor(src, 4, 3, 5), 1.0);
  EXPECT_EQ(src.pos, 15);  // the estimate consumed its batches
}
