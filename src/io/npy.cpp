#include "topksae/npy.h"

#include <cstring>
#include <limits>
#include <optional>
#include <string_view>
#include <vector>

#include "topksae/atomic_file.h"
#include "topksae/error.h"

namespace topksae {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMaxHeader = size_t(1) << 20;  // numpy itself refuses headers over 10 kB by default

struct DescrInfo {
  std::string_view descr;
  DType dtype;
};
constexpr DescrInfo kDescrs[] = {{"<f4", DType::f32}, {"<f2", DType::f16}, {"<f8", DType::f64}, {"<i4", DType::i32},
                                 {"<i8", DType::i64}, {"|u1", DType::u8},  {"|b1", DType::boolean}};

// A strict reader for the one Python literal numpy writes:
//   {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// Only str keys, str / True / False / tuple-of-int values; anything else is an error.
class HeaderParser {
 public:
  HeaderParser(std::string_view s, const std::string& src) : s_(s), src_(src) {}

  void parse(std::string& descr, bool& fortran, Shape& shape) {
    bool got_descr = false, got_fortran = false, got_shape = false;
    ws();
    expect('{');
    ws();
    while (peek() != '}') {
      std::string key = str();
      ws();
      expect(':');
      ws();
      if (key == "descr") {
        dup(got_descr, key);
        if (peek() == '[') fail("structured (record) dtypes are not supported");
        descr = str();
      } else if (key == "fortran_order") {
        dup(got_fortran, key);
        fortran = boolean();
      } else if (key == "shape") {
        dup(got_shape, key);
        shape = tuple();
      } else {
        fail("unexpected key '" + key + "' in the header dict");
      }
      ws();
      if (peek() == ',') {
        ++i_;
        ws();
      } else if (peek() != '}') {
        fail("expected ',' or '}' in the header dict");
      }
    }
    ++i_;
    ws();
    if (i_ != s_.size()) fail("trailing characters after the header dict");
    if (!got_descr) fail("the header dict has no 'descr'");
    if (!got_fortran) fail("the header dict has no 'fortran_order'");
    if (!got_shape) fail("the header dict has no 'shape'");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    TOPKSAE_FAIL(src_, ": malformed npy header: ", what, " (at byte ", i_, " of the header)");
  }
  char peek() const {
    if (i_ >= s_.size()) fail("unexpected end of the header");
    return s_[i_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\t' || s_[i_] == '\r')) ++i_;
  }
  void dup(bool& seen, const std::string& key) {
    if (seen) fail("duplicate key '" + key + "'");
    seen = true;
  }
  std::string str() {
    char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    size_t start = ++i_;
    while (peek() != q)
      if (s_[i_++] == '\\') fail("escapes are not supported in header strings");
    std::string out(s_.substr(start, i_ - start));
    ++i_;
    return out;
  }
  bool boolean() {
    if (s_.substr(i_, 4) == "True") return i_ += 4, true;
    if (s_.substr(i_, 5) == "False") return i_ += 5, false;
    fail("expected True or False");
  }
  Shape tuple() {
    if (peek() != '(') fail("'shape' must be a tuple of non-negative integers");
    ++i_;
    Shape shape;
    ws();
    while (peek() != ')') {
      if (peek() < '0' || peek() > '9') fail("shape entries must be non-negative integers");
      uint64_t v = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        uint64_t digit = uint64_t(s_[i_++] - '0');
        if (v > (uint64_t(std::numeric_limits<int64_t>::max()) - digit) / 10) fail("shape entry too large");
        v = v * 10 + digit;
      }
      if (i_ < s_.size() && s_[i_] == 'L') ++i_;  // Python 2 long suffix, written by old numpy
      shape.push_back(int64_t(v));
      if (shape.size() > 64) fail("more than 64 dimensions");
      ws();
      if (peek() == ',') {
        ++i_;
        ws();
      } else if (peek() != ')') {
        fail("expected ',' or ')' in the shape");
      }
    }
    ++i_;
    return shape;
  }

  std::string_view s_;
  const std::string& src_;
  size_t i_ = 0;
};

}  // namespace

NpyFile NpyFile::open(const std::filesystem::path& path) {
  auto map = MappedFile::open(path);
  NpyFile f = parse(map->data(), map->size(), path.string());
  f.map_ = std::move(map);
  return f;
}

