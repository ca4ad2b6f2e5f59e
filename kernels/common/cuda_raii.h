// Owners of CUDA runtime handles: a stream, an event, the current device for one scope. The one
// place each is written; host code only (no kernels). Destructors never throw: a failure there is
// ignored, as the handle is gone either way.
#pragma once
#include <cuda_runtime.h>

#include "cuda_check.h"

namespace topksae::cuda::detail {

// A stream of the current device, destroyed with the object.
class OwnedStream {
 public:
  OwnedStream() { CUDA_CHECK(cudaStreamCreate(&s_)); }
  ~OwnedStream() {
    if (s_) (void)cudaStreamDestroy(s_);
  }
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

// An event, destroyed with the object: by default without timing (a synchronisation point);
// cudaEventDefault for one that cudaEventElapsedTime can read. Movable, so a
// std::vector<OwnedEvent> can own a ring of them.
class OwnedEvent {
 public:
  explicit OwnedEvent(unsigned flags = cudaEventDisableTiming) { CUDA_CHECK(cudaEventCreateWithFlags(&e_, flags)); }
  ~OwnedEvent() {
    if (e_) (void)cudaEventDestroy(e_);
  }
  OwnedEvent(OwnedEvent&& o) noexcept : e_(o.e_) { o.e_ = nullptr; }
  OwnedEvent& operator=(OwnedEvent&& o) noexcept {
    if (this != &o) {
      if (e_) (void)cudaEventDestroy(e_);
      e_ = o.e_;
      o.e_ = nullptr;
    }
    return *this;
  }
  OwnedEvent(const OwnedEvent&) = delete;
  OwnedEvent& operator=(const OwnedEvent&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// Makes `dev` the calling thread's current device for one scope and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int dev) {
    CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != dev) {
      CUDA_CHECK(cudaSetDevice(dev));
      changed_ = true;
    }
  }
  ~DeviceGuard() {
    if (changed_) (void)cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool changed_ = false;
};

}  // namespace topksae::cuda::detail
