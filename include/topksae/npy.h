// numpy .npy files (versions 1.0, 2.0, 3.0; shared/spec/FORMATS.md). The reader maps the file and
// parses the header dict strictly; data must be little-endian C order of a known dtype:
// '<f4' f32, '<f2' f16, '<f8' f64, '<i4' i32, '<i8' i64, '|u1' u8, '|b1' bool.
// Any ndim is accepted; dataset readers treat [N, d_in] and [N, ctx, d_in] as rows of d_in
// (ArrayView::rows / cols).
#pragma once
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>

#include "topksae/array_view.h"
#include "topksae/mapped_file.h"

namespace topksae {

class NpyFile {
 public:
  // Maps and validates `path`. Throws Error("<path>: <problem>"): bad magic, unknown version,
  // header length past the end, malformed header dict, fortran_order True, big-endian or
  // object/unsupported dtype, shape that does not match the data size.
  static NpyFile open(const std::filesystem::path& path);
  // Validates borrowed bytes (fuzzers, tests); they must outlive the returned object.
  static NpyFile parse(const void* bytes, size_t size, const std::string& source = "<memory>");

  const std::string& source() const { return source_; }
  const ArrayView& array() const { return array_; }
  int version_major() const { return version_major_; }

 private:
  std::shared_ptr<const MappedFile> map_;
  std::string source_;
  ArrayView array_;
  int version_major_ = 1;
};

// Writes an npy file (version 1.0, or 2.0 when the header needs it) of any supported dtype
// through a temporary file renamed into place. `data` holds numel(shape) elements, C order.
void write_npy(const std::filesystem::path& path, DType dtype, const Shape& shape, const void* data);
// The bytes write_npy would write (tests).
std::string npy_bytes(DType dtype, const Shape& shape, const void* data);

}  // namespace topksae
