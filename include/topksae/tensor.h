// A dense row-major tensor that knows its device, dtype and shape. It either owns its memory
// (a HostBuffer or DeviceBuffer) or borrows memory the caller owns (Tensor::borrow), which is
// how a service hands in its own device pointers without a copy.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "topksae/buffer.h"
#include "topksae/dtype.h"
#include "topksae/error.h"

namespace topksae {

// Storage types for the 16-bit floats, so that data<T>() can check the dtype.
struct f16_t {
  uint16_t bits;
};
struct bf16_t {
  uint16_t bits;
};

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  else if constexpr (std::is_same_v<T, f16_t>) return DType::f16;
  else if constexpr (std::is_same_v<T, bf16_t>) return DType::bf16;
  else if constexpr (std::is_same_v<T, double>) return DType::f64;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::i32;
  else if constexpr (std::is_same_v<T, int64_t>) return DType::i64;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::u8;
  else if constexpr (std::is_same_v<T, bool>) return DType::boolean;
  else static_assert(sizeof(T) == 0, "no DType for this C++ type");
}

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[4096, 768]"
int64_t shape_numel(const Shape& s);     // throws Error on a negative dim or overflow

class Tensor {
 public:
  Tensor() = default;  // empty: no storage, numel 0
  static Tensor empty(Shape shape, DType dtype, Device device = Device::cpu,
                      HostMemory host_kind = HostMemory::pageable);
  static Tensor zeros(Shape shape, DType dtype, Device device = Device::cpu);
  // A view of memory the caller owns and keeps alive for the tensor's lifetime.
  static Tensor borrow(void* data, Shape shape, DType dtype, Device device);
  // A host f32 tensor holding a copy of `values`.
  static Tensor from_vector(const std::vector<float>& values, Shape shape);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const;  // negative i counts from the end
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return size_t(numel_) * itemsize(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  bool is_borrowed() const { return std::holds_alternative<void*>(storage_); }

  void* raw();
  const void* raw() const;
  template <typename T>
  T* data() {
    check_type(dtype_of<T>());
    return static_cast<T*>(raw());
  }
  template <typename T>
  const T* data() const {
    check_type(dtype_of<T>());
    return static_cast<const T*>(raw());
  }

  // Explicit copies: to another device, or a same-device deep copy.
  Tensor to(Device device) const;
  Tensor clone() const;
  // Copies src's bytes into this tensor (same dtype and numel; any pair of devices).
  void copy_from(const Tensor& src);
  // Same storage, new shape with the same numel.
  Tensor reshape_view(Shape shape);

  std::string describe() const;  // "f32[4096, 768] on cpu"

 private:
  void check_type(DType requested) const;
  std::variant<std::monostate, HostBuffer, DeviceBuffer, void*> storage_;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

}  // namespace topksae
