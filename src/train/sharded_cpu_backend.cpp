// The Trainer's backend for latent-sharded CPU training: each queued step runs at once
// (dist::sharded_train_step on this rank's part of the state, over the run's Collectives), so
// poll() always has every step. Every rank queues the same batches; the metrics are global.
#include <utility>

#include "dist/sharded_train.h"
#include "train/train_backend.h"

namespace topksae::detail {
namespace {

class ShardedCpuBackend final : public TrainBackend {
 public:
  ShardedCpuBackend(const TrainConfig& cfg, TrainState* st, std::shared_ptr<dist::Collectives> comm)
      : cfg_(cfg),
        st_(st),
        comm_(std::move(comm)),
        range_(dist::shard_range(cfg.d_sae, comm_->rank(), comm_->size())),
        batch_(static_cast<size_t>(cfg.batch_size * cfg.d_in)) {}

  float* batch_buffer() override { return batch_.data(); }
  void queue(int64_t B) override {
    done_.push_back(dist::sharded_train_step(*comm_, cfg_, range_, st_, batch_.data(), B, &ws_));
  }
  std::vector<StepMetrics> poll() override { return std::exchange(done_, {}); }
  std::vector<StepMetrics> sync() override { return poll(); }

 private:
  TrainConfig cfg_;
  TrainState* st_;
  std::shared_ptr<dist::Collectives> comm_;
  dist::ShardRange range_;
  dist::ShardedWorkspace ws_;
  std::vector<float> batch_;  // [batch_size, d_in]
  std::vector<StepMetrics> done_;
};

}  // namespace

std::unique_ptr<TrainBackend> make_sharded_cpu_backend(const TrainConfig& cfg, TrainState* st,
                                                       std::shared_ptr<dist::Collectives> comm) {
  return std::make_unique<ShardedCpuBackend>(cfg, st, std::move(comm));
}

}  // namespace topksae::detail
