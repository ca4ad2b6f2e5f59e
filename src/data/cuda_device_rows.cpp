// The device mixing buffer's store (src/data/device_rows.h).
#include <algorithm>
#include <deque>
#include <unordered_map>
#include <vector>

#include "common/cuda_raii.h"
#include "cuda_check.h"
#include "data/device_rows.h"
#include "topksae/buffer.h"
#include "topksae/error.h"
#include "topksae/ops_cuda.h"

namespace topksae::detail {
namespace {

using cuda::detail::OwnedEvent;
using cuda::detail::OwnedStream;

class CudaDeviceRows final : public DeviceRows {
 public:
  CudaDeviceRows(int64_t d, int64_t capacity) : d_(d) {
    TOPKSAE_CHECK(d >= 1 && capacity >= 1, "device mixing buffer: d ", d, ", capacity ", capacity);
    CUDA_CHECK(cudaGetDevice(&device_));
    grow(capacity);
  }
  ~CudaDeviceRows() override {
    // Queued gathers read rows_ and the staged slots, copies read the holds: finish them before
    // the members (buffers, events, the stream) go.
    (void)cudaDeviceSynchronize();
  }

  void put(const int64_t* ids, const float* rows, int64_t n, bool on_device, Stream producer,
           std::shared_ptr<void> hold) override {
    release_holds();
    if (n <= 0) return;
    if (int64_t(free_.size()) < n) grow(capacity_ + std::max(n, capacity_));
    if (on_device && producer) {  // the producer's work (its forward pass) before our copy
      CUDA_CHECK(cudaEventRecord(produced_.get(), reinterpret_cast<cudaStream_t>(producer)));
      CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), produced_.get(), 0));
    }
    CUDA_CHECK(cudaStreamWaitEvent(stream_.get(), taken_.get(), 0));  // the slots freed by the last take were read
    const size_t row_bytes = size_t(d_) * sizeof(float);
    const cudaMemcpyKind kind = on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice;
    // Free slots come off a stack that starts (and mostly stays) in order: copy runs of
    // consecutive slots at once.
    int64_t i = 0;
    while (i < n) {
      const int64_t s0 = free_.back();
      int64_t run = 0;
      while (i + run < n && !free_.empty() && free_.back() == s0 + run) {
        slot_of_[ids[i + run]] = free_.back();
        free_.pop_back();
        ++run;
      }
      CUDA_CHECK(cudaMemcpyAsync(base() + s0 * d_, rows + i * d_, size_t(run) * row_bytes, kind, stream_.get()));
      i += run;
    }
    CUDA_CHECK(cudaEventRecord(put_done_.get(), stream_.get()));
    if (hold) {  // the producer's memory stays alive until this copy has run
      Hold h{OwnedEvent(), std::move(hold)};
      CUDA_CHECK(cudaEventRecord(h.copied.get(), stream_.get()));
      holds_.push_back(std::move(h));
    }
  }

  void take(const int64_t* ids, int64_t n, float* out, Stream stream) override {
    release_holds();
    if (n <= 0) return;
    slots_.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) {
      auto it = slot_of_.find(ids[i]);
      if (it == slot_of_.end()) {
        for (int64_t j = 0; j < i; ++j) slot_of_[ids[j]] = slots_[size_t(j)];  // as before the call
        TOPKSAE_FAIL("live stream: row ", ids[i], " is not held (taken rows are read once; a live run resumes "
                     "without the rows that were in its mixing buffer)");
      }
      slots_[size_t(i)] = it->second;
      slot_of_.erase(it);
    }
    Staged& st = staged_[next_staged_];
    next_staged_ = (next_staged_ + 1) % kStaged;
    // The upload that last read this pinned buffer (kStaged takes ago) has long run: this host wait
    // returns at once in a steady stream, and keeps the host from overwriting rows in flight.
    CUDA_CHECK(cudaEventSynchronize(st.uploaded.get()));
    if (st.host.bytes() < size_t(n) * sizeof(int64_t)) {
      CUDA_CHECK(cudaDeviceSynchronize());  // the old device slot array may still be read
      st.host = HostBuffer(size_t(n) * sizeof(int64_t), HostMemory::pinned);
      st.dev = DeviceBuffer(size_t(n) * sizeof(int64_t));
    }
    std::copy(slots_.begin(), slots_.end(), static_cast<int64_t*>(st.host.data()));
    const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
    CUDA_CHECK(cudaStreamWaitEvent(s, put_done_.get(), 0));
    // From pinned memory: truly asynchronous (a pageable source may make the driver wait for the
    // stream); the gather below reads st.dev on the same stream, after this upload.
    CUDA_CHECK(cudaMemcpyAsync(st.dev.data(), st.host.data(), size_t(n) * sizeof(int64_t), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(st.uploaded.get(), s));
    cuda::gather_rows(stream, base(), d_, static_cast<const int64_t*>(st.dev.data()), n, out);
    CUDA_CHECK(cudaEventRecord(taken_.get(), s));
    for (int64_t slot : slots_) free_.push_back(slot);
  }

  void take_to_host(const int64_t* ids, int64_t n, float* out) override {
    if (n <= 0) return;
    if (staging_.bytes() < size_t(n * d_) * sizeof(float)) staging_ = DeviceBuffer(size_t(n * d_) * sizeof(float));
    take(ids, n, static_cast<float*>(staging_.data()), reinterpret_cast<Stream>(stream_.get()));
    CUDA_CHECK(cudaMemcpyAsync(out, staging_.data(), size_t(n * d_) * sizeof(float), cudaMemcpyDeviceToHost, stream_.get()));
    CUDA_CHECK(cudaStreamSynchronize(stream_.get()));
  }

  int64_t held() const override { return int64_t(slot_of_.size()); }
  int device() const override { return device_; }
  Stream stream() const override { return reinterpret_cast<Stream>(stream_.get()); }

 private:
  float* base() { return static_cast<float*>(rows_.data()); }

  // Drops the holds whose copies have run (in order: the copies run in order on stream_).
  void release_holds() {
    while (!holds_.empty() && cudaEventQuery(holds_.front().copied.get()) == cudaSuccess) holds_.pop_front();
  }
  struct Hold {
    OwnedEvent copied;
    std::shared_ptr<void> memory;
  };
  std::deque<Hold> holds_;
  int device_ = 0;

  // A bigger buffer holding the old rows in the same slots (rare: the capacity fits the mixing
  // buffer and the queue; a push larger than that grows it once).
  void grow(int64_t capacity) {
    DeviceBuffer bigger(size_t(capacity * d_) * sizeof(float));
    if (capacity_ > 0) {
      CUDA_CHECK(cudaDeviceSynchronize());
      CUDA_CHECK(cudaMemcpy(bigger.data(), rows_.data(), size_t(capacity_ * d_) * sizeof(float),
                            cudaMemcpyDeviceToDevice));
    }
    rows_ = std::move(bigger);
    // New slots below the old free ones on the stack, highest first, so pops run upwards.
    std::vector<int64_t> fresh;
    for (int64_t s = capacity - 1; s >= capacity_; --s) fresh.push_back(s);
    free_.insert(free_.begin(), fresh.begin(), fresh.end());
    capacity_ = capacity;
  }

  const int64_t d_;
  int64_t capacity_ = 0;
  DeviceBuffer rows_;       // [capacity, d]
  // The slots of the last kStaged takes, pinned on the host and on the device ([n] each): a ring,
  // so that a take never waits for the GPU to have read the previous take's slots.
  static constexpr int kStaged = 4;
  struct Staged {
    HostBuffer host;
    DeviceBuffer dev;
    OwnedEvent uploaded;
  } staged_[kStaged];
  int next_staged_ = 0;
  DeviceBuffer staging_;    // [n, d] for take_to_host
  std::vector<int64_t> free_;     // a stack of free slots
  std::vector<int64_t> slots_;    // [n] of the current take
  std::unordered_map<int64_t, int64_t> slot_of_;  // row id -> slot
  OwnedStream stream_;
  OwnedEvent put_done_, taken_, produced_;
};

}  // namespace

std::unique_ptr<DeviceRows> DeviceRows::make(int64_t d, int64_t capacity) {
  TOPKSAE_CHECK(cuda_available(), "the mixing buffer on the device: ", cuda_unavailable_reason());
  return std::make_unique<CudaDeviceRows>(d, capacity);
}

}  // namespace topksae::detail
