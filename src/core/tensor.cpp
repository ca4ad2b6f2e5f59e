#include "topksae/tensor.h"

#include <cstring>
#include <limits>

namespace topksae {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    TOPKSAE_CHECK(d >= 0, "negative dimension in shape ", shape_str(s));
    TOPKSAE_CHECK(d == 0 || n <= std::numeric_limits<int64_t>::max() / d, "shape ", shape_str(s),
                  " has too many elements");
    n *= d;
  }
  return n;
}

Tensor Tensor::empty(Shape shape, DType dtype, Device device, HostMemory host_kind) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  if (device == Device::cpu) t.storage_ = HostBuffer(t.nbytes(), host_kind);
  else t.storage_ = DeviceBuffer(t.nbytes());
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  if (device == Device::cpu) {
    if (t.nbytes()) std::memset(t.raw(), 0, t.nbytes());
  } else {
    std::vector<unsigned char> z(t.nbytes(), 0);
    detail::copy_bytes(t.raw(), Device::cuda, z.data(), Device::cpu, z.size());
  }
  return t;
}

Tensor Tensor::borrow(void* data, Shape shape, DType dtype, Device device) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  TOPKSAE_CHECK(data != nullptr || t.numel_ == 0, "borrowed tensor ", shape_str(shape), " has a null pointer");
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  t.storage_ = data;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, Shape shape) {
  Tensor t = empty(std::move(shape), DType::f32);
  TOPKSAE_CHECK(size_t(t.numel()) == values.size(), "from_vector: ", values.size(),
                " values do not fill shape ", shape_str(t.shape()));
  if (!values.empty()) std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  if (i < 0) i += n;
  TOPKSAE_CHECK(i >= 0 && i < n, "dimension ", i, " out of range for shape ", shape_str(shape_));
  return shape_[size_t(i)];
}

void* Tensor::raw() {
  return std::visit(
      [](auto& s) -> void* {
        using S = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<S, std::monostate>) return nullptr;
        else if constexpr (std::is_same_v<S, void*>) return s;
        else return s.data();
      },
      storage_);
}

const void* Tensor::raw() const { return const_cast<Tensor*>(this)->raw(); }

void Tensor::check_type(DType requested) const {
  TOPKSAE_CHECK(requested == dtype_, "tensor ", describe(), " accessed as ", dtype_name(requested));
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::clone() const { return to(device_); }

void Tensor::copy_from(const Tensor& src) {
  TOPKSAE_CHECK(src.dtype_ == dtype_ && src.numel_ == numel_, "copy from ", src.describe(), " into ",
                describe(), ": dtype and element count must match");
  if (nbytes() == 0) return;
  detail::copy_bytes(raw(), device_, src.raw(), src.device_, nbytes());
}

Tensor Tensor::reshape_view(Shape shape) {
  TOPKSAE_CHECK(shape_numel(shape) == numel_, "cannot view ", describe(), " as ", shape_str(shape));
  return borrow(raw(), std::move(shape), dtype_, device_);
}

std::string Tensor::describe() const {
  return concat(dtype_name(dtype_), shape_str(shape_), " on ", device_name(device_));
}

}  // namespace topksae
