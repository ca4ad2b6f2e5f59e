// The rows of the live stream's mixing buffer on the GPU (LiveSource with Device::cuda; issue 21):
// [capacity, d_in] device memory addressed by row id. Only the rows live here: which id is served
// next stays on the host (ShuffleBuffer's draws), so the device buffer serves exactly the rows, in
// exactly the order, that the host buffer serves. Serving copies the chosen rows into the caller's
// device batch buffer with the gather kernel (cuda::gather_rows, CPU twin cpu::gather_rows).
//
// Ordering: puts run on the store's own stream; take() queues on the caller's stream after the
// puts, and the next put waits for that take (its freed slots are reused). Nothing waits for the
// host except take_to_host(). Not thread-safe: LiveSource calls it under its mutex.
#pragma once
#include <cstdint>
#include <memory>

#include "topksae/device.h"

namespace topksae::detail {

class DeviceRows {
 public:
  // On the current CUDA device; Error without the CUDA backend or a GPU. capacity grows on demand.
  static std::unique_ptr<DeviceRows> make(int64_t d, int64_t capacity);
  virtual ~DeviceRows() = default;
  // Copies rows [n, d] (in host memory, or in device memory when on_device, after the work queued
  // on `producer` so far; a null producer: the caller ordered it before stream()) into free slots under ids [n]. The host rows may be reused on return.
  // `hold` is released once the copy has run (checked on later calls; at the latest in the destructor).
  virtual void put(const int64_t* ids, const float* rows, int64_t n, bool on_device, Stream producer,
                   std::shared_ptr<void> hold = {}) = 0;
  // out [n, d] (device memory) = the rows of ids [n], queued on `stream`; frees their slots (a row
  // is served once). Error naming an id that is not held.
  virtual void take(const int64_t* ids, int64_t n, float* out, Stream stream) = 0;
  // The same into host memory out [n, d]; returns once copied.
  virtual void take_to_host(const int64_t* ids, int64_t n, float* out) = 0;
  virtual int64_t held() const = 0;
  virtual int device() const = 0;     // the CUDA ordinal the rows live on
  virtual Stream stream() const = 0;  // the stream the puts run on
};

}  // namespace topksae::detail
