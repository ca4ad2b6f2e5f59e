// DeadBound (src/train/dead_bound.h): the host's bound on a coming step's dead count, which sizes
// the CUDA step's AuxK GEMMs, must never be below the true count. Simulated since_fired counters
// with random firing, the bound read with the lag the CUDA step uses.
#include <gtest/gtest.h>

#include <random>

#include "train/dead_bound.h"

namespace topksae::test {
namespace {

using train_detail::DeadBound;

TEST(DeadBound, NeverBelowTheTrueDeadCount) {
  const int64_t n = 503, window = 40;
  std::mt19937_64 rng(17);
  std::vector<int64_t> since(static_cast<size_t>(n));
  for (auto& v : since) v = int64_t(rng() % 60);  // some dead from the start
  const std::vector<int64_t> since0 = since;
  DeadBound bound(since, window, /*first_step=*/0);
  // near counts of the finished steps, delivered to the tracker late (as metrics come back).
  std::vector<int64_t> near_after;
  int64_t slack = 0, steps_with_dead = 0;
  for (int64_t t = 0; t < 400; ++t) {
    // The host may have seen anything up to t-1; deliver only what it must wait for.
    while (!bound.can_bound(t)) {
      const int64_t s = bound.known_step() + 1;
      ASSERT_LT(s, t) << "the tracker asks for a step that has not run";
      bound.observe(s, near_after[size_t(s)]);
    }
    const int64_t b = bound.bound(t);
    int64_t dead = 0;
    for (int64_t v : since) dead += v > window;
    ASSERT_GE(b, dead) << "step " << t;
    // The bound is the count of the newest step the tracker saw (or of the start state).
    const int64_t s = bound.known_step();
    ASSERT_EQ(b, s < 0 ? DeadBound::count_near(since0, window) : near_after[size_t(s)]) << "step " << t;
    slack += b - dead;
    steps_with_dead += dead > 0;
    // The step: each latent fires with a probability that varies by latent (some never fire).
    for (int64_t j = 0; j < n; ++j) {
      const double p = (j % 5 == 0) ? 0.0 : 0.02 * double(j % 7);
      const bool fired = std::uniform_real_distribution<double>(0, 1)(rng) < p;
      since[size_t(j)] = fired ? 0 : since[size_t(j)] + 1;
    }
    near_after.push_back(DeadBound::count_near(since, window));
  }
  EXPECT_GT(steps_with_dead, 300) << "the simulation must have dead latents to bound";
  // Useful, not merely safe (n would be safe): a few latents of slack on average.
  EXPECT_LT(double(slack) / 400.0, 0.05 * double(n)) << "mean slack";
}

TEST(DeadBound, AsksForTheStepLagBehind) {
  std::vector<int64_t> since(10, 0);
  DeadBound bound(since, 100, /*first_step=*/7);
  EXPECT_EQ(bound.known_step(), 6);
  for (int64_t t = 7; t <= 7 + DeadBound::kLag; ++t) EXPECT_TRUE(bound.can_bound(t)) << t;
  EXPECT_FALSE(bound.can_bound(8 + DeadBound::kLag));
  EXPECT_EQ(bound.bound(8 + DeadBound::kLag), -1);
  bound.observe(7, 3);
  EXPECT_TRUE(bound.can_bound(8 + DeadBound::kLag));
  EXPECT_EQ(bound.bound(8 + DeadBound::kLag), 3);
  bound.observe(5, 9);  // an older count never replaces a newer one
  EXPECT_EQ(bound.bound(8), 3);
}

TEST(DeadBound, CountsWithinTheLagOfTheWindow) {
  const int64_t w = 10;
  std::vector<int64_t> since = {0, w - DeadBound::kLag, w - DeadBound::kLag + 1, w, w + 1, 1000};
  EXPECT_EQ(DeadBound::count_near(since, w), 4);
  // A window shorter than the lag: everything counts.
  EXPECT_EQ(DeadBound::count_near(since, 2), int64_t(since.size()));
}

}  // namespace
}  // namespace topksae::test
