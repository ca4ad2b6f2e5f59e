// Activation datasets on disk (shared/spec/FORMATS.md "Activation datasets for training"): one
// .npy / .safetensors / .arrow file or a directory of such shards, all with the same d_in. An npy or
// safetensors shard holds a 2-D [N, d_in] or 3-D [N, ctx, d_in] float tensor (3-D counts N*ctx
// rows); an Arrow IPC stream shard (HuggingFace `datasets`, sae_lens's activation cache) holds a
// list<list<float>> column of [ctx, d_in] per row, read as one [N, ctx, d_in] segment per record
// batch (arrow_ipc.h). Shards are read through their memory maps, so a dataset larger than memory
// streams through the page cache.
//
// Rows carry stable ids (their index in the concatenation of the shards, in file-name order, or
// in the order of a `datasets` directory's state.json), which is what lets the shuffling buffer
// (shuffle_buffer.h) checkpoint its contents as ids.
#pragma once
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "topksae/array_view.h"
#include "topksae/data.h"

namespace topksae {

// A source that splits next() into its cheap part and its expensive part, so that a batch can be
// copied once, by several threads, straight into its destination (prefetch.h): next_ids() chooses
// the ids of the next rows (bookkeeping only, on one thread), read_ids() copies rows by id out of
// the memory-mapped shards (thread-safe, the bytes).
class GatherSource : public ActivationSource {
 public:
  // The ids of the next `rows` rows into ids [rows]; returns how many (fewer at the end, as
  // next()). Strong exception guarantee: on Error the source is as it was before the call.
  virtual int64_t next_ids(int64_t* ids, int64_t rows) = 0;
  // Puts the source back where it was before the last next_ids() call (once; for a batch whose
  // rows turned out bad when read), so position() again names the rows after the last good batch.
  virtual void undo_next_ids() = 0;
  // Rows by id into out [n, d_in], converted to float32. Const and safe to call from several
  // threads at once. Throws Error naming the file and row of a row holding NaN or Inf.
  virtual void read_ids(const int64_t* ids, int64_t n, float* out) const = 0;
  // next_ids + read_ids on this thread (undone when a row is bad).
  int64_t next(float* out, int64_t rows) override;

 private:
  std::vector<int64_t> ids_;  // [rows] reused by next()
};

// A gather source over rows with stable ids (the files themselves, in order).
class IndexedSource : public GatherSource {
 public:
  // Like next(), and writes each row's id into ids [rows].
  virtual int64_t next_indexed(float* out, int64_t* ids, int64_t rows) = 0;
};

// The shards of a dataset, opened and checked (random access, no cursor). Thread-compatible: reads
// from several threads are safe.
class FileDataset {
 public:
  // path: a file or a directory (its *.npy, *.safetensors and *.arrow files, in name order; other
  // files and subdirectories are ignored). A directory holding *.arrow files and a state.json (what
  // `datasets` save_to_disk writes) is read in the order of state.json's _data_files instead, and
  // only those files. tensor: the safetensors tensor or Arrow column to read from shards holding
  // several ("" = the only one; in Arrow, the only list<list<float>> column, so sae_lens's
  // token_ids column is passed over). Throws Error naming the file: unreadable or malformed, a
  // non-float dtype, not 2-D / 3-D, a d_in different from the first shard's, no shards, no rows.
  static std::shared_ptr<const FileDataset> open(const std::filesystem::path& path, const std::string& tensor = "");

  int64_t d_in() const { return d_in_; }
  int64_t rows() const { return rows_; }
  size_t shards() const { return shards_.size(); }  // files (an Arrow file may hold several segments)
  const std::filesystem::path& shard_path(size_t i) const;  // in dataset order
  const std::filesystem::path& path() const { return path_; }
  // Rows [row0, row0 + n) of the concatenation into out [n, d_in] (crossing shards as needed).
  void read_rows(int64_t row0, int64_t n, float* out) const;
  // Reads row `row` into out [d_in] and says whether every value is finite (a NaN / Inf row).
  bool read_row_checked(int64_t row, float* out) const;
  // madvise(WILLNEED) on the bytes of rows [row0, row0 + n): the kernel starts reading them into
  // the page cache now, so a later gather from a cold file waits less. Best effort.
  void will_need(int64_t row0, int64_t n) const;
  // "<file> row <r>" for a global row: where to look when a row is bad.
  std::string where(int64_t row) const;
  // "3 npy shards at data/ (1200000 rows of d_in 768, f32)"; Arrow data also names its column.
  std::string describe() const;
  ~FileDataset();

 private:
  struct Shard;
  // A contiguous run of rows: a whole npy / safetensors array, or one Arrow record batch.
  struct Segment {
    size_t shard;
    ArrayView view;
    int64_t file_row0;  // rows of the same file before this segment (for where())
  };
  FileDataset() = default;
  size_t segment_of(int64_t row) const;
  std::filesystem::path path_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<Segment> segments_;
  std::vector<int64_t> starts_;  // [segments + 1] first global row of each segment
  int64_t d_in_ = 0, rows_ = 0;
};

struct FileSourceOptions {
  // Rows holding NaN or Inf: by default an Error naming the file and row; with skip_nonfinite they
  // are counted (skipped()) and left out.
  bool skip_nonfinite = false;
  // Start again from the first row when the data runs out (epochs); otherwise next() returns
  // fewer rows at the end.
  bool loop = false;
};

// Reads a dataset front to back.
class FileSource : public IndexedSource {
 public:
  FileSource(std::shared_ptr<const FileDataset> data, FileSourceOptions opts = {});
  int64_t d_in() const override { return data_->d_in(); }
  // The plain sequential read: rows copied (and converted) in file order, each checked for NaN/Inf.
  int64_t next(float* out, int64_t rows) override;
  int64_t next_indexed(float* out, int64_t* ids, int64_t rows) override;
  // Ids in file order. Reads no data unless skip_nonfinite, where it reads the rows to leave the
  // bad ones out; without it a bad row is refused when read_ids reads it.
  int64_t next_ids(int64_t* ids, int64_t rows) override;
  void undo_next_ids() override;
  void read_ids(const int64_t* ids, int64_t n, float* out) const override;
  // {"source":"files","rows":R,"d_in":D,"cursor":C,"epoch":E,"skipped":S}
  std::string position() const override;
  void seek(const std::string& position) override;  // Error if it describes other data
  std::string describe() const override;

  int64_t skipped() const { return skipped_.load(); }
  int64_t epoch() const { return epoch_; }  // completed passes over the data

 private:
  std::shared_ptr<const FileDataset> data_;
  FileSourceOptions opts_;
  int64_t cursor_ = 0, epoch_ = 0;
  std::atomic<int64_t> skipped_{0};  // read by the main thread while a prefetch thread reads
  struct Undo {
    int64_t cursor = 0, epoch = 0, skipped = 0;
    bool valid = false;
  } undo_;
  std::vector<float> scratch_;  // [d_in] one row, for the skip_nonfinite scan in next_ids
};

// The source a command line describes: a FileSource over `path` (shared by train, eval, encode).
std::unique_ptr<FileSource> open_file_source(const std::filesystem::path& path, const std::string& tensor,
                                             FileSourceOptions opts);

}  // namespace topksae
