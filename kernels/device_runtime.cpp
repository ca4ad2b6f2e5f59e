// The device runtime with the CUDA backend: allocation, copies and the check reporter.
#include <cstring>
#include <string>

#include "cuda_check.h"
#include "topksae/device.h"

namespace topksae {

namespace detail {
void cuda_failure(const char* library, const char* expr, const char* status, const char* file, int line) {
  report_failure(expr, concat(library, " error: ", status), file, line);
}

const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
  }
}
}  // namespace detail

bool built_with_cuda() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string cuda_unavailable_reason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("no usable CUDA device: ") + cudaGetErrorString(e);
  }
  return n > 0 ? "" : "no CUDA device on this machine";
}

namespace detail {
void* device_malloc(size_t bytes) {
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    TOPKSAE_FAIL("cannot allocate ", bytes, " bytes of GPU memory: ", cudaGetErrorString(e));
  }
  return p;
}
void device_free(void* p) noexcept {
  if (p) (void)cudaFree(p);  // destructors only release; an error here has nowhere to go
}
void* pinned_malloc(size_t bytes) {
  void* p = nullptr;
  cudaError_t e = cudaMallocHost(&p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    TOPKSAE_FAIL("cannot allocate ", bytes, " bytes of pinned host memory: ", cudaGetErrorString(e));
  }
  return p;
}
void pinned_free(void* p) noexcept {
  if (p) (void)cudaFreeHost(p);
}
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::cpu && src_dev == Device::cpu) {  // no driver needed (and none may exist)
    std::memmove(dst, src, bytes);
    return;
  }
  cudaMemcpyKind kind = dst_dev == Device::cpu ? cudaMemcpyDeviceToHost
                                               : (src_dev == Device::cpu ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToDevice);
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
  // cudaMemcpy returns before a device -> device copy, or the DMA of one from pageable host
  // memory, has finished (it is only ordered on the legacy default stream, which a
  // cudaStreamNonBlocking stream does not wait for): finish it, as this function promises.
  if (kind != cudaMemcpyDeviceToHost) CUDA_CHECK(cudaStreamSynchronize(cudaStreamLegacy));
}
}  // namespace detail

}  // namespace topksae
