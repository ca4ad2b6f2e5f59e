// Helpers for the per-phase tests of the CUDA training step (tests/test_cuda_<phase>.cpp): a
// device StepRecord (metrics + control values) and the flat parameter layout of the step. Only
// included under TOPKSAE_HAS_CUDA.
#pragma once
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cuda_test_util.h"
#include "topksae/train.h"
#include "train/train_ops.h"

namespace topksae::test {

// One step's device record, zeroed, with its control values set from the host.
struct DevRecord {
  DevVec<cuda::train::StepRecord> rec;
  explicit DevRecord(const cuda::train::StepControl& c = {}) : rec(host(c)) {}
  static std::vector<cuda::train::StepRecord> host(const cuda::train::StepControl& c) {
    std::vector<cuda::train::StepRecord> h(1);
    std::memset(static_cast<void*>(h.data()), 0, sizeof(h[0]));
    h[0].control = c;
    return h;
  }
  cuda::train::DevMetrics* M() { return &rec.p()->metrics; }
  cuda::train::StepControl* C() { return &rec.p()->control; }
  cuda::train::StepRecord get() const { return rec.get()[0]; }
};

// [W_enc | b_enc | W_dec | b_dec], the layout of TrainStep's parameter, gradient and moment arrays.
inline std::vector<float> flat(const Params<float>& p) {
  std::vector<float> v;
  for (const auto* a : {&p.W_enc, &p.b_enc, &p.W_dec, &p.b_dec}) v.insert(v.end(), a->begin(), a->end());
  return v;
}
inline Params<float> unflat(const std::vector<float>& v, int64_t d, int64_t n) {
  Params<float> p;
  auto at = v.begin();
  for (auto [a, len] : {std::pair{&p.W_enc, d * n}, {&p.b_enc, n}, {&p.W_dec, n * d}, {&p.b_dec, d}}) {
    a->assign(at, at + len);
    at += len;
  }
  return p;
}
inline Params<float> random_params(int64_t d, int64_t n, uint64_t seed, float scale = 0.2f) {
  Params<float> p;
  p.W_enc = randn(size_t(d * n), seed + 1, scale);
  p.b_enc = randn(size_t(n), seed + 2, 0.05f);
  p.W_dec = randn(size_t(n * d), seed + 3, scale);
  p.b_dec = randn(size_t(d), seed + 4, 0.1f);
  return p;
}

}  // namespace topksae::test
