// DeviceArray<T>: a typed device allocation of `size()` elements (a DeviceBuffer that knows its
// element type and count), so the code that launches kernels passes T* without casts. Host code;
// no CUDA headers needed.
#pragma once
#include <cstddef>
#include <cstdint>

#include "topksae/buffer.h"
#include "topksae/device.h"
#include "topksae/error.h"

namespace topksae::cuda::detail {

template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;  // empty: data() is null, size() 0
  // count elements (uninitialised). A zero count still allocates a few bytes (a valid pointer for
  // the libraries that want one), but bytes() says 0.
  explicit DeviceArray(int64_t count) : buf_(count > 0 ? size_t(count) * sizeof(T) : 16), n_(count) {
    TOPKSAE_CHECK(count >= 0, "DeviceArray: negative element count ", count);
  }

  T* data() { return static_cast<T*>(buf_.data()); }
  const T* data() const { return static_cast<const T*>(buf_.data()); }
  int64_t size() const { return n_; }
  size_t bytes() const { return size_t(n_) * sizeof(T); }

  // Copies count elements between host memory and elements [offset, offset + count) (synchronous).
  void upload(const T* src, int64_t count, int64_t offset = 0) {
    check_range(count, offset);
    topksae::detail::copy_bytes(data() + offset, Device::cuda, src, Device::cpu, size_t(count) * sizeof(T));
  }
  void download(T* dst, int64_t count, int64_t offset = 0) const {
    check_range(count, offset);
    topksae::detail::copy_bytes(dst, Device::cpu, data() + offset, Device::cuda, size_t(count) * sizeof(T));
  }

 private:
  void check_range(int64_t count, int64_t offset) const {
    TOPKSAE_CHECK(count >= 0 && offset >= 0 && offset + count <= n_, "DeviceArray: elements [", offset, ", ",
                  offset + count, ") outside [0, ", n_, ")");
  }
  DeviceBuffer buf_;
  int64_t n_ = 0;
};

}  // namespace topksae::cuda::detail
