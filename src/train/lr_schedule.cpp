// lr_at: the learning rate of sae_lens 6.13.1's get_lr_scheduler at 0-based step t, in closed
// form (MATH.md, Learning rate). W warm-up steps (torch LinearLR from lr/W to lr over W-1 steps),
// then the main scheduler for M = T - W - D steps, then D linear decay steps from lr_end (lr for
// the constant scheduler, which ignores lr_end) towards 0.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "topksae/train.h"

namespace topksae::cpu {

double lr_at(const TrainConfig& cfg, int64_t t) {
  const double lr = cfg.lr;
  const int64_t W = cfg.lr_warm_up_steps, D = cfg.lr_decay_steps, T = cfg.total_training_steps();
  const int64_t M = T - W - D;
  const double lr_end = cfg.lr_scheduler_name == LrScheduler::constant ? lr : cfg.effective_lr_end();
  if (t < W) {
    if (W == 1) return lr;  // LinearLR with total_iters 0 starts (and stays) at start_factor 1
    const double frac = double(std::min(t, W - 1)) / double(W - 1);
    return lr * (1.0 / double(W) + (1.0 - 1.0 / double(W)) * frac);
  }
  if (D > 0 && t >= T - D) {
    const int64_t i = t - (T - D);
    const double f0 = lr_end / lr;
    return lr * f0 * (1.0 - double(std::min(i, D)) / double(D));
  }
  const int64_t i = t - W;
  switch (cfg.lr_scheduler_name) {
    case LrScheduler::constant: return lr;
    case LrScheduler::cosineannealing:
      return lr_end + (lr - lr_end) * (1.0 + std::cos(std::numbers::pi * double(i) / double(M))) / 2.0;
    case LrScheduler::cosineannealingwarmrestarts: {
      const int64_t P = std::max<int64_t>(M / cfg.n_restart_cycles, 1);
      return lr_end + (lr - lr_end) * (1.0 + std::cos(std::numbers::pi * double(i % P) / double(P))) / 2.0;
    }
  }
  return lr;
}

}  // namespace topksae::cpu
