// A read-only view of one array inside a mapped file (a safetensors tensor, an npy array): dtype,
// shape and a pointer to little-endian, C-order bytes. The pointer may be unaligned (safetensors
// does not promise alignment); the f32 helpers below handle that, direct users check aligned().
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "topksae/dtype.h"
#include "topksae/tensor.h"  // Shape

namespace topksae {

struct ArrayView {
  std::string name;  // tensor name (safetensors) or file name (npy), for messages
  DType dtype = DType::f32;
  Shape shape;
  const void* data = nullptr;  // nbytes bytes, valid while the owning file object lives
  size_t nbytes = 0;

  int64_t numel() const { return nbytes / itemsize(dtype); }
  // Row view used by activation datasets: the last dim is the row width, every leading dim
  // (N, or N*ctx for a 3-D [N, ctx, d_in]) counts rows. Throws Error for a 0-d array.
  int64_t cols() const;
  int64_t rows() const;
  bool aligned() const;  // data is aligned for its dtype

  // The whole array as float32 (f32, f16, bf16, f64 converted; integers refused with Error).
  std::vector<float> to_f32() const;
  // Rows [row0, row0 + n) as float32 into out [n, cols()]. Throws Error when out of range.
  void rows_f32(int64_t row0, int64_t n, float* out) const;
};

}  // namespace topksae
