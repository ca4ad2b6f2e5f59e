// CUDA emulation (tests/cuda_emu/README.md): cub::DeviceRadixSort::SortPairs on the host: a stable
// sort on bits [begin_bit, end_bit) of the keys, signed keys ordered as CUB orders them (sign bit
// flipped). The DoubleBuffer form leaves the result in the alternate buffers and flips the
// selectors, which CUB may do, so a caller that reads the wrong buffer afterwards is caught.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "cub/device/temp_storage.h"

namespace cub {
template <class T>
struct DoubleBuffer {
  T* d_buffers[2];
  int selector;
  DoubleBuffer() : d_buffers{nullptr, nullptr}, selector(0) {}
  DoubleBuffer(T* current, T* alternate) : d_buffers{current, alternate}, selector(0) {}
  T* Current() const { return d_buffers[selector]; }
  T* Alternate() const { return d_buffers[selector ^ 1]; }
};

namespace emu {
template <class K>
uint64_t radix_digit(K key, int begin_bit, int end_bit) {
  static_assert(std::is_integral_v<K>, "the emulation sorts integer keys only");
  using U = std::make_unsigned_t<K>;
  U u = static_cast<U>(key);
  if constexpr (std::is_signed_v<K>) u ^= U(1) << (sizeof(K) * 8 - 1);
  const int width = end_bit - begin_bit;
  const uint64_t mask = width >= 64 ? ~uint64_t(0) : ((uint64_t(1) << width) - 1);
  return (uint64_t(u) >> begin_bit) & mask;
}

template <class K, class V, class NumItemsT>
cudaError_t sort_pairs(const K* keys_in, K* keys_out, const V* vals_in, V* vals_out, NumItemsT num_items,
                       int begin_bit, int end_bit) {
  if (begin_bit < 0 || end_bit > int(sizeof(K) * 8) || begin_bit > end_bit) return cudaErrorInvalidValue;
  const size_t n = size_t(num_items);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return radix_digit(keys_in[a], begin_bit, end_bit) < radix_digit(keys_in[b], begin_bit, end_bit);
  });
  std::vector<K> k(n);
  std::vector<V> v(n);
  for (size_t i = 0; i < n; ++i) k[i] = keys_in[order[i]], v[i] = vals_in[order[i]];
  std::copy(k.begin(), k.end(), keys_out);
  std::copy(v.begin(), v.end(), vals_out);
  return cudaSuccess;
}
}  // namespace emu

struct DeviceRadixSort {
  template <class K, class V, class NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, DoubleBuffer<K>& d_keys,
                               DoubleBuffer<V>& d_values, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = sizeof(K) * 8, cudaStream_t stream = nullptr) {
    cudaError_t err;
    // The DoubleBuffer form needs little temporary storage in CUB: the buffers are the scratch.
    if (emu::temp_storage_protocol(d_temp_storage, temp_storage_bytes, 0, 1, "DeviceRadixSort::SortPairs", &err))
      return err;
    if (num_items > 0 && (d_keys.Current() == nullptr || d_keys.Alternate() == nullptr ||
                          d_values.Current() == nullptr || d_values.Alternate() == nullptr))
      return cudaErrorInvalidValue;
    const char* fn = "DeviceRadixSort::SortPairs";
    const long long n = (long long)num_items;
    if (!emu::items_ok(fn, "keys (current)", d_keys.Current(), n) ||
        !emu::items_ok(fn, "keys (alternate)", d_keys.Alternate(), n) ||
        !emu::items_ok(fn, "values (current)", d_values.Current(), n) ||
        !emu::items_ok(fn, "values (alternate)", d_values.Alternate(), n))
      return cudaErrorInvalidValue;
    if (begin_bit < 0 || end_bit > int(sizeof(K) * 8) || begin_bit > end_bit) return cudaErrorInvalidValue;
    // The selectors are host state, flipped at the call (a captured sort flips them at capture).
    K *ki = d_keys.Current(), *ko = d_keys.Alternate();
    V *vi = d_values.Current(), *vo = d_values.Alternate();
    err = emu::run_or_capture(stream, fn, [=] { return emu::sort_pairs(ki, ko, vi, vo, num_items, begin_bit, end_bit); });
    if (err == cudaSuccess) d_keys.selector ^= 1, d_values.selector ^= 1;
    return err;
  }
  template <class K, class V, class NumItemsT>
  static cudaError_t SortPairs(void* d_temp_storage, size_t& temp_storage_bytes, const K* d_keys_in, K* d_keys_out,
                               const V* d_values_in, V* d_values_out, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = sizeof(K) * 8, cudaStream_t stream = nullptr) {
    cudaError_t err;
    if (emu::temp_storage_protocol(d_temp_storage, temp_storage_bytes, (long long)num_items, sizeof(K) + sizeof(V),
                                   "DeviceRadixSort::SortPairs", &err))
      return err;
    const char* fn = "DeviceRadixSort::SortPairs";
    const long long n = (long long)num_items;
    if (!emu::items_ok(fn, "keys in", d_keys_in, n) || !emu::items_ok(fn, "keys out", d_keys_out, n) ||
        !emu::items_ok(fn, "values in", d_values_in, n) || !emu::items_ok(fn, "values out", d_values_out, n))
      return cudaErrorInvalidValue;
    if (begin_bit < 0 || end_bit > int(sizeof(K) * 8) || begin_bit > end_bit) return cudaErrorInvalidValue;
    return emu::run_or_capture(stream, fn, [=] {
      return emu::sort_pairs(d_keys_in, d_keys_out, d_values_in, d_values_out, num_items, begin_bit, end_bit);
    });
  }
};
}  // namespace cub
