// Activation datasets on disk (include/topksae/file_source.h): shards opened through the npy,
// safetensors and Arrow IPC readers (memory-mapped), rows read straight out of the maps.
#include "topksae/file_source.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "topksae/arrow_ipc.h"
#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/npy.h"
#include "topksae/safetensors.h"

namespace topksae {
namespace fs = std::filesystem;

struct FileDataset::Shard {
  fs::path path;
  std::optional<NpyFile> npy;             // keeps the map alive
  std::optional<SafetensorsFile> st;      // keeps the map alive
  std::optional<ArrowStreamFile> arrow;   // keeps the map alive
};

namespace {
bool is_float(DType t) { return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64; }

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return e;
}

// Picks the tensor of a safetensors shard: the named one, else the only one.
const ArrayView& pick_tensor(const SafetensorsFile& f, const std::string& tensor) {
  if (!tensor.empty()) {
    TOPKSAE_CHECK(f.contains(tensor), f.source(), ": no tensor named '", tensor, "' (it holds: ",
                  [&] {
                    std::string s;
                    for (auto& t : f.tensors()) s += (s.empty() ? "" : ", ") + t.name;
                    return s;
                  }(),
                  ")");
    return f.at(tensor);
  }
  TOPKSAE_CHECK(!f.tensors().empty(), f.source(), ": holds no tensor");
  if (f.tensors().size() > 1) {
    std::string names;
    for (auto& t : f.tensors()) names += (names.empty() ? "" : ", ") + t.name;
    TOPKSAE_FAIL(f.source(), ": holds several tensors (", names, "); choose one with --tensor NAME");
  }
  return f.tensors().front();
}

// The files of a `datasets` save_to_disk directory, in the order its state.json lists them.
std::vector<fs::path> state_json_files(const fs::path& dir) {
  const fs::path sj = dir / "state.json";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_small_file(sj));
  } catch (const nlohmann::json::exception& e) {
    TOPKSAE_FAIL(sj.string(), ": not valid JSON: ", e.what());
  }
  TOPKSAE_CHECK(j.is_object() && j.contains("_data_files") && j["_data_files"].is_array(), sj.string(),
                ": no _data_files list (not a `datasets` save_to_disk state.json)");
  std::vector<fs::path> files;
  for (const auto& e : j["_data_files"]) {
    TOPKSAE_CHECK(e.is_object() && e.contains("filename") && e["filename"].is_string(), sj.string(),
                  ": a _data_files entry without a filename string: ", e.dump());
    const fs::path name = e["filename"].get<std::string>();
    TOPKSAE_CHECK(!name.empty() && name.is_relative() && name == name.filename() && name != "." && name != "..",
                  sj.string(), ": _data_files names '", name.string(), "', not a file in this directory");
    TOPKSAE_CHECK(lower_ext(name) == ".arrow", sj.string(), ": _data_files names '", name.string(),
                  "', not an .arrow file");
    std::error_code ec;
    TOPKSAE_CHECK(fs::is_regular_file(dir / name, ec), sj.string(), ": lists ", name.string(),
                  ", which is missing from ", dir.string());
    files.push_back(dir / name);
  }
  TOPKSAE_CHECK(!files.empty(), sj.string(), ": _data_files is empty");
  return files;
}

bool is_data_ext(const std::string& x) { return x == ".npy" || x == ".safetensors" || x == ".arrow"; }
}  // namespace

FileDataset::~FileDataset() = default;

