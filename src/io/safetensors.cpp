#include "topksae/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string_view>
#include <vector>

#include "topksae/atomic_file.h"
#include "topksae/error.h"

namespace topksae {

using nlohmann::json;

namespace {

// Parses the header JSON, refusing duplicate keys in any object (nlohmann would keep the last).
json parse_header_json(std::string_view text, const std::string& src) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string dup;
  auto cb = [&](int /*depth*/, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::object_start) keys.emplace_back();
    else if (ev == json::parse_event_t::object_end) keys.pop_back();
    else if (ev == json::parse_event_t::key && !keys.empty()) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second && dup.empty()) dup = k;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text.begin(), text.end(), cb);
  } catch (const json::exception& e) {
    TOPKSAE_FAIL(src, ": the safetensors header is not valid JSON: ", e.what());
  }
  if (!dup.empty()) TOPKSAE_FAIL(src, ": duplicate name '", dup, "' in the safetensors header");
  return j;
}

uint64_t checked_offset(const json& v, const std::string& src, const std::string& name) {
  if (!v.is_number_unsigned())
    TOPKSAE_FAIL(src, ": tensor '", name, "': data_offsets must be non-negative integers, got ", v.dump());
  return v.get<uint64_t>();
}

// The writers' shared layout, so that SafetensorsStreamWriter's files are SafetensorsWriter's to
// the byte: tensors largest itemsize first (a stable sort: insertion order otherwise), so every
// tensor stays aligned.
bool layout_before(DType a, DType b) { return itemsize(a) > itemsize(b); }

struct HeaderEntry {
  const std::string* name;
  DType dtype;
  const Shape* shape;
  size_t nbytes;
};

// The header JSON for tensors in layout order, padded with spaces so that 8 + its length is a
// multiple of 8: the data starts aligned.
std::string padded_header(const std::vector<HeaderEntry>& order, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    h["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) h["__metadata__"][k] = v;
  }
  uint64_t off = 0;
  for (const HeaderEntry& e : order) {
    nlohmann::ordered_json t;
    t["dtype"] = std::string(safetensors_dtype_name(e.dtype));
    t["shape"] = *e.shape;
    t["data_offsets"] = {off, off + e.nbytes};
    off += e.nbytes;
    h[*e.name] = std::move(t);
  }
  std::string s = h.dump();
  s.append((8 - s.size() % 8) % 8, ' ');
  return s;
}

// The 8-byte little-endian header length.
std::array<uint8_t, 8> le64(uint64_t n) {
  std::array<uint8_t, 8> b{};
  for (int i = 0; i < 8; ++i) b[size_t(i)] = uint8_t((n >> (8 * i)) & 0xff);
  return b;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  auto map = MappedFile::open(path);
  SafetensorsFile f = parse(map->data(), map->size(), path.string());
  f.map_ = std::move(map);
  return f;
}

