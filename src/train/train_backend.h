// Where the Trainer's steps run. The Trainer reads each batch into batch_buffer() and queues a
// step on it; the backend steps the TrainState it was made from (in place on the CPU, a device
// copy of it on the GPU) and hands back each step's metrics in step order, possibly later than
// the step was queued. sync() brings that TrainState up to date.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "topksae/train.h"

namespace topksae::dist {
class Collectives;
class DeviceCollectives;
}

namespace topksae::detail {

class TrainBackend {
 public:
  virtual ~TrainBackend() = default;
  // The host buffer to read the next batch into, [batch_size, d_in]. May wait until the buffer
  // is free again (its previous contents were copied to the GPU).
  virtual float* batch_buffer() = 0;
  // Queues one step on the first B rows of batch_buffer() (B <= batch_size).
  virtual void queue(int64_t B) = 0;
  // The device path (a source that serves_device()): the device buffer to write the next batch
  // into, [batch_size, d_in], and *stream, the stream to queue that write on; then queue_device(B)
  // steps on it. Nothing waits for the host. nullptr: this backend has no device path.
  virtual float* device_batch_buffer(Stream* /*stream*/) { return nullptr; }
  virtual void queue_device(int64_t /*B*/) {}
  // Metrics of the finished steps not collected yet, oldest first; never waits.
  virtual std::vector<StepMetrics> poll() = 0;
  // Waits for every queued step, writes the state into the TrainState given at construction
  // (all fields; data_position and scaling_factor as they were then) and returns the uncollected
  // metrics, oldest first.
  virtual std::vector<StepMetrics> sync() = 0;
  // Seconds the device sat idle waiting for batches so far, given the seconds the host spent
  // reading them. The CPU steps on the reading thread, so every second read is a second waited.
  virtual double device_wait_seconds(double host_data_s) { return host_data_s; }
};

// *st must outlive the backend.
std::unique_ptr<TrainBackend> make_cpu_backend(const TrainConfig& cfg, TrainState* st);
// Latent-sharded training on the CPU (src/train/sharded_cpu_backend.cpp): *st is this rank's part.
std::unique_ptr<TrainBackend> make_sharded_cpu_backend(const TrainConfig& cfg, TrainState* st,
                                                       std::shared_ptr<dist::Collectives> comm);
// cuda_backend.cpp; without the CUDA backend (src/no_cuda/cuda_backend.cpp) it throws Error.
std::unique_ptr<TrainBackend> make_cuda_backend(const TrainConfig& cfg, TrainState* st, cuda::Precision p);
// Latent-sharded training on GPU ranks (cuda_backend.cpp, over cuda::ShardedTrainStep; without the
// CUDA backend it throws Error): *st is this rank's part, comm the NCCL engine
// (dist::make_nccl_collectives).
std::unique_ptr<TrainBackend> make_cuda_sharded_backend(const TrainConfig& cfg, TrainState* st,
                                                        std::shared_ptr<dist::DeviceCollectives> comm,
                                                        cuda::Precision p);

}  // namespace topksae::detail
