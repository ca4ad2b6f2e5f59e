// Evaluation metrics against values worked out by hand on a 3-token example, and the density
// histogram's binning.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "topksae/error.h"
#include "topksae/metrics.h"

namespace topksae {
namespace {

cpu::TopKCodes hand_codes() {
  cpu::TopKCodes c;
  c.rows = 3;
  c.k = 2;
  c.d_sae = 4;
  c.indices = {0, 2, 1, 3, 0, 1};
  c.values = {1.f, 0.f, 2.f, 0.5f, 3.f, 0.f};  // a selected latent with value 0 does not count
  return c;
}

TEST(Metrics, HandWorkedExample) {
  const float x[] = {1, 0, 0, 2, 3, 1};     // [3, 2]
  const float xhat[] = {1, 1, 0, 1, 2, 1};  // [3, 2]; residual norms^2 are 1, 1, 1
  MetricsAccumulator acc(2, 4);
  acc.add(x, xhat, hand_codes());
  EvalMetrics m = acc.result(10);
  EXPECT_EQ(m.tokens, 3);
  EXPECT_NEAR(m.l0, 4.0 / 3, 1e-12);
  EXPECT_NEAR(m.l1, 6.5 / 3, 1e-12);
  EXPECT_NEAR(m.mse, 0.5, 1e-12);
  EXPECT_NEAR(m.saelens_mse, 1.0, 1e-12);
  // mean(x) = (4/3, 1); sum ||x - mean||^2 = 10/9 + 25/9 + 25/9 = 20/3
  EXPECT_NEAR(m.explained_variance, 1 - 3 / (20.0 / 3), 1e-12);
  EXPECT_NEAR(m.saelens_explained_variance_legacy, (0.1 + 0.64 + 0.64) / 3, 1e-12);
  EXPECT_NEAR(m.cosine_similarity, (1 / std::sqrt(2.0) + 1 + 7 / std::sqrt(50.0)) / 3, 1e-12);
  EXPECT_NEAR(m.l2_ratio, (std::sqrt(2.0) + 0.5 + std::sqrt(0.5)) / 3, 1e-12);
  EXPECT_NEAR(m.l2_norm_in, (1 + 2 + std::sqrt(10.0)) / 3, 1e-12);
  EXPECT_NEAR(m.relative_reconstruction_bias, 8.0 / 10.0, 1e-12);
  EXPECT_EQ(m.dead, 1);  // latent 2 was selected once, with value 0: it never fired
  ASSERT_EQ(m.log10_density.size(), 4u);
  EXPECT_NEAR(m.log10_density[0], std::log10(2.0 / 3), 1e-6);
  EXPECT_NEAR(m.log10_density[2], -10.0, 1e-6);
  EXPECT_EQ(m.histogram.never_fired, 1);
  int64_t total = 0;
  for (auto c : m.histogram.counts) total += c;
  EXPECT_EQ(total, 4);
  EXPECT_EQ(m.histogram.counts[0], 1);  // the dead latent, in [-10, -9)
  EXPECT_EQ(m.histogram.counts[9], 3);  // densities 2/3, 1/3, 1/3: log10 in [-1, 0)
}

TEST(Metrics, BatchesAccumulateLikeOne) {
  const float x[] = {1, 0, 0, 2, 3, 1};
  const float xhat[] = {1, 1, 0, 1, 2, 1};
  cpu::TopKCodes all = hand_codes(), a, b;
  a = all;
  a.rows = 1;
  a.indices.resize(2);
  a.values.resize(2);
  b = all;
  b.rows = 2;
  b.indices.erase(b.indices.begin(), b.indices.begin() + 2);
  b.values.erase(b.values.begin(), b.values.begin() + 2);
  MetricsAccumulator one(2, 4), two(2, 4);
  one.add(x, xhat, all);
  two.add(x, xhat, a);
  two.add(x + 2, xhat + 2, b);
  EvalMetrics m1 = one.result(), m2 = two.result();
  EXPECT_NEAR(m1.explained_variance, m2.explained_variance, 1e-12);  // global mean, not per batch
  EXPECT_NEAR(m1.mse, m2.mse, 1e-12);
  EXPECT_NEAR(m1.l0, m2.l0, 1e-12);
  EXPECT_GT(m1.mse, 0.0);
}

TEST(Metrics, JsonHasTheClearAndTheSaeLensNames) {
  const float x[] = {1, 0, 0, 2, 3, 1};
  const float xhat[] = {1, 1, 0, 1, 2, 1};
  MetricsAccumulator acc(2, 4);
  acc.add(x, xhat, hand_codes());
  auto j = nlohmann::json::parse(acc.result().to_json());
  EXPECT_DOUBLE_EQ(j["mse"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(j["saelens_mse"].get<double>(), 1.0);
  EXPECT_EQ(j["feature_density_histogram"]["counts"].size(), 20u);
  EXPECT_EQ(j["dead_features"].get<int>(), 1);
}

TEST(Metrics, EmptyInputIsAnError) {
  MetricsAccumulator acc(2, 4);
  EXPECT_THROW(acc.result(), Error);
}

}  // namespace
}  // namespace topksae
