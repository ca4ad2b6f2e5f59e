// How long the GPU sat idle between training steps, waiting for the host to queue the next one
// (in the trainer: to read the next batch): the gap between the end of step i-1 and the start of
// step i on the compute stream, from a pair of timing events around each step. This is the GPU's
// own timeline, so it says "input-bound" only when the GPU really waited, not when the host did.
//
// began()/ended() are recorded on the stream around each step (began after the stream's wait for
// the batch's copy, so a slow copy counts as waiting too); pause() after a sync, so the host's
// checkpoint or return from run() is not counted as waiting for data. waited_s() adds the gaps of
// the steps that have started by now (never waits). Events live in a ring of kRing pairs; before
// a pair is reused, the gap that needs it is read (the GPU is a few steps behind at most, so that
// read does not wait in practice).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "common/cuda_raii.h"

namespace topksae::detail {

class DeviceWaitClock {
 public:
  DeviceWaitClock() {
    for (int i = 0; i < kRing; ++i) {
      began_.emplace_back(cudaEventDefault);  // timing events: cudaEventElapsedTime reads them
      ended_.emplace_back(cudaEventDefault);
    }
  }
  DeviceWaitClock(const DeviceWaitClock&) = delete;
  DeviceWaitClock& operator=(const DeviceWaitClock&) = delete;

  void began(cudaStream_t s) {
    collect(steps_ - kRing + 1, true);  // the gaps that read the pair about to be reused
    counted_[steps_ % kRing] = steps_ > 0 && !paused_;
    paused_ = false;
    CUDA_CHECK(cudaEventRecord(began_[steps_ % kRing].get(), s));
  }
  void ended(cudaStream_t s) {
    CUDA_CHECK(cudaEventRecord(ended_[steps_ % kRing].get(), s));
    ++steps_;
  }
  void pause() { paused_ = true; }
  double waited_s() {
    collect(steps_ - 1, false);
    return waited_s_;
  }

 private:
  static constexpr int kRing = 16;
  // Adds the gaps of steps read_ .. upto whose start event has completed (wait: sync on it).
  void collect(int64_t upto, bool wait) {
    for (; read_ <= upto && read_ < steps_; ++read_) {
      cudaEvent_t b = began_[read_ % kRing].get();
      if (wait) CUDA_CHECK(cudaEventSynchronize(b));
      else if (cudaEventQuery(b) != cudaSuccess) return;  // not started yet (cudaErrorNotReady)
      if (counted_[read_ % kRing]) {
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, ended_[(read_ - 1) % kRing].get(), b));
        waited_s_ += double(ms) / 1e3;
      }
    }
  }
  std::vector<cuda::detail::OwnedEvent> began_, ended_;  // [kRing] each
  bool counted_[kRing] = {};  // the gap before this step is waiting (not the first step, not after a sync)
  int64_t steps_ = 0, read_ = 0;
  bool paused_ = false;
  double waited_s_ = 0;
};

}  // namespace topksae::detail
