// safetensors files (shared/spec/FORMATS.md): a reader that memory-maps the file and validates the
// header before trusting it, and a writer that pads the header and writes through a temp file.
//
//   8 bytes  N (u64 LE) | N bytes JSON header (space padded) | byte buffer
//   header: {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//            "__metadata__": {"<str>": "<str>"}}
#pragma once
#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "topksae/array_view.h"
#include "topksae/mapped_file.h"

namespace topksae {

class SafetensorsFile {
 public:
  // Maps and validates `path`. Throws Error("<path>: <problem>") for anything malformed: header
  // length past the end or over 100 MB, bad JSON, unknown dtype, shape*itemsize != end-begin,
  // offsets out of range / overlapping / leaving a hole, duplicate names, bad __metadata__.
  static SafetensorsFile open(const std::filesystem::path& path);
  // Validates bytes already in memory (fuzzers, tests). The bytes are borrowed: they must outlive
  // the returned object. `source` names them in messages.
  static SafetensorsFile parse(const void* bytes, size_t size, const std::string& source = "<memory>");

  const std::string& source() const { return source_; }  // the path, for messages
  // The map behind the views (null when parsed from memory), e.g. for advise_sequential().
  const MappedFile* mapped() const { return map_.get(); }
  // Tensors in file (offset) order.
  const std::vector<ArrayView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const;
  // Throws Error naming the file and the tensor when absent.
  const ArrayView& at(const std::string& name) const;
  // A tensor converted to float32 (see ArrayView::to_f32).
  std::vector<float> read_f32(const std::string& name) const { return at(name).to_f32(); }

  static constexpr uint64_t kMaxHeaderBytes = uint64_t(100) << 20;

 private:
  std::shared_ptr<const MappedFile> map_;  // null when parsed from borrowed memory
  std::string source_;
  std::vector<ArrayView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Collects tensors and metadata, then writes one file. add() BORROWS `data` (it must stay valid
// until write()); add_f32() converts float32 data to a storage dtype and owns the converted copy
// (it borrows too when the storage dtype is f32). Tensors are laid out largest itemsize first so
// every tensor stays aligned, names in insertion order otherwise. Duplicate names throw Error.
class SafetensorsWriter {
 public:
  void add(const std::string& name, DType dtype, Shape shape, const void* data);
  void add_f32(const std::string& name, Shape shape, const float* data, DType store = DType::f32);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  // Writes through a temporary file renamed into place; throws Error naming the file on failure.
  void write(const std::filesystem::path& path) const;
  // The bytes write() would put in the file (tests, small files).
  std::string to_bytes() const;

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    const void* data;
    size_t nbytes;
  };
  std::string header() const;  // padded JSON, offsets per layout()
  std::vector<const Entry*> layout() const;
  std::vector<Entry> entries_;
  std::vector<std::vector<uint8_t>> owned_;  // converted copies made by add_f32
  std::map<std::string, std::string> metadata_;
};

// Writes one safetensors file whose tensors grow by rows, without holding their data in memory:
// tensors are declared up front (name, dtype, the shape of one row), rows are appended in chunks,
// and their bytes go to spill files in the output's directory, one per tensor. finish() writes the
// header (each tensor's leading dimension is the rows appended) and copies the spills after it
// into a temporary file renamed into place. The file is byte for byte what SafetensorsWriter
// writes for the same tensors (added in declaration order) and metadata.
//
// Spill files are unlinked as soon as they are created (their open descriptors keep the data), so
// none is ever left behind: not after finish(), an exception, or a killed process. Any failure
// (unwritable directory, disk full) throws Error naming the output file and leaves no output and
// no temporary file. Memory: a buffer of kBufferBytes per tensor, whatever the number of rows.
// Disk: the spills, plus during finish() the output growing as the spills are copied (each spill
// is closed, freeing its space, once copied).
class SafetensorsStreamWriter {
 public:
  static constexpr size_t kBufferBytes = size_t(1) << 20;

  explicit SafetensorsStreamWriter(std::filesystem::path path);  // the output; nothing is created yet
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // A tensor of shape [rows, row_shape...] (row_shape empty: 1-D [rows]); creates its spill file
  // (Error naming the output when the directory is missing or unwritable). Returns its handle for
  // append(). Duplicate or invalid names throw Error.
  size_t declare(const std::string& name, DType dtype, Shape row_shape = {});
  // `rows` rows already in the tensor's dtype: rows * (bytes per row) bytes at data.
  void append(size_t tensor, const void* data, int64_t rows);
  // `rows` rows of float32 converted to the tensor's dtype (f32, f16, bf16 or f64), as add_f32 does.
  void append_f32(size_t tensor, const float* data, int64_t rows);
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  int64_t rows(size_t tensor) const;
  // Writes the file; afterwards (or after it throws) the writer takes no more rows.
  void finish();

  const std::filesystem::path& path() const { return path_; }

 private:
  struct Spill {
    std::string name;
    DType dtype;
    Shape row_shape;
    size_t row_bytes = 0;
    int64_t rows = 0;
    int fd = -1;
    std::vector<uint8_t> buf;  // bytes not yet written to fd (at most kBufferBytes)
  };
  Spill& at(size_t tensor, const char* what);
  void put(Spill& s, const void* data, size_t bytes);  // through buf
  void flush(Spill& s);
  void write_fd(Spill& s, const void* data, size_t bytes);
  void close_spills();

  std::filesystem::path path_;
  std::vector<Spill> spills_;
  std::map<std::string, std::string> metadata_;
  bool done_ = false;
};

}  // namespace topksae