SafetensorsFile SafetensorsFile::parse(const void* bytes, size_t size, const std::string& source) {
  SafetensorsFile f;
  f.source_ = source;
  const std::string& src = f.source_;
  const uint8_t* p = static_cast<const uint8_t*>(bytes);
  if (size < 8) TOPKSAE_FAIL(src, ": truncated: ", size, " bytes is too short for a safetensors file (8-byte header length)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | p[i];  // little-endian u64
  if (n > kMaxHeaderBytes)
    TOPKSAE_FAIL(src, ": header length ", n, " exceeds the ", kMaxHeaderBytes, "-byte limit (corrupt or not a safetensors file)");
  if (n > size - 8)
    TOPKSAE_FAIL(src, ": header length ", n, " runs past the end of the file (", size, " bytes; truncated?)");
  std::string_view text(reinterpret_cast<const char*>(p + 8), size_t(n));
  const size_t data_start = 8 + size_t(n);
  const uint64_t buffer_size = size - data_start;

  json j = parse_header_json(text, src);
  if (!j.is_object()) TOPKSAE_FAIL(src, ": the safetensors header must be a JSON object, got ", j.type_name());

  struct Raw {
    ArrayView view;
    uint64_t begin, end;
  };
  std::vector<Raw> raw;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) TOPKSAE_FAIL(src, ": __metadata__ must be an object of strings, got ", v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          TOPKSAE_FAIL(src, ": __metadata__ value of '", m.key(), "' must be a string, got ", m.value().type_name());
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) TOPKSAE_FAIL(src, ": tensor '", name, "': entry must be an object, got ", v.type_name());
    for (const char* key : {"dtype", "shape", "data_offsets"})
      if (!v.contains(key)) TOPKSAE_FAIL(src, ": tensor '", name, "': missing \"", key, "\"");
    const json& jd = v["dtype"];
    if (!jd.is_string()) TOPKSAE_FAIL(src, ": tensor '", name, "': dtype must be a string");
    Raw r;
    r.view.name = name;
    try {
      r.view.dtype = dtype_from_safetensors(jd.get_ref<const std::string&>());
    } catch (const Error&) {
      TOPKSAE_FAIL(src, ": tensor '", name, "': unknown dtype '", jd.get<std::string>(),
                   "' (known: F32, F16, BF16, F64, I32, I64, U8, BOOL)");
    }
    const json& js = v["shape"];
    if (!js.is_array()) TOPKSAE_FAIL(src, ": tensor '", name, "': shape must be an array");
    // numel * itemsize is computed with overflow checks: a hostile shape must not wrap around.
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : js) {
      if (!d.is_number_unsigned()) TOPKSAE_FAIL(src, ": tensor '", name, "': shape entries must be non-negative integers, got ", d.dump());
      uint64_t dim = d.get<uint64_t>();
      if (dim > uint64_t(std::numeric_limits<int64_t>::max())) overflow = true;
      r.view.shape.push_back(int64_t(std::min<uint64_t>(dim, uint64_t(std::numeric_limits<int64_t>::max()))));
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) overflow = true;
      else numel *= dim;
    }
    const json& jo = v["data_offsets"];
    if (!jo.is_array() || jo.size() != 2) TOPKSAE_FAIL(src, ": tensor '", name, "': data_offsets must be [begin, end]");
    r.begin = checked_offset(jo[0], src, name);
    r.end = checked_offset(jo[1], src, name);
    if (r.begin > r.end) TOPKSAE_FAIL(src, ": tensor '", name, "': data_offsets [", r.begin, ", ", r.end, "] have begin > end");
    if (r.end > buffer_size)
      TOPKSAE_FAIL(src, ": tensor '", name, "': data_offsets [", r.begin, ", ", r.end, "] out of range: the data buffer holds ",
                   buffer_size, " bytes (truncated file?)");
    const uint64_t isz = itemsize(r.view.dtype);
    if (!overflow && numel > std::numeric_limits<uint64_t>::max() / isz) overflow = true;
    if (overflow || numel * isz != r.end - r.begin)
      TOPKSAE_FAIL(src, ": tensor '", name, "': shape ", shape_str(r.view.shape), " of ", jd.get<std::string>(), " needs ",
                   overflow ? std::string("more than 2^64") : std::to_string(numel * isz), " bytes but data_offsets span ",
                   r.end - r.begin, " (shape*itemsize mismatch)");
    r.view.data = p + data_start + r.begin;
    r.view.nbytes = size_t(r.end - r.begin);
    raw.push_back(std::move(r));
  }

  // Sorted by offset, the tensors must tile the buffer exactly: no overlap, no hole, no tail.
  std::sort(raw.begin(), raw.end(), [](const Raw& a, const Raw& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  const std::string* prev = nullptr;
  for (const Raw& r : raw) {
    if (r.begin < pos)
      TOPKSAE_FAIL(src, ": overlapping data_offsets: tensor '", r.view.name, "' [", r.begin, ", ", r.end,
                   ") overlaps tensor '", *prev, "' ending at ", pos);
    if (r.begin > pos)
      TOPKSAE_FAIL(src, ": hole in the data buffer: bytes [", pos, ", ", r.begin, ") before tensor '", r.view.name,
                   "' belong to no tensor");
    pos = r.end;
    prev = &r.view.name;
  }
  if (pos != buffer_size)
    TOPKSAE_FAIL(src, ": hole in the data buffer: bytes [", pos, ", ", buffer_size, ") at the end belong to no tensor");
  for (Raw& r : raw) f.tensors_.push_back(std::move(r.view));
  return f;
}

bool SafetensorsFile::contains(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return true;
  return false;
}

const ArrayView& SafetensorsFile::at(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  std::string names;
  for (const auto& t : tensors_) names += (names.empty() ? "" : ", ") + t.name;
  TOPKSAE_FAIL(source_, ": no tensor named '", name, "' (it holds: ", names.empty() ? "nothing" : names, ")");
}

// ---- writer ------------------------------------------------------------------------------------

void SafetensorsWriter::add(const std::string& name, DType dtype, Shape shape, const void* data) {
  TOPKSAE_CHECK(name != "__metadata__" && !name.empty(), "safetensors: invalid tensor name '", name, "'");
  for (const auto& e : entries_) TOPKSAE_CHECK(e.name != name, "safetensors: tensor '", name, "' added twice");
  const size_t nbytes = size_t(shape_numel(shape)) * itemsize(dtype);
  TOPKSAE_CHECK(data != nullptr || nbytes == 0, "safetensors: tensor '", name, "' has no data");
  entries_.push_back(Entry{name, dtype, std::move(shape), data, nbytes});
}

void SafetensorsWriter::add_f32(const std::string& name, Shape shape, const float* data, DType store) {
  if (store == DType::f32) return add(name, DType::f32, std::move(shape), data);
  const size_t n = size_t(shape_numel(shape));
  std::vector<uint8_t> buf(n * itemsize(store));
  if (n > 0) convert_from_f32(store, data, buf.data(), n);
  owned_.push_back(std::move(buf));
  add(name, store, std::move(shape), owned_.back().data());
}

std::vector<const SafetensorsWriter::Entry*> SafetensorsWriter::layout() const {
  std::vector<const Entry*> order;
  for (const auto& e : entries_) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(),
                   [](const Entry* a, const Entry* b) { return layout_before(a->dtype, b->dtype); });
  return order;
}

