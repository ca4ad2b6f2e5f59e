// Arrow IPC stream files holding activations: what HuggingFace `datasets` save_to_disk writes, and
// so sae_lens's own activation cache (shared/spec/FORMATS.md "Activation datasets for training").
// Hand-written reader (no Arrow or FlatBuffers library): the file is memory-mapped and one column,
// a list of lists of floats (list / large_list / fixed_size_list of the same, of float16, float32
// or float64; sae_lens writes list<list<float>> as the storage of datasets' Array2D extension
// type), becomes one zero-copy [rows, ctx, d_in] view per record batch.
//
// Accepted: the stream format (0xFFFFFFFF continuation marker + int32 metadata length, or the
// legacy form without the marker; an end-of-stream marker or the end of the file closes it) and
// the file format (ARROW1 magic, read through its embedded stream). Refused with an Error naming
// the file (and the column): big-endian data, compressed bodies, dictionary batches, nulls,
// lists that are not [ctx, d_in] in every row, record batches that disagree on ctx or d_in, and
// any offset, length or buffer that does not lie inside the message body and the file.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "topksae/array_view.h"
#include "topksae/mapped_file.h"

namespace topksae {
namespace detail {
class ArrowReader;
}

struct ArrowColumn {
  std::string name;
  std::string type;          // "list<list<float32>>", "fixed_size_list<int32>[3]", ...
  bool activations = false;  // a list of lists of floats: readable as [rows, ctx, d_in]
};

class ArrowStreamFile {
 public:
  // Maps and validates `path`, reading column `column` ("" = the only activations column; an
  // Error lists the columns when there is none or several, or when `column` does not exist).
  static ArrowStreamFile open(const std::filesystem::path& path, const std::string& column = "");
  // Validates borrowed bytes (fuzzers, tests); they must outlive the returned object.
  static ArrowStreamFile parse(const void* bytes, size_t size, const std::string& source = "<memory>",
                               const std::string& column = "");

  const std::string& source() const { return source_; }
  const MappedFile* mapped() const { return map_.get(); }
  const std::vector<ArrowColumn>& columns() const { return columns_; }  // top-level, schema order
  const std::string& column() const { return column_; }                // the one read
  DType dtype() const { return dtype_; }
  // The [ctx, d_in] of every row; 0 when the file holds no rows and the schema does not say.
  int64_t context_size() const { return ctx_; }
  int64_t d_in() const { return d_in_; }
  int64_t sequences() const { return sequences_; }  // rows of the column (each ctx * d_in values)
  size_t record_batches() const { return n_batches_; }
  // One view [rows, ctx, d_in] per record batch that has rows, in file order.
  const std::vector<ArrayView>& batches() const { return batches_; }

 private:
  friend class detail::ArrowReader;
  std::shared_ptr<const MappedFile> map_;
  std::string source_, column_;
  std::vector<ArrowColumn> columns_;
  DType dtype_ = DType::f32;
  int64_t ctx_ = 0, d_in_ = 0, sequences_ = 0;
  size_t n_batches_ = 0;
  std::vector<ArrayView> batches_;
};

}  // namespace topksae
