// Arrow IPC stream reader for activation columns (include/topksae/arrow_ipc.h). The metadata field
// ids and enum values below are those of Arrow's format/Message.fbs and format/Schema.fbs; the
// reading code is our own (src/io/flatbuf.h).
#include "topksae/arrow_ipc.h"

#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "flatbuf.h"
#include "topksae/error.h"

namespace topksae {
namespace {

// Message.fbs / Schema.fbs facts.
enum MessageField { kMsgVersion = 0, kMsgHeaderType = 1, kMsgHeader = 2, kMsgBodyLength = 3 };
enum MessageHeader : uint8_t { kHdrSchema = 1, kHdrDictionaryBatch = 2, kHdrRecordBatch = 3 };
enum MetadataVersion : int16_t { kV4 = 3, kV5 = 4 };
enum SchemaField { kSchemaEndianness = 0, kSchemaFields = 1 };
enum FieldField { kFieldName = 0, kFieldTypeType = 2, kFieldType = 3, kFieldDictionary = 4, kFieldChildren = 5,
                  kFieldCustomMetadata = 6 };
enum RecordBatchField { kRbLength = 0, kRbNodes = 1, kRbBuffers = 2, kRbCompression = 3 };
enum TypeId : uint8_t {
  kNull = 1, kInt = 2, kFloatingPoint = 3, kBinary = 4, kUtf8 = 5, kBool = 6, kDecimal = 7, kDate = 8, kTime = 9,
  kTimestamp = 10, kInterval = 11, kList = 12, kStruct = 13, kUnion = 14, kFixedSizeBinary = 15, kFixedSizeList = 16,
  kMap = 17, kDuration = 18, kLargeBinary = 19, kLargeUtf8 = 20, kLargeList = 21, kRunEndEncoded = 22,
  kBinaryView = 23, kUtf8View = 24, kListView = 25, kLargeListView = 26
};
enum Precision : int16_t { kHalf = 0, kSingle = 1, kDouble = 2 };
constexpr size_t kFieldNodeSize = 16;  // struct FieldNode { length: long; null_count: long; }
constexpr size_t kBufferSize = 16;     // struct Buffer { offset: long; length: long; }
constexpr int kMaxDepth = 64;          // nesting of fields; real schemas are a few levels deep

struct FieldDesc {
  std::string name;
  uint8_t type = 0;
  int64_t param = 0;  // Int bit width, FloatingPoint precision, fixed sizes
  bool is_signed = false;
  bool dictionary = false;
  std::vector<FieldDesc> children;
  std::string ext_name, ext_meta;  // ARROW:extension:name / :metadata
};

FieldDesc parse_field(const fb::Table& t, int depth) {
  if (depth > kMaxDepth) t.buf().fail(concat("fields nested more than ", kMaxDepth, " deep"));
  FieldDesc f;
  f.name = std::string(t.string(kFieldName));
  f.type = t.scalar<uint8_t>(kFieldTypeType, 0);
  fb::Table type = t.table(kFieldType);
  if (type.valid()) {
    switch (f.type) {
      case kInt: f.param = type.scalar<int32_t>(0, 0); f.is_signed = type.scalar<uint8_t>(1, 0) != 0; break;
      case kFloatingPoint: f.param = type.scalar<int16_t>(0, 0); break;
      case kFixedSizeList:
      case kFixedSizeBinary: f.param = type.scalar<int32_t>(0, 0); break;
      default: break;
    }
  }
  f.dictionary = t.has(kFieldDictionary);
  fb::Vec ch = t.vector(kFieldChildren, 4);
  for (size_t i = 0; i < ch.count; ++i) f.children.push_back(parse_field(t.table_at(ch, i), depth + 1));
  fb::Vec md = t.vector(kFieldCustomMetadata, 4);
  for (size_t i = 0; i < md.count; ++i) {
    fb::Table kv = t.table_at(md, i);
    std::string_view key = kv.string(0);
    if (key == "ARROW:extension:name") f.ext_name = std::string(kv.string(1));
    if (key == "ARROW:extension:metadata") f.ext_meta = std::string(kv.string(1));
  }
  return f;
}

std::string type_str(const FieldDesc& f) {
  auto child = [&](size_t i) { return i < f.children.size() ? type_str(f.children[i]) : std::string("?"); };
  std::string s;
  switch (f.type) {
    case kNull: s = "null"; break;
    case kInt: s = concat(f.is_signed ? "int" : "uint", f.param); break;
    case kFloatingPoint: s = f.param == kHalf ? "float16" : f.param == kSingle ? "float32" : f.param == kDouble ? "float64" : "float?"; break;
    case kBinary: s = "binary"; break;
    case kUtf8: s = "utf8"; break;
    case kBool: s = "bool"; break;
    case kDecimal: s = "decimal"; break;
    case kDate: s = "date"; break;
    case kTime: s = "time"; break;
    case kTimestamp: s = "timestamp"; break;
    case kInterval: s = "interval"; break;
    case kList: s = "list<" + child(0) + ">"; break;
    case kStruct: s = "struct"; break;
    case kUnion: s = "union"; break;
    case kFixedSizeBinary: s = concat("fixed_size_binary[", f.param, "]"); break;
    case kFixedSizeList: s = concat("fixed_size_list<", child(0), ">[", f.param, "]"); break;
    case kMap: s = "map"; break;
    case kDuration: s = "duration"; break;
    case kLargeBinary: s = "large_binary"; break;
    case kLargeUtf8: s = "large_utf8"; break;
    case kLargeList: s = "large_list<" + child(0) + ">"; break;
    case kRunEndEncoded: s = "run_end_encoded"; break;
    case kBinaryView: s = "binary_view"; break;
    case kUtf8View: s = "utf8_view"; break;
    case kListView: s = "list_view"; break;
    case kLargeListView: s = "large_list_view"; break;
    default: s = concat("type#", int(f.type)); break;
  }
  return f.dictionary ? "dictionary<" + s + ">" : s;
}

bool is_list(uint8_t t) { return t == kList || t == kLargeList || t == kFixedSizeList; }

// A list of lists of floats (what an activation column is).
bool is_activations(const FieldDesc& f) {
  if (f.dictionary || !is_list(f.type) || f.children.size() != 1) return false;
  const FieldDesc& in = f.children[0];
  if (in.dictionary || !is_list(in.type) || in.children.size() != 1) return false;
  const FieldDesc& v = in.children[0];
  return !v.dictionary && v.type == kFloatingPoint && (v.param == kHalf || v.param == kSingle || v.param == kDouble);
}

// Field nodes and buffers a field occupies in a record batch (IPC format V5 layouts); -1 buffers
// for layouts this reader does not walk past (unions, views with variadic buffers).
int64_t node_count(const FieldDesc& f) {
  if (f.dictionary) return 1;
  int64_t n = 1;
  for (auto& c : f.children) n += node_count(c);
  return n;
}
int64_t buffer_count(const FieldDesc& f) {
  if (f.dictionary) return 2;  // validity + indices
  int64_t own;
  switch (f.type) {
    case kNull: case kRunEndEncoded: own = 0; break;
    case kStruct: case kFixedSizeList: own = 1; break;
    case kBinary: case kUtf8: case kLargeBinary: case kLargeUtf8: case kListView: case kLargeListView: own = 3; break;
    case kInt: case kFloatingPoint: case kBool: case kDecimal: case kDate: case kTime: case kTimestamp: case kInterval:
    case kFixedSizeBinary: case kDuration: case kList: case kLargeList: case kMap: own = 2; break;
    default: return -1;
  }
  for (auto& c : f.children) {
    int64_t b = buffer_count(c);
    if (b < 0) return -1;
    own += b;
  }
  return own;
}

struct Node {
  int64_t length, null_count;
};
struct Span {
  int64_t offset, length;
};

}  // namespace

namespace detail {

class ArrowReader {
 public:
  ArrowReader(const uint8_t* data, size_t size, std::string source, std::string column)
      : p_(data), n_(size), src_(std::move(source)), want_(std::move(column)) {}