std::string SafetensorsWriter::header() const {
  std::vector<HeaderEntry> h;
  for (const Entry* e : layout()) h.push_back(HeaderEntry{&e->name, e->dtype, &e->shape, e->nbytes});
  return padded_header(h, metadata_);
}

std::string SafetensorsWriter::to_bytes() const {
  std::string hdr = header();
  const auto len = le64(hdr.size());
  std::string out(reinterpret_cast<const char*>(len.data()), len.size());
  out += hdr;
  for (const Entry* e : layout())
    if (e->nbytes > 0) out.append(static_cast<const char*>(e->data), e->nbytes);
  return out;
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  std::string hdr = header();
  const auto len = le64(hdr.size());
  AtomicFile f(path);
  f.write(len.data(), len.size());
  f.write(hdr);
  for (const Entry* e : layout())
    if (e->nbytes > 0) f.write(e->data, e->nbytes);
  f.commit();
}

// ---- streaming writer ----------------------------------------------------------------------------

SafetensorsStreamWriter::SafetensorsStreamWriter(std::filesystem::path path) : path_(std::move(path)) {}

SafetensorsStreamWriter::~SafetensorsStreamWriter() { close_spills(); }

void SafetensorsStreamWriter::close_spills() {
  for (Spill& s : spills_)
    if (s.fd >= 0) {
      ::close(s.fd);  // the file was unlinked when created: closing frees its space
      s.fd = -1;
    }
}