std::shared_ptr<const FileDataset> FileDataset::open(const fs::path& path, const std::string& tensor) {
  std::error_code ec;
  TOPKSAE_CHECK(fs::exists(path, ec), path.string(), ": no such file or directory");
  std::vector<fs::path> files;
  if (fs::is_directory(path, ec)) {
    bool any_arrow = false;
    for (auto& e : fs::directory_iterator(path, ec)) {
      if (!e.is_regular_file()) continue;
      std::string x = lower_ext(e.path());
      any_arrow |= x == ".arrow";
      if (is_data_ext(x)) files.push_back(e.path());
    }
    TOPKSAE_CHECK(!ec, path.string(), ": cannot list the directory: ", ec.message());
    TOPKSAE_CHECK(!files.empty(), path.string(), ": no *.npy, *.safetensors or *.arrow shards in this directory");
    std::sort(files.begin(), files.end());
    if (any_arrow && fs::is_regular_file(path / "state.json", ec)) files = state_json_files(path);
  } else {
    TOPKSAE_CHECK(is_data_ext(lower_ext(path)), path.string(),
                  ": not an activation file (expected a .npy, .safetensors or .arrow file, or a directory of them)");
    files.push_back(path);
  }

  std::shared_ptr<FileDataset> d(new FileDataset());
  d->path_ = path;
  d->starts_.push_back(0);
  const Shard* first_with_d_in = nullptr;
  for (auto& f : files) {
    auto s = std::make_unique<Shard>();
    s->path = f;
    std::vector<ArrayView> views;
    int64_t cols = 0;
    if (lower_ext(f) == ".arrow") {
      s->arrow = ArrowStreamFile::open(f, tensor);
      views = s->arrow->batches();
      cols = s->arrow->d_in();  // 0 for a file without rows whose schema does not say
    } else {
      if (lower_ext(f) == ".npy") {
        s->npy = NpyFile::open(f);
        views.push_back(s->npy->array());
      } else {
        s->st = SafetensorsFile::open(f);
        views.push_back(pick_tensor(*s->st, tensor));
      }
      const ArrayView& v = views.front();
      TOPKSAE_CHECK(is_float(v.dtype), f.string(), ": tensor '", v.name, "' has dtype ", dtype_name(v.dtype),
                    "; activations must be float32, float16, bfloat16 or float64");
      TOPKSAE_CHECK(v.shape.size() == 2 || v.shape.size() == 3, f.string(), ": tensor '", v.name, "' has shape ",
                    shape_str(v.shape), "; expected [N, d_in] or [N, context, d_in]");
      cols = v.cols();
      TOPKSAE_CHECK(cols > 0, f.string(), ": d_in is 0");
    }
    if (cols > 0) {
      if (first_with_d_in == nullptr) {
        d->d_in_ = cols;
        first_with_d_in = s.get();
      }
      TOPKSAE_CHECK(cols == d->d_in_, f.string(), ": d_in ", cols, " differs from the d_in ", d->d_in_, " of ",
                    first_with_d_in->path.string(), " (every shard of a dataset must have the same d_in)");
    }
    int64_t file_rows = 0;
    for (auto& v : views) {
      d->segments_.push_back({d->shards_.size(), v, file_rows});
      file_rows += v.rows();
      d->rows_ += v.rows();
      d->starts_.push_back(d->rows_);
    }
    d->shards_.push_back(std::move(s));
  }
  TOPKSAE_CHECK(d->rows_ > 0, path.string(), ": the data holds no rows");
  return d;
}

const fs::path& FileDataset::shard_path(size_t i) const {
  TOPKSAE_CHECK(i < shards_.size(), path_.string(), ": shard ", i, " of ", shards_.size());
  return shards_[i]->path;
}

size_t FileDataset::segment_of(int64_t row) const {
  // The last segment whose start is <= row (empty segments are stepped over).
  auto it = std::upper_bound(starts_.begin(), starts_.end(), row);
  return size_t(it - starts_.begin()) - 1;
}

void FileDataset::read_rows(int64_t row0, int64_t n, float* out) const {
  TOPKSAE_CHECK(row0 >= 0 && n >= 0 && row0 + n <= rows_, path_.string(), ": rows [", row0, ", ", row0 + n,
                ") out of range for ", rows_, " rows");
  while (n > 0) {
    size_t s = segment_of(row0);
    int64_t local = row0 - starts_[s];
    int64_t m = std::min(n, starts_[s + 1] - row0);
    segments_[s].view.rows_f32(local, m, out);
    out += m * d_in_;
    row0 += m;
    n -= m;
  }
}

