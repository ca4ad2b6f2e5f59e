// Arrays in and out of the binding through DLPack (nanobind's nb::ndarray): the checks that turn a
// wrong dtype, shape, device or layout into a clear TypeError / ValueError instead of a crash, and
// the result arrays, allocated on the input's device and handed back in the input's framework.
#pragma once
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <string>

#include "topksae/device.h"

namespace topksae::py {
namespace nb = nanobind;

// Where an input lives and which framework its results go back in.
enum class Framework { numpy, pytorch, other };

struct ArrayIn {
  nb::ndarray<nb::ro> array;  // keeps the producer's memory alive; never copied
  const void* data = nullptr;
  int64_t rows = 0, cols = 0;
  Device device = Device::cpu;
  int device_id = 0;
  Framework framework = Framework::numpy;
};

// Reads `obj` (anything with __dlpack__ or the buffer protocol) as a C-contiguous [rows, cols]
// matrix of `dtype` ("float32" or "int32") on the CPU or a CUDA device. cols < 0: any width.
// Raises TypeError (not an array, wrong dtype) or ValueError (ndim, width, layout, device kind).
ArrayIn read_matrix(nb::handle obj, const char* arg, const char* dtype, int64_t cols);

// A new [rows, cols] array of T on `like`'s device, owned by the returned Python object, in
// `like`'s framework (numpy for other CPU producers, a DLPack-capable nanobind array otherwise).
// *data receives the memory to fill.
template <typename T>
nb::object new_matrix(const ArrayIn& like, int64_t rows, int64_t cols, T** data);

}  // namespace topksae::py