  void run(ArrowStreamFile* out) {
    out_ = out;
    size_t pos = 0;
    if (n_ >= 6 && std::memcmp(p_, "ARROW1", 6) == 0) pos = 8;  // file format: the stream follows the magic
    size_t index = 0;
    while (pos < n_) {
      TOPKSAE_CHECK(n_ - pos >= 4, src_, ": ", n_ - pos, " stray bytes at offset ", pos, " (truncated?)");
      uint32_t first = get<uint32_t>(pos);
      size_t hdr = 4;
      int64_t len = int32_t(first);
      if (first == 0xFFFFFFFFu) {
        TOPKSAE_CHECK(n_ - pos >= 8, src_, ": message header at offset ", pos, " cut short (truncated?)");
        len = get<int32_t>(pos + 4);
        hdr = 8;
      }
      if (len == 0) break;  // end-of-stream marker
      TOPKSAE_CHECK(len > 0, src_, ": message at offset ", pos, ": negative metadata length ", len,
                    " (not an Arrow IPC stream, or a bad continuation marker)");
      TOPKSAE_CHECK(uint64_t(len) <= n_ - pos - hdr, src_, ": message at offset ", pos, ": metadata of ", len,
                    " bytes runs past the end of the file (", n_, " bytes): truncated, or not an Arrow IPC stream",
                    " (a message starts with the continuation marker 0xFFFFFFFF)");
      fb::Buf meta{p_ + pos + hdr, size_t(len), concat(src_, ": message ", index, " at offset ", pos)};
      fb::Table msg = fb::root(meta);
      const int16_t version = msg.scalar<int16_t>(kMsgVersion, 0);
      TOPKSAE_CHECK(version == kV4 || version == kV5, meta.what, ": Arrow metadata version V", version + 1,
                    " is not supported (V4 or V5 expected)");
      const uint8_t type = msg.scalar<uint8_t>(kMsgHeaderType, 0);
      const int64_t body_len = msg.scalar<int64_t>(kMsgBodyLength, 0);
      const size_t body = pos + hdr + size_t(len);
      TOPKSAE_CHECK(body_len >= 0 && uint64_t(body_len) <= n_ - body, meta.what, ": message body of ", body_len,
                    " bytes runs past the end of the file (", n_ - body, " bytes left; truncated?)");
      fb::Table header = msg.table(kMsgHeader);
      TOPKSAE_CHECK(header.valid(), meta.what, ": message without a header");
      if (type == kHdrSchema) {
        TOPKSAE_CHECK(!have_schema_, meta.what, ": a second schema message");
        schema(header);
      } else if (type == kHdrRecordBatch) {
        TOPKSAE_CHECK(have_schema_, meta.what, ": a record batch before the schema");
        record_batch(header, p_ + body, size_t(body_len), meta.what);
      } else if (type == kHdrDictionaryBatch) {
        TOPKSAE_FAIL(meta.what, ": a dictionary batch: dictionary-encoded columns are not supported");
      } else {
        TOPKSAE_FAIL(meta.what, ": unsupported message type ", int(type), " (expected a schema or a record batch)");
      }
      pos = body + size_t(body_len);
      ++index;
    }
    TOPKSAE_CHECK(have_schema_, src_, ": no schema message (an empty file, or not an Arrow IPC stream)");
    out->ctx_ = ctx_;
    out->d_in_ = d_in_;
  }

