// Helpers for the CUDA twin tests: device copies of host vectors and back. Only included by
// tests/test_cuda_*.cpp under TOPKSAE_HAS_CUDA.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "topksae/buffer.h"
#include "topksae/device.h"

namespace topksae::test {

// A device array holding a copy of a host vector (or n uninitialised elements).
template <typename T>
struct DevVec {
  DeviceBuffer buf;
  size_t n = 0;
  explicit DevVec(size_t count) : buf(count == 0 ? 16 : count * sizeof(T)), n(count) {}
  explicit DevVec(const std::vector<T>& v) : DevVec(v.size()) {
    detail::copy_bytes(buf.data(), Device::cuda, v.data(), Device::cpu, v.size() * sizeof(T));
  }
  T* p() { return static_cast<T*>(buf.data()); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    detail::copy_bytes(v.data(), Device::cpu, buf.data(), Device::cuda, n * sizeof(T));
    return v;
  }
};

// Rows of n distinct values (a shuffled ramp, step 1e-3 around 0): no ties anywhere.
inline std::vector<float> tie_free_rows(int64_t B, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> h(static_cast<size_t>(B * n));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t b = 0; b < B; ++b) {
    std::iota(perm.begin(), perm.end(), int64_t(0));
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t j = 0; j < n; ++j) h[size_t(b * n + j)] = float(double(perm[size_t(j)] - n / 2) * 1e-3);
  }
  return h;
}

}  // namespace topksae::test