size_t SafetensorsStreamWriter::declare(const std::string& name, DType dtype, Shape row_shape) {
  TOPKSAE_CHECK(!done_, path_.string(), ": tensor '", name, "' declared after finish() or a failed write");
  TOPKSAE_CHECK(name != "__metadata__" && !name.empty(), path_.string(), ": invalid tensor name '", name, "'");
  for (const Spill& s : spills_) TOPKSAE_CHECK(s.name != name, path_.string(), ": tensor '", name, "' declared twice");
  for (int64_t dim : row_shape)
    TOPKSAE_CHECK(dim >= 0, path_.string(), ": tensor '", name, "': negative dimension in row shape ", shape_str(row_shape));
  Spill s;
  s.name = name;
  s.dtype = dtype;
  s.row_bytes = size_t(shape_numel(row_shape)) * itemsize(dtype);  // shape_numel refuses negative dims
  s.row_shape = std::move(row_shape);
  const std::filesystem::path dir = path_.parent_path();
  std::string file = ".";  // built in steps (GCC 12 -Wrestrict, as in atomic_file.cpp)
  file += path_.filename().string();
  file += ".spill";
  file += std::to_string(spills_.size());
  file += ".XXXXXX";
  std::string templ = (dir / file).string();
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  s.fd = ::mkstemp(buf.data());
  if (s.fd < 0)
    TOPKSAE_FAIL(path_.string(), ": cannot create a spill file for tensor '", name, "' in '",
                 dir.empty() ? std::string(".") : dir.string(), "': ", std::strerror(errno));
  // Unlinked at once: the descriptor keeps the data, and nothing is left behind however we stop.
  ::unlink(buf.data());
  spills_.push_back(std::move(s));
  return spills_.size() - 1;
}

SafetensorsStreamWriter::Spill& SafetensorsStreamWriter::at(size_t tensor, const char* what) {
  TOPKSAE_CHECK(tensor < spills_.size(), path_.string(), ": ", what, " to undeclared tensor #", tensor);
  TOPKSAE_CHECK(!done_, path_.string(), ": ", what, " to tensor '", spills_[tensor].name,
                "' after finish() or a failed write");
  return spills_[tensor];
}

int64_t SafetensorsStreamWriter::rows(size_t tensor) const {
  TOPKSAE_CHECK(tensor < spills_.size(), path_.string(), ": no tensor #", tensor);
  return spills_[tensor].rows;
}

void SafetensorsStreamWriter::write_fd(Spill& s, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(s.fd, p, std::min(bytes, size_t(1) << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      done_ = true;  // the spill lost bytes: the file can no longer be written
      close_spills();
      const std::filesystem::path dir = path_.parent_path();
      TOPKSAE_FAIL(path_.string(), ": cannot write the spill file of tensor '", s.name, "' in '",
                   dir.empty() ? std::string(".") : dir.string(), "': ", std::strerror(err));
    }
    p += n;
    bytes -= size_t(n);
  }
}

void SafetensorsStreamWriter::flush(Spill& s) {
  if (s.buf.empty()) return;
  write_fd(s, s.buf.data(), s.buf.size());
  s.buf.clear();
}

void SafetensorsStreamWriter::put(Spill& s, const void* data, size_t bytes) {
  if (s.buf.size() + bytes > kBufferBytes) flush(s);
  if (bytes >= kBufferBytes) return write_fd(s, data, bytes);  // large appends skip the buffer
  if (s.buf.capacity() < kBufferBytes) s.buf.reserve(kBufferBytes);
  const uint8_t* p = static_cast<const uint8_t*>(data);
  s.buf.insert(s.buf.end(), p, p + bytes);
}

void SafetensorsStreamWriter::append(size_t tensor, const void* data, int64_t rows) {
  Spill& s = at(tensor, "append");
  TOPKSAE_CHECK(rows >= 0, path_.string(), ": tensor '", s.name, "': cannot append ", rows, " rows");
  TOPKSAE_CHECK(s.row_bytes == 0 || uint64_t(rows) <= std::numeric_limits<size_t>::max() / s.row_bytes,
                path_.string(), ": tensor '", s.name, "': ", rows, " rows overflow the byte count");
  const size_t bytes = size_t(rows) * s.row_bytes;
  TOPKSAE_CHECK(data != nullptr || bytes == 0, path_.string(), ": tensor '", s.name, "': no data to append");
  if (bytes > 0) put(s, data, bytes);
  s.rows += rows;
}