 private:
  template <typename T>
  T get(size_t pos) const {
    T v;
    std::memcpy(&v, p_ + pos, sizeof(T));
    return v;
  }

  void schema(const fb::Table& s) {
    const int16_t endianness = s.scalar<int16_t>(kSchemaEndianness, 0);
    TOPKSAE_CHECK(endianness == 0, src_, ": the schema says ", endianness == 1 ? "big-endian" : "unknown endianness",
                  " data; only little-endian Arrow files are supported");
    fb::Vec fields = s.vector(kSchemaFields, 4);
    for (size_t i = 0; i < fields.count; ++i) fields_.push_back(parse_field(s.table_at(fields, i), 0));
    for (auto& f : fields_) out_->columns_.push_back({f.name, type_str(f), is_activations(f)});
    select_column();
    have_schema_ = true;
  }

  std::string column_list() const {
    std::string s;
    for (auto& c : out_->columns_) s += (s.empty() ? "" : ", ") + c.name + " " + c.type;
    return s.empty() ? "none" : s;
  }

  void select_column() {
    std::vector<size_t> hits;
    for (size_t i = 0; i < fields_.size(); ++i)
      if (want_.empty() ? is_activations(fields_[i]) : fields_[i].name == want_) hits.push_back(i);
    if (!want_.empty()) {
      TOPKSAE_CHECK(!hits.empty(), src_, ": no column named '", want_, "' (columns: ", column_list(), ")");
      TOPKSAE_CHECK(hits.size() == 1, src_, ": several columns are named '", want_, "'");
      const FieldDesc& f = fields_[hits[0]];
      TOPKSAE_CHECK(is_activations(f), src_, ": column '", want_, "' has type ", type_str(f),
                    "; activations must be a list of lists of float16, float32 or float64 ([rows, context, d_in])");
    } else {
      TOPKSAE_CHECK(!hits.empty(), src_, ": no column is a list of lists of floats (columns: ", column_list(), ")");
      if (hits.size() > 1) {
        std::string names;
        for (size_t i : hits) names += (names.empty() ? "" : ", ") + fields_[i].name;
        TOPKSAE_FAIL(src_, ": several activation columns (", names, "); choose one with --tensor NAME");
      }
    }
    col_ = hits[0];
    const FieldDesc& f = fields_[col_];
    out_->column_ = f.name;
    const int64_t prec = f.children[0].children[0].param;
    out_->dtype_ = prec == kHalf ? DType::f16 : prec == kSingle ? DType::f32 : DType::f64;
    for (size_t i = 0; i < col_; ++i) {
      const int64_t b = buffer_count(fields_[i]);
      TOPKSAE_CHECK(b >= 0, src_, ": column '", fields_[i].name, "' (", type_str(fields_[i]),
                    ") comes before column '", f.name, "' and has a layout this reader cannot step over");
      node0_ += node_count(fields_[i]);
      buf0_ += b;
    }
    where_ = concat(src_, ": column '", f.name, "'");
    // Fixed sizes come from the type; datasets' Array2D also states [ctx, d_in] in its metadata.
    if (f.type == kFixedSizeList) set_dim(ctx_, f.param, "context size", "its fixed_size_list type");
    if (f.children[0].type == kFixedSizeList) set_dim(d_in_, f.children[0].param, "d_in", "its fixed_size_list type");
    if (f.ext_name.find("Array2D") != std::string::npos && !f.ext_meta.empty()) {
      nlohmann::json m = nlohmann::json::parse(f.ext_meta, nullptr, /*allow_exceptions=*/false);
      if (m.is_array() && !m.empty() && m[0].is_array() && m[0].size() == 2 && m[0][0].is_number_integer() &&
          m[0][1].is_number_integer()) {
        set_dim(ctx_, m[0][0].get<int64_t>(), "context size", "its Array2D extension metadata");
        set_dim(d_in_, m[0][1].get<int64_t>(), "d_in", "its Array2D extension metadata");
      }
    }
  }

