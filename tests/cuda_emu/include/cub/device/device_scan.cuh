// CUDA emulation (tests/cuda_emu/README.md): cub::DeviceScan on the host.
#pragma once
#include <iterator>

#include "cub/device/temp_storage.h"

namespace cub {
struct DeviceScan {
  template <class InputIt, class OutputIt, class NumItemsT>
  static cudaError_t ExclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, InputIt d_in, OutputIt d_out,
                                  NumItemsT num_items, cudaStream_t = nullptr) {
    using T = typename std::iterator_traits<OutputIt>::value_type;
    cudaError_t err;
    if (emu::temp_storage_protocol(d_temp_storage, temp_storage_bytes, (long long)num_items, sizeof(T),
                                   "DeviceScan::ExclusiveSum", &err))
      return err;
    if (!emu::items_ok("DeviceScan::ExclusiveSum", "d_in", d_in, (long long)num_items) ||
        !emu::items_ok("DeviceScan::ExclusiveSum", "d_out", d_out, (long long)num_items))
      return cudaErrorInvalidValue;
    T acc{};
    for (NumItemsT i = 0; i < num_items; ++i) {
      const T v = T(d_in[i]);  // read before writing: in and out may alias (in-place scan)
      d_out[i] = acc;
      acc = acc + v;
    }
    return cudaSuccess;
  }
  template <class InputIt, class OutputIt, class NumItemsT>
  static cudaError_t InclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, InputIt d_in, OutputIt d_out,
                                  NumItemsT num_items, cudaStream_t = nullptr) {
    using T = typename std::iterator_traits<OutputIt>::value_type;
    cudaError_t err;
    if (emu::temp_storage_protocol(d_temp_storage, temp_storage_bytes, (long long)num_items, sizeof(T),
                                   "DeviceScan::InclusiveSum", &err))
      return err;
    if (!emu::items_ok("DeviceScan::InclusiveSum", "d_in", d_in, (long long)num_items) ||
        !emu::items_ok("DeviceScan::InclusiveSum", "d_out", d_out, (long long)num_items))
      return cudaErrorInvalidValue;
    T acc{};
    for (NumItemsT i = 0; i < num_items; ++i) {
      acc = acc + T(d_in[i]);
      d_out[i] = acc;
    }
    return cudaSuccess;
  }
};
}  // namespace cub