NpyFile NpyFile::parse(const void* bytes, size_t size, const std::string& source) {
  NpyFile f;
  f.source_ = source;
  const std::string& src = f.source_;
  const uint8_t* p = static_cast<const uint8_t*>(bytes);
  if (size < 10 || std::memcmp(p, kMagic, 6) != 0) TOPKSAE_FAIL(src, ": not an npy file (bad magic; expected \\x93NUMPY)");
  const int major = p[6], minor = p[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    TOPKSAE_FAIL(src, ": unsupported npy version ", major, ".", minor, " (expected 1.0, 2.0 or 3.0)");
  size_t hlen, hstart;
  if (major == 1) {
    hlen = size_t(p[8]) | size_t(p[9]) << 8;
    hstart = 10;
  } else {
    if (size < 12) TOPKSAE_FAIL(src, ": truncated npy file (", size, " bytes)");
    hlen = size_t(p[8]) | size_t(p[9]) << 8 | size_t(p[10]) << 16 | size_t(p[11]) << 24;
    hstart = 12;
  }
  if (hlen > size - hstart)
    TOPKSAE_FAIL(src, ": header length ", hlen, " runs past the end of the file (", size, " bytes; truncated?)");
  if (hlen > kMaxHeader) TOPKSAE_FAIL(src, ": header length ", hlen, " exceeds the ", kMaxHeader, "-byte limit");
  std::string_view header(reinterpret_cast<const char*>(p + hstart), hlen);

  std::string descr;
  bool fortran = false;
  Shape shape;
  HeaderParser(header, src).parse(descr, fortran, shape);
  if (fortran) TOPKSAE_FAIL(src, ": fortran_order True is not supported (save the array in C order, np.ascontiguousarray)");
  std::optional<DType> dt;
  for (const auto& d : kDescrs)
    if (d.descr == descr) dt = d.dtype;
  if (!dt) {
    if (!descr.empty() && descr[0] == '>')
      TOPKSAE_FAIL(src, ": big-endian dtype '", descr, "' is not supported (convert with arr.astype('<", descr.substr(1), "'))");
    if (descr.find('O') != std::string::npos)
      TOPKSAE_FAIL(src, ": object dtype '", descr, "' is not supported (pickled Python objects are never loaded)");
    TOPKSAE_FAIL(src, ": unsupported npy dtype '", descr, "' (supported: <f4, <f2, <f8, <i4, <i8, |u1, |b1)");
  }
  const size_t data_start = hstart + hlen;
  const uint64_t data_bytes = size - data_start;
  const uint64_t isz = itemsize(*dt);
  uint64_t need = isz;
  bool overflow = false;
  for (int64_t d : shape) {
    if (d != 0 && need > std::numeric_limits<uint64_t>::max() / uint64_t(d)) overflow = true;
    else need *= uint64_t(d);
  }
  if (overflow || need != data_bytes)
    TOPKSAE_FAIL(src, ": shape ", shape_str(shape), " of ", descr, " needs ", overflow ? std::string("more than 2^64") : std::to_string(need),
                 " bytes of data but the file holds ", data_bytes, " after the header (shape/size mismatch; truncated?)");
  f.version_major_ = major;
  f.array_.name = src;
  f.array_.dtype = *dt;
  f.array_.shape = std::move(shape);
  f.array_.data = p + data_start;
  f.array_.nbytes = size_t(data_bytes);
  return f;
}

namespace {
// Magic, version, header length and the padded header dict; the data starts right after, at a
// multiple of 64 bytes.
std::string npy_header(DType dtype, const Shape& shape) {
  std::string descr;
  for (const auto& d : kDescrs)
    if (d.dtype == dtype) descr = d.descr;
  TOPKSAE_CHECK(!descr.empty(), "npy: cannot write dtype ", dtype_name(dtype));
  std::string shp = "(";  // as Python prints a tuple: (), (5,), (3, 4)
  for (size_t i = 0; i < shape.size(); ++i) shp += (i ? ", " : "") + std::to_string(shape[i]);
  shp += shape.size() == 1 ? ",)" : ")";
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shp + ", }";
  size_t hstart = 10;                                  // version 1.0: u16 header length
  if (dict.size() + 64 > 65535) hstart = 12;           // version 2.0: u32 header length
  const size_t total = hstart + dict.size() + 1;       // + the final newline
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string out(kMagic, 6);
  out += char(hstart == 10 ? 1 : 2);
  out += '\0';
  const size_t hlen = dict.size();
  for (size_t i = 0; i < hstart - 8; ++i) out += char((hlen >> (8 * i)) & 0xff);
  return out + dict;
}
}  // namespace

std::string npy_bytes(DType dtype, const Shape& shape, const void* data) {
  std::string out = npy_header(dtype, shape);
  const size_t nbytes = size_t(shape_numel(shape)) * itemsize(dtype);
  if (nbytes > 0) out.append(static_cast<const char*>(data), nbytes);
  return out;
}

void write_npy(const std::filesystem::path& path, DType dtype, const Shape& shape, const void* data) {
  const size_t nbytes = size_t(shape_numel(shape)) * itemsize(dtype);
  AtomicFile f(path);
  f.write(npy_header(dtype, shape));
  if (nbytes > 0) f.write(data, nbytes);  // straight from the caller's buffer: no copy
  f.commit();
}

}  // namespace topksae
