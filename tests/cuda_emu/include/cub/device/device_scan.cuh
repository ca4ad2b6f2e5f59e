// CUDA emulation (tests/cuda_emu/README.md): cub::DeviceScan on the host.
#pragma once
#include <iterator>

#include "cub/device/temp_storage.h"

namespace cub {
namespace emu {
// Both sums: CUB's storage protocol and range checks, then one pass (in and out may alias).
template <bool kInclusive, class InputIt, class OutputIt, class NumItemsT>
cudaError_t prefix_sum(const char* what, void* d_temp_storage, size_t& temp_storage_bytes, InputIt d_in,
                       OutputIt d_out, NumItemsT num_items, cudaStream_t stream) {
  using T = typename std::iterator_traits<OutputIt>::value_type;
  cudaError_t err;
  if (temp_storage_protocol(d_temp_storage, temp_storage_bytes, (long long)num_items, sizeof(T), what, &err))
    return err;
  if (!items_ok(what, "d_in", d_in, (long long)num_items) || !items_ok(what, "d_out", d_out, (long long)num_items))
    return cudaErrorInvalidValue;
  return run_or_capture(stream, what, [=] {
    T acc{};
    for (NumItemsT i = 0; i < num_items; ++i) {
      const T v = T(d_in[i]);  // read before writing: an in-place scan
      if constexpr (kInclusive) acc = acc + v;
      d_out[i] = acc;
      if constexpr (!kInclusive) acc = acc + v;
    }
    return cudaSuccess;
  });
}
}  // namespace emu

struct DeviceScan {
  template <class InputIt, class OutputIt, class NumItemsT>
  static cudaError_t ExclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, InputIt d_in, OutputIt d_out,
                                  NumItemsT num_items, cudaStream_t stream = nullptr) {
    return emu::prefix_sum<false>("DeviceScan::ExclusiveSum", d_temp_storage, temp_storage_bytes, d_in, d_out,
                                  num_items, stream);
  }
  template <class InputIt, class OutputIt, class NumItemsT>
  static cudaError_t InclusiveSum(void* d_temp_storage, size_t& temp_storage_bytes, InputIt d_in, OutputIt d_out,
                                  NumItemsT num_items, cudaStream_t stream = nullptr) {
    return emu::prefix_sum<true>("DeviceScan::InclusiveSum", d_temp_storage, temp_storage_bytes, d_in, d_out,
                                 num_items, stream);
  }
};
}  // namespace cub
