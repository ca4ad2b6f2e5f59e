// The Trainer's backend for latent-sharded training on GPU ranks: one cuda::ShardedTrainStep
// (kernels/train/sharded_step.h) on this rank's GPU, its collectives over the NCCL engine
// (TrainerOptions::device_comm). As cuda_backend.cpp, two batch slots (pinned host buffer + device
// buffer) so the host reads batch i+1 while the GPU runs step i:
//   host:    wait for copied[j] (copy i-2, the last read of pinned[j]), fill pinned[j]
//   copy:    wait for consumed[j] (step i-2, the last read of dev[j]), pinned[j] -> dev[j]
//   compute: wait for copied[j], step on dev[j], record consumed[j]
// Every rank queues the same batches; the metrics are global. sync() downloads this rank's part of
// the state, so checkpoints and the final SAE go through src/dist/sharded_checkpoint.cpp and
// sharded_final.cpp as on the CPU: the same files.
#include <utility>

#include "common/cuda_raii.h"
#include "cuda_check.h"
#include "dist/device_collectives.h"
#include "topksae/buffer.h"
#include "train/sharded_step.h"
#include "train/train_backend.h"

namespace topksae::detail {
namespace {

using cuda::detail::OwnedEvent;
using cuda::detail::OwnedStream;

class CudaShardedBackend final : public TrainBackend {
 public:
  CudaShardedBackend(const TrainConfig& cfg, TrainState* st, std::shared_ptr<dist::DeviceCollectives> comm,
                     cuda::Precision p)
      : st_(st),
        comm_(std::move(comm)),
        max_rows_(cfg.batch_size),
        row_bytes_(static_cast<size_t>(cfg.d_in) * sizeof(float)),
        ctx_(reinterpret_cast<Stream>(compute_.get())),
        step_(ctx_, *comm_, cfg, *st, cuda::TrainStepOptions{.precision = p}) {
    for (int j = 0; j < 2; ++j) {
      pinned_[j] = HostBuffer(size_t(max_rows_) * row_bytes_, HostMemory::pinned);
      dev_[j] = DeviceBuffer(size_t(max_rows_) * row_bytes_);
    }
  }

  ~CudaShardedBackend() override {
    (void)cudaStreamSynchronize(copy_.get());
    (void)cudaStreamSynchronize(compute_.get());
  }

  float* batch_buffer() override {
    const int j = slot();
    CUDA_CHECK(cudaEventSynchronize(copied_[j].get()));  // returns at once if never recorded
    return static_cast<float*>(pinned_[j].data());
  }

  void queue(int64_t B) override {
    TOPKSAE_CHECK(B >= 1 && B <= max_rows_, "cuda trainer: batch of ", B, " rows, expected 1..", max_rows_);
    const int j = slot();
    CUDA_CHECK(cudaStreamWaitEvent(copy_.get(), consumed_[j].get(), 0));
    CUDA_CHECK(cudaMemcpyAsync(dev_[j].data(), pinned_[j].data(), size_t(B) * row_bytes_, cudaMemcpyHostToDevice,
                               copy_.get()));
    CUDA_CHECK(cudaEventRecord(copied_[j].get(), copy_.get()));
    CUDA_CHECK(cudaStreamWaitEvent(compute_.get(), copied_[j].get(), 0));
    step_.step(static_cast<const float*>(dev_[j].data()), B);
    CUDA_CHECK(cudaEventRecord(consumed_[j].get(), compute_.get()));
    ++queued_;
  }

  std::vector<StepMetrics> poll() override { return step_.poll_metrics(); }

  std::vector<StepMetrics> sync() override {
    std::vector<StepMetrics> m = step_.drain_metrics();
    step_.download(st_);
    return m;
  }

 private:
  int slot() const { return static_cast<int>(queued_ % 2); }

  TrainState* st_;
  std::shared_ptr<dist::DeviceCollectives> comm_;
  int64_t max_rows_;
  size_t row_bytes_;
  int64_t queued_ = 0;
  // Construction order: the streams, the Context on one of them, then the step.
  OwnedStream compute_, copy_;
  cuda::Context ctx_;
  cuda::ShardedTrainStep step_;
  HostBuffer pinned_[2];  // [batch_size, d_in] each, pinned
  DeviceBuffer dev_[2];   // [batch_size, d_in] each
  OwnedEvent copied_[2], consumed_[2];
};

}  // namespace

std::unique_ptr<TrainBackend> make_cuda_sharded_backend(const TrainConfig& cfg, TrainState* st,
                                                        std::shared_ptr<dist::DeviceCollectives> comm,
                                                        cuda::Precision p) {
  TOPKSAE_CHECK(comm != nullptr, "latent-sharded training on cuda needs the NCCL engine (TrainerOptions::device_comm, "
                "dist::make_nccl_collectives)");
  return std::make_unique<CudaShardedBackend>(cfg, st, std::move(comm), p);
}

}  // namespace topksae::detail
