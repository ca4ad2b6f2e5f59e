// Move-only owners of raw memory: host (pageable or pinned) and device. Copying is deleted on
// purpose: a copy of a weight matrix must be asked for by name (Tensor::clone / Tensor::to).
#pragma once
#include <cstddef>
#include <utility>

#include "topksae/device.h"

namespace topksae {

enum class HostMemory : unsigned char { pageable, pinned };

class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(size_t bytes, HostMemory kind = HostMemory::pageable);
  ~HostBuffer() { release(); }
  HostBuffer(HostBuffer&& o) noexcept { swap(o); }
  HostBuffer& operator=(HostBuffer&& o) noexcept {
    HostBuffer tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  HostBuffer(const HostBuffer&) = delete;
  HostBuffer& operator=(const HostBuffer&) = delete;

  void* data() { return ptr_; }
  const void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  HostMemory kind() const { return kind_; }

 private:
  void release() noexcept;
  void swap(HostBuffer& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    std::swap(kind_, o.kind_);
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  HostMemory kind_ = HostMemory::pageable;
};

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);  // throws Error without a usable CUDA device
  ~DeviceBuffer() { detail::device_free(ptr_); }
  DeviceBuffer(DeviceBuffer&& o) noexcept { swap(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    DeviceBuffer tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() { return ptr_; }
  const void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void swap(DeviceBuffer& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
  }
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace topksae
