// Where memory lives, and what the CUDA runtime on this machine can do. No CUDA header is needed
// to include this: a stream is the runtime's opaque pointer type.
#pragma once
#include <cstddef>
#include <string>

struct CUstream_st;  // the CUDA runtime's stream type; cudaStream_t == CUstream_st*

namespace topksae {

using Stream = CUstream_st*;  // nullptr is the legacy default stream

enum class Device : unsigned char { cpu, cuda };
const char* device_name(Device d);

// True when this library was compiled with its CUDA backend.
bool built_with_cuda();
// Number of usable CUDA devices (0 without the backend, a driver or a GPU). Never throws.
int cuda_device_count();
// Why CUDA cannot be used here, or "" when it can. For GTEST_SKIP messages and --device errors.
std::string cuda_unavailable_reason();
inline bool cuda_available() { return cuda_device_count() > 0; }

namespace detail {
// Raw allocation and copies. Without the CUDA backend the device and pinned variants throw Error.
void* device_malloc(size_t bytes);
void device_free(void* p) noexcept;
void* pinned_malloc(size_t bytes);
void pinned_free(void* p) noexcept;
// Copies `bytes` between any two of {host, device}; returns once the copy is complete. It runs on
// the legacy default stream: it waits for earlier work on blocking streams, NOT for work queued on
// a cudaStreamNonBlocking stream (or the per-thread default stream): synchronise that one first.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
}  // namespace detail

}  // namespace topksae
