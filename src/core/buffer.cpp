#include "topksae/buffer.h"

#include <cstdlib>
#include <new>

#include "topksae/error.h"

namespace topksae {

HostBuffer::HostBuffer(size_t bytes, HostMemory kind) : bytes_(bytes), kind_(kind) {
  if (bytes == 0) return;
  if (kind == HostMemory::pinned) {
    ptr_ = detail::pinned_malloc(bytes);
  } else {
    // 64-byte alignment: whole cache lines, and safe for any vector load.
    ptr_ = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (ptr_ == nullptr) TOPKSAE_FAIL("out of host memory allocating ", bytes, " bytes");
  }
}

void HostBuffer::release() noexcept {
  if (ptr_ == nullptr) return;
  if (kind_ == HostMemory::pinned) detail::pinned_free(ptr_);
  else std::free(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
}

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) ptr_ = detail::device_malloc(bytes);
}

const char* device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

}  // namespace topksae
