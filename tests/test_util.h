// Shared test helpers: seeded inputs, tie-free data, tolerances, the non-zero guard, GPU skips.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include "topksae/device.h"
#include "topksae/sae.h"

namespace topksae::test {

inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A random SAE whose weights are N(0, scale^2): W_enc, W_dec, b_enc, b_dec all non-zero.
inline Sae random_sae(int64_t d_in, int64_t d_sae, int64_t k, uint64_t seed, Normalize norm = Normalize::none,
                      float scale = 0.2f) {
  Sae s;
  s.cfg.d_in = d_in;
  s.cfg.d_sae = d_sae;
  s.cfg.k = k;
  s.cfg.normalize = norm;
  s.params.W_enc = randn(size_t(d_in * d_sae), seed + 1, scale);
  s.params.b_enc = randn(size_t(d_sae), seed + 2, 0.05f);
  s.params.W_dec = randn(size_t(d_sae * d_in), seed + 3, scale);
  s.params.b_dec = randn(size_t(d_in), seed + 4, 0.1f);
  return s;
}

// Largest |a-b| / (atol + rtol*|b|); <= 1 means every element is within tolerance. NaN -> inf.
inline double max_tol_ratio(const float* a, const float* b, size_t n, double atol, double rtol) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])) / (atol + rtol * std::abs(double(b[i]))));
  }
  return worst;
}

#define EXPECT_ALLCLOSE(a, b, n, atol, rtol) \
  EXPECT_LE(::topksae::test::max_tol_ratio((a), (b), (n), (atol), (rtol)), 1.0) << "arrays differ beyond atol/rtol"

// Guard so an all-zero (or empty) output can never pass a comparison.
inline double l2(const float* a, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += double(a[i]) * a[i];
  return std::sqrt(s);
}
#define EXPECT_NONZERO(v) EXPECT_GT(::topksae::test::l2((v).data(), (v).size()), 0.0) << #v " is all zero"

// A fresh temporary directory for the running test (named after prefix, the test, the pid and a
// per-process serial number, so neither parallel ctest processes nor two TempDirs in one test ever
// share one), removed with everything in it afterwards.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix) {
    static std::atomic<int> serial{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = std::filesystem::temp_directory_path() / (prefix + "_" + info->test_suite_name() + "_" + info->name() +
                                                     "_" + std::to_string(::getpid()) + "_" + std::to_string(serial++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// Skip the current test (visibly) when no CUDA device can run it.
#define SKIP_WITHOUT_GPU()                                                              \
  do {                                                                                  \
    if (!::topksae::cuda_available()) GTEST_SKIP() << ::topksae::cuda_unavailable_reason(); \
  } while (0)

}  // namespace topksae::test