namespace {
// True when every value of x [n] is finite: the exponent bits of a NaN or Inf are all ones. One
// pass without branches, so the compiler vectorises it (the row is in L1 after its copy).
bool all_finite(const float* x, int64_t n) {
  uint32_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    std::memcpy(&b, x + i, sizeof b);
    bad |= uint32_t((b & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}
}  // namespace

bool FileDataset::read_row_checked(int64_t row, float* out) const {
  read_rows(row, 1, out);
  return all_finite(out, d_in_);
}

void FileDataset::will_need(int64_t row0, int64_t n) const {
  static const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  row0 = std::max<int64_t>(row0, 0);
  n = std::min(n, rows_ - row0);
  while (n > 0) {
    const size_t s = segment_of(row0);
    const ArrayView& v = segments_[s].view;
    const int64_t local = row0 - starts_[s], m = std::min(n, starts_[s + 1] - row0);
    const size_t row_bytes = size_t(d_in_) * itemsize(v.dtype);
    const uintptr_t a = reinterpret_cast<uintptr_t>(v.data) + size_t(local) * row_bytes;
    const uintptr_t lo = a & ~(page - 1), hi = a + size_t(m) * row_bytes;
    if (hi > lo) (void)::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);
    row0 += m;
    n -= m;
  }
}

std::string FileDataset::where(int64_t row) const {
  const size_t s = segment_of(row);
  const Segment& g = segments_[s];
  return concat(shards_[g.shard]->path.string(), " row ", g.file_row0 + row - starts_[s]);
}

std::string FileDataset::describe() const {
  size_t n_npy = 0, n_st = 0, n_arrow = 0;
  for (auto& s : shards_) {
    n_npy += s->npy.has_value();
    n_st += s->st.has_value();
    n_arrow += s->arrow.has_value();
  }
  std::string kind;
  for (auto [n, name] : {std::pair{n_npy, "npy"}, {n_st, "safetensors"}, {n_arrow, "arrow"}}) {
    if (n == 0) continue;
    if (!kind.empty()) kind += '/';
    kind += name;
  }
  std::string column;
  for (auto& s : shards_)
    if (s->arrow) column = concat(", column '", s->arrow->column(), "'");
  // segments_ is not empty: open() refuses data without rows.
  return concat(shards_.size(), " ", kind, " shard", shards_.size() == 1 ? "" : "s", " at ", path_.string(), column,
                " (", rows_, " rows of d_in ", d_in_, ", ", dtype_name(segments_.front().view.dtype), ")");
}

// ---- FileSource ---------------------------------------------------------------------------------

FileSource::FileSource(std::shared_ptr<const FileDataset> data, FileSourceOptions opts)
    : data_(std::move(data)), opts_(opts) {}

int64_t FileSource::next(float* out, int64_t rows) {
  std::vector<int64_t> ids(static_cast<size_t>(rows));
  return next_indexed(out, ids.data(), rows);
}

int64_t FileSource::next_indexed(float* out, int64_t* ids, int64_t rows) {
  undo_.valid = false;
  const int64_t d = data_->d_in(), total = data_->rows();
  int64_t written = 0;
  int64_t scanned_without_keep = 0;  // a dataset of nothing but bad rows must not spin forever
  while (written < rows) {
    if (cursor_ == total) {
      if (!opts_.loop) break;
      cursor_ = 0;
      ++epoch_;
    }
    int64_t m = std::min(rows - written, total - cursor_);
    float* dst = out + written * d;
    data_->read_rows(cursor_, m, dst);
    int64_t kept = 0;
    for (int64_t r = 0; r < m; ++r) {
      const float* row = dst + r * d;
      if (!all_finite(row, d)) {
        TOPKSAE_CHECK(opts_.skip_nonfinite, data_->where(cursor_ + r),
                      " holds NaN or Inf (pass --skip-nonfinite to skip such rows and count them)");
        ++skipped_;
        continue;
      }
      if (kept != r) std::copy(row, row + d, dst + kept * d);
      ids[written + kept] = cursor_ + r;
      ++kept;
    }
    cursor_ += m;
    written += kept;
    scanned_without_keep = kept ? 0 : scanned_without_keep + m;
    TOPKSAE_CHECK(scanned_without_keep <= total, data_->path().string(), ": every row holds NaN or Inf");
  }
  return written;
}

int64_t FileSource::next_ids(int64_t* ids, int64_t rows) {
  const int64_t total = data_->rows();
  // Work on copies and commit at the end: an Error (every row bad) leaves the source unchanged.
  int64_t cursor = cursor_, epoch = epoch_, skipped = skipped_.load(), written = 0;
  int64_t scanned_without_keep = 0;
  // The rows handed out now are read soon (in order) or within a mixing buffer's worth of
  // batches (shuffled): ask the kernel to start reading them, and the next as many, now.
  data_->will_need(cursor, 2 * rows);
  while (written < rows) {
    if (cursor == total) {
      if (!opts_.loop) break;
      cursor = 0;
      ++epoch;
      data_->will_need(0, rows);
    }
    if (!opts_.skip_nonfinite) {
      // No data is read here: read_ids checks each row when it copies it.
      const int64_t m = std::min(rows - written, total - cursor);
      for (int64_t r = 0; r < m; ++r) ids[written + r] = cursor + r;
      cursor += m;
      written += m;
      continue;
    }
    scratch_.resize(size_t(data_->d_in()));
    if (data_->read_row_checked(cursor, scratch_.data())) {
      ids[written++] = cursor;
      scanned_without_keep = 0;
    } else {
      ++skipped;
      TOPKSAE_CHECK(++scanned_without_keep <= total, data_->path().string(), ": every row holds NaN or Inf");
    }
    ++cursor;
  }
  undo_ = {cursor_, epoch_, skipped_.load(), true};
  cursor_ = cursor;
  epoch_ = epoch;
  skipped_ = skipped;
  return written;
}

void FileSource::undo_next_ids() {
  if (!undo_.valid) return;
  cursor_ = undo_.cursor;
  epoch_ = undo_.epoch;
  skipped_ = undo_.skipped;
  undo_.valid = false;
}

void FileSource::read_ids(const int64_t* ids, int64_t n, float* out) const {
  const int64_t d = data_->d_in();
  for (int64_t i = 0; i < n; ++i)
    TOPKSAE_CHECK(data_->read_row_checked(ids[i], out + i * d), data_->where(ids[i]),
                  " holds NaN or Inf (pass --skip-nonfinite to skip such rows and count them)");
}

int64_t GatherSource::next(float* out, int64_t rows) {
  if (ids_.size() < size_t(rows)) ids_.resize(size_t(rows));
  const int64_t n = next_ids(ids_.data(), rows);
  try {
    read_ids(ids_.data(), n, out);
  } catch (...) {
    undo_next_ids();
    throw;
  }
  return n;
}

std::string FileSource::position() const {
  nlohmann::json j = {{"source", "files"}, {"rows", data_->rows()}, {"d_in", data_->d_in()},
                      {"cursor", cursor_},  {"epoch", epoch_},       {"skipped", skipped_.load()}};
  return j.dump();
}

void FileSource::seek(const std::string& position) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(position);
  } catch (const std::exception& e) {
    TOPKSAE_FAIL("data position is not valid JSON: ", e.what());
  }
  TOPKSAE_CHECK(j.is_object() && j.value("source", "") == "files", "data position ", position,
                " is not a position in activation files");
  TOPKSAE_CHECK(j.value("rows", int64_t(-1)) == data_->rows() && j.value("d_in", int64_t(-1)) == data_->d_in(),
                "the checkpoint was taken on data of ", j.value("rows", int64_t(-1)), " rows of d_in ",
                j.value("d_in", int64_t(-1)), ", but ", data_->describe(), " has ", data_->rows(), " rows of d_in ",
                data_->d_in(), ": resume on the same data");
  int64_t c = j.value("cursor", int64_t(-1));
  TOPKSAE_CHECK(c >= 0 && c <= data_->rows(), "data position cursor ", c, " out of range");
  cursor_ = c;
  undo_.valid = false;
  epoch_ = j.value("epoch", int64_t(0));
  skipped_ = j.value("skipped", int64_t(0));
}

std::string FileSource::describe() const { return data_->describe(); }

std::unique_ptr<FileSource> open_file_source(const fs::path& path, const std::string& tensor, FileSourceOptions opts) {
  return std::make_unique<FileSource>(FileDataset::open(path, tensor), opts);
}

}  // namespace topksae
