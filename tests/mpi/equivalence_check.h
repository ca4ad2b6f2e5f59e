// What the two MPI equivalence programs share (sharded_equivalence.cpp on CPU ranks,
// cuda_sharded_equivalence.cpp on emulated GPU ranks): a failure counter with a non-fatal EXPECT
// that names the rank, and the comparisons of parameters and whole training states.
#pragma once
#include <algorithm>
#include <cmath>
#include <iostream>
#include <vector>

#include "topksae/error.h"
#include "topksae/synthetic.h"
#include "topksae/train.h"

namespace topksae::mpi_test {

inline int g_fail = 0;  // failed checks on this rank
inline int g_rank = 0;  // this rank, for the messages

// Counts a failed condition and prints the first 20 with their message (concat of the arguments).
#define EXPECT(cond, ...)                                                                                     \
  do {                                                                                                        \
    if (!(cond)) {                                                                                            \
      if (::topksae::mpi_test::g_fail++ < 20)                                                                 \
        std::cerr << "rank " << ::topksae::mpi_test::g_rank << ": FAILED " #cond ": " << concat(__VA_ARGS__) \
                  << "\n";                                                                                    \
    }                                                                                                         \
  } while (0)

inline bool close_rel(double a, double b, double tol) { return std::fabs(a - b) <= tol * std::fabs(b) + 1e-12; }

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, double(std::fabs(a[i] - b[i])));
  return m;
}

// Each of the four parameters of `got` within tol of `ref` (e.g. a shard against the reference's slice).
inline void expect_params(const Params<float>& got, const Params<float>& ref, double tol, const char* what) {
  EXPECT(max_abs_diff(got.W_enc, ref.W_enc) <= tol, what, " W_enc differs by ", max_abs_diff(got.W_enc, ref.W_enc));
  EXPECT(max_abs_diff(got.b_enc, ref.b_enc) <= tol, what, " b_enc differs by ", max_abs_diff(got.b_enc, ref.b_enc));
  EXPECT(max_abs_diff(got.W_dec, ref.W_dec) <= tol, what, " W_dec differs by ", max_abs_diff(got.W_dec, ref.W_dec));
  EXPECT(max_abs_diff(got.b_dec, ref.b_dec) <= tol, what, " b_dec differs by ", max_abs_diff(got.b_dec, ref.b_dec));
}

// Parameters, both moments, the step and sample counts and the latents' counters, bit for bit.
inline bool bit_equal(const TrainState& a, const TrainState& b) {
  for (const auto& [p, q] : {std::pair{&a.params, &b.params}, {&a.adam_m, &b.adam_m}, {&a.adam_v, &b.adam_v}})
    if (p->W_enc != q->W_enc || p->b_enc != q->b_enc || p->W_dec != q->W_dec || p->b_dec != q->b_dec) return false;
  return a.step == b.step && a.stats.since_fired == b.stats.since_fired && a.stats.act_freq == b.stats.act_freq &&
         a.n_training_samples == b.n_training_samples;
}

// The synthetic activations both programs train on: 40 features, firing with frequencies 0.02..0.2.
inline SyntheticConfig equivalence_source(int64_t d_in) {
  SyntheticConfig sc;
  sc.d_in = d_in;
  sc.n_features = 40;
  sc.seed = 5;
  sc.max_freq = 0.2;
  sc.min_freq = 0.02;
  return sc;
}

}  // namespace topksae::mpi_test
