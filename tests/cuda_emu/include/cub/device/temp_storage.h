// CUDA emulation (tests/cuda_emu/README.md): CUB's two-call temporary-storage protocol. The first
// call (d_temp_storage == nullptr) asks for a size that grows with the item count, as CUB's does; the
// second must pass storage at least that large, else cudaErrorInvalidValue with a message, so a
// caller that sized its storage for fewer items than it sorts or scans is caught.
#pragma once
#include <cstddef>
#include <cstdio>
#include <type_traits>

#include "cuda_emu/base.h"
#include "cuda_runtime.h"

namespace cub::emu {
// [p, p + bytes) must lie in one live device allocation, as CUB's kernels will read or write it
// all; otherwise a message and false.
inline bool range_ok(const char* what, const char* arg, const void* p, size_t bytes) {
  if (bytes == 0) return true;
  if (const char* why = cuda_emu::check_device_range(p, bytes)) {
    std::fprintf(stderr, "cuda_emu: %s: %s (%zu bytes): %s\n", what, arg, bytes, why);
    return false;
  }
  return true;
}
template <class It>
bool items_ok(const char* what, const char* arg, It it, long long items) {
  if constexpr (std::is_pointer_v<It>) {
    return range_ok(what, arg, static_cast<const void*>(it), size_t(items > 0 ? items : 0) * sizeof(*it));
  } else {
    return true;  // an iterator that is not a pointer: nothing to check
  }
}

inline size_t temp_bytes_for(long long items, size_t item_bytes) {
  return 256 + size_t(items > 0 ? items : 0) * item_bytes;
}
// True when the call was a size query (answered) or the storage is too small (reported in *err).
inline bool temp_storage_protocol(void* d_temp_storage, size_t& temp_storage_bytes, long long items,
                                  size_t item_bytes, const char* what, cudaError_t* err) {
  const size_t need = temp_bytes_for(items, item_bytes);
  *err = cudaSuccess;
  if (d_temp_storage == nullptr) {
    temp_storage_bytes = need;
    return true;
  }
  if (temp_storage_bytes < need) {
    std::fprintf(stderr, "cuda_emu: %s: %zu bytes of temporary storage for %lld items, needs %zu\n", what,
                 temp_storage_bytes, items, need);
    *err = cudaErrorInvalidValue;
    return true;
  }
  if (!range_ok(what, "temporary storage", d_temp_storage, need)) {
    *err = cudaErrorInvalidValue;
    return true;
  }
  return false;
}

// A CUB call on `stream` once its arguments passed the checks: run `op` now, or record it when the
// stream captures (the replay runs it on the graph's stream), or refuse (cudaGetLastError's error).
template <class Op>
cudaError_t run_or_capture(cudaStream_t stream, const char* what, Op op) {
  cudaError_t why = cudaSuccess;
  switch (cuda_emu::capture_action(stream, what, &why)) {
    case cuda_emu::Capture::refuse: return why;
    case cuda_emu::Capture::record:
      cuda_emu::capture_record(stream, [op](cudaStream_t) { return op(); });
      return cudaSuccess;
    case cuda_emu::Capture::run: break;
  }
  return op();
}
}  // namespace cub::emu
