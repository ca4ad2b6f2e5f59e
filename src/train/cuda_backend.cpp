// The Trainer's GPU backends: one Context on a stream of its own, one step object made from the
// trainer's state (cuda::TrainStep; for latent-sharded runs cuda::ShardedTrainStep on this rank's
// part, its collectives over the NCCL engine, kernels/train/sharded_step.h), and two batch slots (a
// pinned host buffer and a device buffer each) so that the host reads batch i+1 from the source
// while the GPU runs step i. Both step types share the calls used here; sync() downloads the state
// (this rank's part when sharded: checkpoints and the final SAE then go through
// src/dist/sharded_checkpoint.cpp and sharded_final.cpp, the same files as CPU ranks write).
//
// Batch i uses slot j = i % 2. A copy stream beside the compute stream moves it to the device:
//   host:    wait for copied[j] (copy i-2, the last read of pinned[j]), fill pinned[j]
//   copy:    wait for consumed[j] (step i-2, the last read of dev[j]), pinned[j] -> dev[j],
//            record copied[j]
//   compute: wait for copied[j], step on dev[j], record consumed[j]
// So the copy of batch i overlaps step i-1, and nothing here synchronises the host with the GPU
// except a wait for a pinned buffer two batches back. Both streams are blocking streams (not
// cudaStreamNonBlocking): the TrainStep's synchronous cudaMemcpy uploads and downloads on the
// legacy default stream stay ordered with them.
#include <utility>

#include "common/cuda_raii.h"
#include "cuda_check.h"
#include "device_wait_clock.h"
#include "dist/device_collectives.h"
#include "topksae/buffer.h"
#include "topksae/train_cuda.h"
#include "train/sharded_step.h"
#include "train/train_backend.h"

namespace topksae::detail {
namespace {

using cuda::detail::OwnedEvent;
using cuda::detail::OwnedStream;

// Step: cuda::TrainStep or cuda::ShardedTrainStep. make_step(Context&) returns the step object
// (built in place: neither type moves); keep_alive holds what it refers to (the NCCL engine).
template <class Step>
class CudaBackend final : public TrainBackend {
 public:
  template <class MakeStep>
  CudaBackend(const TrainConfig& cfg, TrainState* st, MakeStep make_step, std::shared_ptr<void> keep_alive = {})
      : keep_alive_(std::move(keep_alive)),
        st_(st),
        max_rows_(cfg.batch_size),
        row_bytes_(static_cast<size_t>(cfg.d_in) * sizeof(float)),
        ctx_(reinterpret_cast<Stream>(compute_.get())),
        step_(make_step(ctx_)) {
    for (int j = 0; j < 2; ++j) {
      pinned_[j] = HostBuffer(size_t(max_rows_) * row_bytes_, HostMemory::pinned);
      dev_[j] = DeviceBuffer(size_t(max_rows_) * row_bytes_);
    }
  }

  ~CudaBackend() override {
    // Queued copies read pinned_ and steps read dev_: finish them before the buffers go.
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
    // An event never recorded is complete, so the first two batches wait for nothing.
    CUDA_CHECK(cudaStreamWaitEvent(copy_.get(), consumed_[j].get(), 0));
    CUDA_CHECK(cudaMemcpyAsync(dev_[j].data(), pinned_[j].data(), size_t(B) * row_bytes_, cudaMemcpyHostToDevice,
                               copy_.get()));
    step_on(j, B);
  }

  // The device path (issue 21): the source queues its device-to-device write of dev[j] on the copy
  // stream, after step i-2 (the last read of dev[j]); then the same step as queue().
  float* device_batch_buffer(Stream* stream) override {
    const int j = slot();
    CUDA_CHECK(cudaStreamWaitEvent(copy_.get(), consumed_[j].get(), 0));
    *stream = reinterpret_cast<Stream>(copy_.get());
    return static_cast<float*>(dev_[j].data());
  }
  void queue_device(int64_t B) override {
    TOPKSAE_CHECK(B >= 1 && B <= max_rows_, "cuda trainer: batch of ", B, " rows, expected 1..", max_rows_);
    step_on(slot(), B);
  }

  std::vector<StepMetrics> poll() override { return step_.poll_metrics(); }

  std::vector<StepMetrics> sync() override {
    std::vector<StepMetrics> m = step_.drain_metrics();
    step_.download(st_);  // synchronises the compute stream, which waited for every copy
    wait_clock_.pause();  // input-wait share: the gap after a sync is the host's, not the data's
    return m;
  }

  // input-wait share: the GPU's idle gaps between steps, not the host's reading time.
  double device_wait_seconds(double) override { return wait_clock_.waited_s(); }

 private:
  int slot() const { return static_cast<int>(queued_ % 2); }

  // dev[j] holds batch i once the copy stream's work so far has run: step on it.
  void step_on(int j, int64_t B) {
    CUDA_CHECK(cudaEventRecord(copied_[j].get(), copy_.get()));
    CUDA_CHECK(cudaStreamWaitEvent(compute_.get(), copied_[j].get(), 0));
    wait_clock_.began(compute_.get());  // input-wait share (device_wait_clock.h)
    step_.step(static_cast<const float*>(dev_[j].data()), B);
    wait_clock_.ended(compute_.get());  // input-wait share
    CUDA_CHECK(cudaEventRecord(consumed_[j].get(), compute_.get()));
    ++queued_;
  }

  std::shared_ptr<void> keep_alive_;  // outlives step_ (declared first)
  TrainState* st_;
  int64_t max_rows_;
  size_t row_bytes_;
  int64_t queued_ = 0;
  // Declaration order is construction order: the streams before the Context that uses one of
  // them, the Context before the TrainStep; destruction runs the other way.
  OwnedStream compute_, copy_;
  cuda::Context ctx_;
  Step step_;
  HostBuffer pinned_[2];  // [batch_size, d_in] each, pinned
  DeviceBuffer dev_[2];   // [batch_size, d_in] each
  OwnedEvent copied_[2], consumed_[2];
  DeviceWaitClock wait_clock_;  // input-wait share
};

}  // namespace

std::unique_ptr<TrainBackend> make_cuda_backend(const TrainConfig& cfg, TrainState* st, cuda::Precision p) {
  TOPKSAE_CHECK(cuda_available(), "training on cuda: ", cuda_unavailable_reason());
  return std::make_unique<CudaBackend<cuda::TrainStep>>(
      cfg, st, [&](cuda::Context& ctx) { return cuda::TrainStep(ctx, cfg, *st, {.precision = p}); });
}

std::unique_ptr<TrainBackend> make_cuda_sharded_backend(const TrainConfig& cfg, TrainState* st,
                                                        std::shared_ptr<dist::DeviceCollectives> comm,
                                                        cuda::Precision p) {
  TOPKSAE_CHECK(comm != nullptr, "latent-sharded training on cuda needs the NCCL engine (TrainerOptions::device_comm, "
                "dist::make_nccl_collectives)");
  dist::DeviceCollectives& dc = *comm;
  return std::make_unique<CudaBackend<cuda::ShardedTrainStep>>(
      cfg, st, [&](cuda::Context& ctx) { return cuda::ShardedTrainStep(ctx, dc, cfg, *st, {.precision = p}); },
      std::move(comm));
}

}  // namespace topksae::detail
