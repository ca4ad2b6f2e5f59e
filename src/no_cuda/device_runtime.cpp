// The device runtime when the library is built without its CUDA backend: host copies work,
// anything that needs a GPU throws an Error saying how to get one.
#include <cstring>

#include "topksae/device.h"
#include "topksae/error.h"

namespace topksae {

bool built_with_cuda() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_unavailable_reason() {
  return "topksae was built without CUDA (configure with -DTOPKSAE_CUDA=ON and a CUDA toolkit)";
}

namespace detail {
void* device_malloc(size_t) { TOPKSAE_FAIL(cuda_unavailable_reason()); }
void device_free(void*) noexcept {}
void* pinned_malloc(size_t) { TOPKSAE_FAIL("pinned host memory needs CUDA: ", cuda_unavailable_reason()); }
void pinned_free(void*) noexcept {}
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (dst_dev != Device::cpu || src_dev != Device::cpu) TOPKSAE_FAIL(cuda_unavailable_reason());
  if (bytes) std::memmove(dst, src, bytes);
}
}  // namespace detail

}  // namespace topksae