  void set_dim(int64_t& dim, int64_t v, const char* what, const char* from) {
    TOPKSAE_CHECK(v > 0, src_, ": column '", fields_[col_].name, "': ", what, " ", v, " in ", from, " (must be > 0)");
    TOPKSAE_CHECK(dim == 0 || dim == v, src_, ": column '", fields_[col_].name, "': ", what, " ", v, " in ", from,
                  " disagrees with ", dim);
    dim = v;
  }

  // One level of the list nesting: the elements [a, b) of a list array, each `width` children
  // long (learned from the first element when 0), mapped to their children's range [ca, cb).
  void list_level(const FieldDesc& f, const Node& node, const Span& offsets, const uint8_t* body, int64_t a,
                  int64_t b, int64_t& width, const char* what, const char* items, const std::string& ctx, int64_t& ca,
                  int64_t& cb) {
    TOPKSAE_CHECK(b <= node.length, ctx, ": ", b, " lists needed but the array holds ", node.length);
    if (f.type == kFixedSizeList) {
      // width == f.param (set from the schema); the child range is bounded by the caller's checks.
      TOPKSAE_CHECK(b <= std::numeric_limits<int64_t>::max() / f.param, ctx, ": ", b, " lists of ", f.param,
                    " overflow");
      ca = a * f.param;
      cb = b * f.param;
      return;
    }
    const size_t w = f.type == kLargeList ? 8 : 4;
    TOPKSAE_CHECK(uint64_t(b) + 1 <= uint64_t(offsets.length) / w, ctx, ": offsets buffer of ", offsets.length,
                  " bytes is too short for ", b + 1, " offsets");
    const uint8_t* o = body + offsets.offset;
    auto off = [&](int64_t i) -> int64_t {
      if (w == 4) {
        int32_t v;
        std::memcpy(&v, o + size_t(i) * 4, 4);
        return v;
      }
      int64_t v;
      std::memcpy(&v, o + size_t(i) * 8, 8);
      return v;
    };
    int64_t prev = off(a);
    TOPKSAE_CHECK(prev >= 0, ctx, ": negative offset ", prev);
    ca = prev;
    for (int64_t i = a; i < b; ++i) {
      const int64_t next = off(i + 1);
      TOPKSAE_CHECK(next >= prev, ctx, ": offsets decrease at element ", i, " (", prev, " then ", next, ")");
      if (width == 0) {
        TOPKSAE_CHECK(next - prev > 0, ctx, ": element ", i, " is an empty list (", what, " must be > 0)");
        width = next - prev;
      }
      TOPKSAE_CHECK(next - prev == width, ctx, ": element ", i, " holds ", next - prev, " ", items, " where ", width,
                    " (the ", what, ") are expected: ragged lists or bad offsets");
      prev = next;
    }
    cb = prev;
  }

