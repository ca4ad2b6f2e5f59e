// DLPack inputs checked, results allocated on the input's device (python/src/arrays.h).
#include "arrays.h"

#include <nanobind/stl/string.h>

#include <cstring>
#include <new>

#include "topksae/error.h"

namespace topksae::py {
namespace {

std::string dtype_name(nb::dlpack::dtype t) {
  const char* kind = t.code == uint8_t(nb::dlpack::dtype_code::Int)      ? "int"
                     : t.code == uint8_t(nb::dlpack::dtype_code::UInt)   ? "uint"
                     : t.code == uint8_t(nb::dlpack::dtype_code::Float)  ? "float"
                     : t.code == uint8_t(nb::dlpack::dtype_code::Bfloat) ? "bfloat"
                     : t.code == uint8_t(nb::dlpack::dtype_code::Bool)   ? "bool"
                                                                          : "other";
  return std::string(kind) + std::to_string(t.bits) + (t.lanes != 1 ? "x" + std::to_string(t.lanes) : "");
}

Framework framework_of(nb::handle obj) {
  std::string mod = nb::cast<std::string>(nb::getattr(obj.type(), "__module__", nb::str("")));
  if (mod.rfind("torch", 0) == 0) return Framework::pytorch;
  if (mod.rfind("numpy", 0) == 0) return Framework::numpy;
  return Framework::other;
}

// Frees what new_matrix allocated when the Python owner goes away.
void free_host(void* p) noexcept { ::operator delete[](p, std::align_val_t(64)); }
void free_device(void* p) noexcept { detail::device_free(p); }

}  // namespace

ArrayIn read_matrix(nb::handle obj, const char* arg, const char* dtype, int64_t cols) {
  ArrayIn in;
  if (!nb::try_cast(obj, in.array, /*convert=*/false))
    throw nb::type_error((std::string(arg) + ": expected an array with __dlpack__ or the buffer protocol (numpy, "
                          "torch), got " + nb::cast<std::string>(nb::str(obj.type())))
                             .c_str());
  const nb::ndarray<nb::ro>& a = in.array;
  const bool want_f32 = std::strcmp(dtype, "float32") == 0;
  const nb::dlpack::dtype want = want_f32 ? nb::dtype<float>() : nb::dtype<int32_t>();
  if (a.dtype() != want)
    throw nb::type_error((std::string(arg) + ": expected dtype " + dtype + ", got " + dtype_name(a.dtype()) +
                          (want_f32 ? " (convert it first: x.astype(numpy.float32), x.float())"
                                    : " (convert it first: i.astype(numpy.int32), i.int())"))
                             .c_str());
  if (a.ndim() != 2)
    throw nb::value_error((std::string(arg) + ": expected a 2-D array [rows, cols], got " + std::to_string(a.ndim()) +
                           "-D (reshape it to [-1, " + (cols > 0 ? std::to_string(cols) : std::string("cols")) + "])")
                              .c_str());
  in.rows = int64_t(a.shape(0));
  in.cols = int64_t(a.shape(1));
  if (cols >= 0 && in.cols != cols)
    throw nb::value_error((std::string(arg) + ": expected " + std::to_string(cols) + " columns, got shape [" +
                           std::to_string(in.rows) + ", " + std::to_string(in.cols) + "]")
                              .c_str());
  // Row-major and dense; a dimension of extent 1 may carry any stride (numpy and torch both do that).
  const bool contiguous = (in.cols <= 1 || a.stride(1) == 1) && (in.rows <= 1 || a.stride(0) == in.cols);
  if (!contiguous)
    throw nb::value_error((std::string(arg) + ": not C-contiguous (strides [" + std::to_string(a.stride(0)) + ", " +
                           std::to_string(a.stride(1)) + "] elements); pass numpy.ascontiguousarray(x) or "
                           "x.contiguous()")
                              .c_str());
  if (a.device_type() == nb::device::cpu::value) {
    in.device = Device::cpu;
  } else if (a.device_type() == nb::device::cuda::value) {
    in.device = Device::cuda;
    in.device_id = a.device_id();
  } else {
    throw nb::value_error((std::string(arg) + ": arrays on DLPack device type " + std::to_string(a.device_type()) +
                           " are not supported (cpu or cuda only)")
                              .c_str());
  }
  in.data = a.data();
  in.framework = framework_of(obj);
  return in;
}

template <typename T>
nb::object new_matrix(const ArrayIn& like, int64_t rows, int64_t cols, T** data) {
  const size_t bytes = std::max<size_t>(1, size_t(rows) * size_t(cols) * sizeof(T));
  void* p = nullptr;
  nb::capsule owner;
  if (like.device == Device::cpu) {
    p = ::operator new[](bytes, std::align_val_t(64));
    owner = nb::capsule(p, free_host);
  } else {
    p = detail::device_malloc(bytes);
    owner = nb::capsule(p, free_device);
  }
  *data = static_cast<T*>(p);
  const size_t shape[2] = {size_t(rows), size_t(cols)};
  const int dev = like.device == Device::cpu ? nb::device::cpu::value : nb::device::cuda::value;
  const int id = like.device == Device::cpu ? 0 : like.device_id;
  auto make = [&](auto framework_tag) {
    using F = decltype(framework_tag);
    return nb::cast(nb::ndarray<F, T>(p, 2, shape, owner, nullptr, nb::dtype<T>(), dev, id), nb::rv_policy::reference);
  };
  if (like.framework == Framework::pytorch) return make(nb::pytorch{});
  if (like.device == Device::cpu) return make(nb::numpy{});
  return make(nb::array_api{});
}

template nb::object new_matrix<float>(const ArrayIn&, int64_t, int64_t, float**);
template nb::object new_matrix<int32_t>(const ArrayIn&, int64_t, int64_t, int32_t**);

}  // namespace topksae::py
