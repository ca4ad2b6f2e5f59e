#include "topksae/array_view.h"

#include <cstring>

#include "topksae/error.h"

namespace topksae {

int64_t ArrayView::cols() const {
  TOPKSAE_CHECK(!shape.empty(), name, ": a 0-d array has no rows");
  return shape.back();
}

int64_t ArrayView::rows() const {
  TOPKSAE_CHECK(!shape.empty(), name, ": a 0-d array has no rows");
  int64_t r = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) r *= shape[i];  // bounded: the file holds numel elements
  return r;
}

bool ArrayView::aligned() const { return reinterpret_cast<uintptr_t>(data) % itemsize(dtype) == 0; }

namespace {
// Converts n elements starting at byte offset `byte0`, copying through an aligned bounce buffer
// when the source is unaligned (the dtype conversions read through typed pointers).
void convert_span(const ArrayView& a, size_t elem0, size_t n, float* out) {
  const size_t isz = itemsize(a.dtype);
  TOPKSAE_CHECK(a.dtype == DType::f32 || a.dtype == DType::f16 || a.dtype == DType::bf16 || a.dtype == DType::f64,
                a.name, ": cannot read dtype ", dtype_name(a.dtype), " as float32");
  if (n == 0) return;
  const uint8_t* src = static_cast<const uint8_t*>(a.data) + elem0 * isz;
  if (reinterpret_cast<uintptr_t>(src) % isz == 0) {
    convert_to_f32(a.dtype, src, out, n);
    return;
  }
  alignas(8) uint8_t bounce[4096];
  const size_t per = sizeof(bounce) / isz;
  for (size_t i = 0; i < n; i += per) {
    size_t m = n - i < per ? n - i : per;
    std::memcpy(bounce, src + i * isz, m * isz);
    convert_to_f32(a.dtype, bounce, out + i, m);
  }
}
}  // namespace

std::vector<float> ArrayView::to_f32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  convert_span(*this, 0, out.size(), out.data());  // refuses integer dtypes even when empty
  return out;
}

void ArrayView::rows_f32(int64_t row0, int64_t n, float* out) const {
  const int64_t r = rows(), c = cols();
  TOPKSAE_CHECK(row0 >= 0 && n >= 0 && row0 <= r && n <= r - row0, name, ": rows [", row0, ", ", row0 + n,
                ") out of range for ", r, " rows");
  convert_span(*this, size_t(row0 * c), size_t(n * c), out);
}

}  // namespace topksae