void SafetensorsStreamWriter::append_f32(size_t tensor, const float* data, int64_t rows) {
  Spill& s = at(tensor, "append");
  if (s.dtype == DType::f32) return append(tensor, data, rows);
  TOPKSAE_CHECK(s.dtype == DType::f16 || s.dtype == DType::bf16 || s.dtype == DType::f64, path_.string(),
                ": tensor '", s.name, "' holds ", dtype_name(s.dtype), ", which float32 rows cannot be converted to");
  TOPKSAE_CHECK(rows >= 0, path_.string(), ": tensor '", s.name, "': cannot append ", rows, " rows");
  const size_t isz = itemsize(s.dtype), per_row = s.row_bytes / isz;
  TOPKSAE_CHECK(per_row == 0 || uint64_t(rows) <= std::numeric_limits<size_t>::max() / s.row_bytes,
                path_.string(), ": tensor '", s.name, "': ", rows, " rows overflow the byte count");
  size_t left = size_t(rows) * per_row;  // elements
  TOPKSAE_CHECK(data != nullptr || left == 0, path_.string(), ": tensor '", s.name, "': no data to append");
  // Converted straight into the buffer, a buffer's worth at a time.
  while (left > 0) {
    if (s.buf.size() + isz > kBufferBytes) flush(s);
    if (s.buf.capacity() < kBufferBytes) s.buf.reserve(kBufferBytes);
    const size_t n = std::min(left, (kBufferBytes - s.buf.size()) / isz), old = s.buf.size();
    s.buf.resize(old + n * isz);
    convert_from_f32(s.dtype, data, s.buf.data() + old, n);
    data += n;
    left -= n;
  }
  s.rows += rows;
}

void SafetensorsStreamWriter::finish() {
  TOPKSAE_CHECK(!done_, path_.string(), ": finish() after finish() or a failed write");
  try {
    for (Spill& s : spills_) flush(s);
    done_ = true;
    std::vector<Shape> shapes;  // [rows, row_shape...] per tensor
    for (const Spill& s : spills_) {
      Shape sh{s.rows};
      sh.insert(sh.end(), s.row_shape.begin(), s.row_shape.end());
      shapes.push_back(std::move(sh));
    }
    std::vector<size_t> order(spills_.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return layout_before(spills_[a].dtype, spills_[b].dtype); });
    std::vector<HeaderEntry> h;
    for (size_t i : order)
      h.push_back(HeaderEntry{&spills_[i].name, spills_[i].dtype, &shapes[i], size_t(spills_[i].rows) * spills_[i].row_bytes});
    const std::string hdr = padded_header(h, metadata_);
    const auto len = le64(hdr.size());

    AtomicFile f(path_);  // removes its temporary file if anything below throws
    f.write(len.data(), len.size());
    f.write(hdr);
    std::vector<uint8_t> chunk(size_t(4) << 20);
    for (size_t j = 0; j < order.size(); ++j) {
      Spill& s = spills_[order[j]];
      const size_t nbytes = h[j].nbytes;
      for (size_t off = 0; off < nbytes;) {
        const ssize_t n = ::pread(s.fd, chunk.data(), std::min(chunk.size(), nbytes - off), off_t(off));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) TOPKSAE_FAIL(path_.string(), ": cannot read back the spill file of tensor '", s.name, "': ", std::strerror(errno));
        if (n == 0)
          TOPKSAE_FAIL(path_.string(), ": the spill file of tensor '", s.name, "' holds ", off, " bytes, not ", nbytes);
        f.write(chunk.data(), size_t(n));
        off += size_t(n);
      }
      ::close(s.fd);  // copied: free its space before the next one
      s.fd = -1;
    }
    f.commit();
  } catch (...) {
    done_ = true;
    close_spills();
    throw;
  }
  close_spills();
}

}  // namespace topksae
