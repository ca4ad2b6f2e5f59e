#include "topksae/safetensors.h"

#include <algorithm>
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
                   [](const Entry* a, const Entry* b) { return itemsize(a->dtype) > itemsize(b->dtype); });
  return order;
}

std::string SafetensorsWriter::header() const {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    h["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) h["__metadata__"][k] = v;
  }
  uint64_t off = 0;
  for (const Entry* e : layout()) {
    nlohmann::ordered_json t;
    t["dtype"] = std::string(safetensors_dtype_name(e->dtype));
    t["shape"] = e->shape;
    t["data_offsets"] = {off, off + e->nbytes};
    off += e->nbytes;
    h[e->name] = std::move(t);
  }
  std::string s = h.dump();
  s.append((8 - s.size() % 8) % 8, ' ');  // 8 + N stays a multiple of 8: the data starts aligned
  return s;
}

std::string SafetensorsWriter::to_bytes() const {
  std::string hdr = header();
  std::string out(8, '\0');
  uint64_t n = hdr.size();
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  out += hdr;
  for (const Entry* e : layout())
    if (e->nbytes > 0) out.append(static_cast<const char*>(e->data), e->nbytes);
  return out;
}

void SafetensorsWriter::write(const std::filesystem::path& path) const {
  std::string hdr = header();
  uint8_t len[8];
  uint64_t n = hdr.size();
  for (int i = 0; i < 8; ++i) len[i] = uint8_t((n >> (8 * i)) & 0xff);
  AtomicFile f(path);
  f.write(len, 8);
  f.write(hdr);
  for (const Entry* e : layout())
    if (e->nbytes > 0) f.write(e->data, e->nbytes);
  f.commit();
}

}  // namespace topksae
