// A host-side upper bound on how many latents will be dead at a coming step, so the CUDA step can
// size AuxK's dense sub-problem (GEMM shapes are host values) without waiting for the device.
//
// The rule (MATH.md, "Dead latents"): the dead mask of step t is since_fired > window, read
// after step t-1's update, and every update either resets since_fired to 0 or adds 1. So after
// step s, since_fired can have grown by at most m = t-1-s by the time step t reads it, and
//   dead(t) <= near(s, m) = #{ j : since_fired_j (after step s) > window - m }.
// The device counts near(s, kLag) at the end of each step s; the host reads it when that step's
// metrics come back, and bounds every step t <= s + 1 + kLag by it. A step further ahead than
// that must first wait for step t-1-kLag to finish (the queue is then kLag+1 steps deep, which
// keeps the GPU busy).
#pragma once
#include <cstdint>
#include <vector>

namespace topksae::train_detail {

class DeadBound {
 public:
  static constexpr int64_t kLag = 4;

  // since_fired of the state a run starts from (the counters after step first_step - 1).
  DeadBound(const std::vector<int64_t>& since_fired, int64_t window, int64_t first_step)
      : known_step_(first_step - 1), known_count_(count_near(since_fired, window)) {}

  // #{ j : since_j > window - kLag }: what the device computes after each step.
  static int64_t count_near(const std::vector<int64_t>& since, int64_t window) {
    int64_t c = 0;
    for (int64_t v : since) c += v > window - kLag;
    return c;
  }

  // The step whose count the host must have before it may launch step t (t-1-kLag), or a value
  // <= known_step() when what it has already suffices.
  static int64_t needed_step(int64_t t) { return t - 1 - kLag; }
  bool can_bound(int64_t t) const { return known_step_ >= needed_step(t); }

  // The bound for step t; valid only when can_bound(t) and t > known_step().
  int64_t bound(int64_t t) const { return can_bound(t) ? known_count_ : -1; }

  // Step s finished with near count c (counts may arrive in any order; the newest wins).
  void observe(int64_t s, int64_t c) {
    if (s > known_step_) {
      known_step_ = s;
      known_count_ = c;
    }
  }
  int64_t known_step() const { return known_step_; }

 private:
  int64_t known_step_;
  int64_t known_count_;
};

}  // namespace topksae::train_detail
