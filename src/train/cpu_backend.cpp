// The Trainer's CPU backend: each queued step runs at once (cpu::train_step on the trainer's own
// state), so poll() always has every step and sync() has nothing to wait for.
#include <utility>

#include "train/train_backend.h"

namespace topksae::detail {
namespace {

class CpuBackend final : public TrainBackend {
 public:
  CpuBackend(const TrainConfig& cfg, TrainState* st)
      : cfg_(cfg), st_(st), batch_(static_cast<size_t>(cfg.batch_size * cfg.d_in)) {}

  float* batch_buffer() override { return batch_.data(); }
  void queue(int64_t B) override { done_.push_back(cpu::train_step(cfg_, st_, batch_.data(), B, &ws_)); }
  std::vector<StepMetrics> poll() override { return std::exchange(done_, {}); }
  std::vector<StepMetrics> sync() override { return poll(); }

 private:
  TrainConfig cfg_;
  TrainState* st_;
  cpu::TrainWorkspace ws_;
  std::vector<float> batch_;  // [batch_size, d_in]
  std::vector<StepMetrics> done_;
};

}  // namespace

std::unique_ptr<TrainBackend> make_cpu_backend(const TrainConfig& cfg, TrainState* st) {
  return std::make_unique<CpuBackend>(cfg, st);
}

}  // namespace topksae::detail