  void record_batch(const fb::Table& rb, const uint8_t* body, size_t body_len, const std::string& what) {
    const size_t batch = out_->n_batches_++;
    const std::string ctx = concat(where_, ", record batch ", batch);
    TOPKSAE_CHECK(!rb.has(kRbCompression), ctx, ": the body is compressed (LZ4/ZSTD), which is not supported");
    const int64_t length = rb.scalar<int64_t>(kRbLength, 0);
    TOPKSAE_CHECK(length >= 0, ctx, ": negative length ", length);
    fb::Vec nodes = rb.vector(kRbNodes, kFieldNodeSize);
    fb::Vec bufs = rb.vector(kRbBuffers, kBufferSize);
    TOPKSAE_CHECK(int64_t(nodes.count) >= node0_ + 3, ctx, ": ", nodes.count, " field nodes, too few for the schema");
    std::vector<Span> spans(bufs.count);
    for (size_t i = 0; i < bufs.count; ++i) {
      Span s{rb.buf().get<int64_t>(bufs.pos + i * kBufferSize), rb.buf().get<int64_t>(bufs.pos + i * kBufferSize + 8)};
      TOPKSAE_CHECK(s.offset >= 0 && s.length >= 0 && uint64_t(s.offset) <= body_len &&
                        uint64_t(s.length) <= body_len - uint64_t(s.offset),
                    what, ": buffer ", i, " [offset ", s.offset, ", length ", s.length,
                    "] lies outside the message body (", body_len, " bytes)");
      spans[i] = s;
    }
    Node nd[3];
    for (int k = 0; k < 3; ++k) {
      const size_t at = nodes.pos + size_t(node0_ + k) * kFieldNodeSize;
      nd[k] = {rb.buf().get<int64_t>(at), rb.buf().get<int64_t>(at + 8)};
      TOPKSAE_CHECK(nd[k].length >= 0 && nd[k].null_count >= 0, ctx, ": negative length or null count");
      TOPKSAE_CHECK(nd[k].null_count == 0, ctx, ": ", nd[k].null_count, " nulls at nesting level ", k,
                    " (activations must not be null)");
    }
    TOPKSAE_CHECK(nd[0].length == length, ctx, ": the column holds ", nd[0].length, " rows but the batch ", length);
    const FieldDesc& outer = fields_[col_];
    const FieldDesc& inner = outer.children[0];
    // Buffers in order: outer validity [, offsets], inner validity [, offsets], values validity, data.
    size_t bi = size_t(buf0_);
    auto take = [&](bool offsets) {
      const size_t n = offsets ? 2 : 1;
      TOPKSAE_CHECK(bi + n <= spans.size(), ctx, ": ", spans.size(), " buffers, too few for the schema");
      Span s = offsets ? spans[bi + 1] : Span{0, 0};
      bi += n;
      return s;
    };
    const Span outer_off = take(outer.type != kFixedSizeList);
    const Span inner_off = take(inner.type != kFixedSizeList);
    const Span data = take(true);
    if (length == 0) return;

    int64_t a, b, va, vb;
    list_level(outer, nd[0], outer_off, body, 0, length, ctx_, "context size", "lists", ctx + " (outer lists)", a,
               b);
    list_level(inner, nd[1], inner_off, body, a, b, d_in_, "d_in", "values", ctx + " (inner lists)", va, vb);
    const size_t isz = itemsize(out_->dtype_);
    TOPKSAE_CHECK(vb <= nd[2].length, ctx, ": ", vb, " values needed but the array holds ", nd[2].length);
    TOPKSAE_CHECK(uint64_t(vb) <= uint64_t(data.length) / isz, ctx, ": data buffer of ", data.length,
                  " bytes is too short for ", vb, " values of ", dtype_name(out_->dtype_));
    ArrayView v;
    v.name = out_->column_;
    v.dtype = out_->dtype_;
    v.shape = {length, ctx_, d_in_};
    v.data = body + data.offset + size_t(va) * isz;
    v.nbytes = size_t(vb - va) * isz;  // == length * ctx * d_in * isz by the regularity checks
    out_->batches_.push_back(std::move(v));
    out_->sequences_ += length;
  }

  const uint8_t* p_;
  size_t n_;
  std::string src_, want_, where_;
  ArrowStreamFile* out_ = nullptr;
  bool have_schema_ = false;
  std::vector<FieldDesc> fields_;
  size_t col_ = 0;
  int64_t node0_ = 0, buf0_ = 0;  // the column's first field node and buffer in a record batch
  int64_t ctx_ = 0, d_in_ = 0;
};

}  // namespace detail

ArrowStreamFile ArrowStreamFile::open(const std::filesystem::path& path, const std::string& column) {
  auto map = MappedFile::open(path);
  ArrowStreamFile f = parse(map->data(), map->size(), path.string(), column);
  f.map_ = std::move(map);
  return f;
}

ArrowStreamFile ArrowStreamFile::parse(const void* bytes, size_t size, const std::string& source,
                                       const std::string& column) {
  ArrowStreamFile f;
  f.source_ = source;
  detail::ArrowReader(static_cast<const uint8_t*>(bytes), size, source, column).run(&f);
  return f;
}

}  // namespace topksae
