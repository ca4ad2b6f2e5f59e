// A minimal, bounds-checked reader of FlatBuffers (the encoding of Arrow's IPC metadata), written
// from the FlatBuffers binary format description: a root uoffset, tables found through a signed
// offset to their vtable (u16 vtable size, u16 inline size, u16 field offsets; 0 = absent), and
// unsigned forward offsets from a field to its table / vector / string (u32 count, then elements).
//
// Every read is checked against the buffer; anything out of range throws Error naming `what`
// (the file and the message being read). Reads go through memcpy: nothing is assumed aligned.
// Internal to src/io (arrow_ipc.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "topksae/error.h"

namespace topksae::fb {

struct Buf {
  const uint8_t* p = nullptr;
  size_t n = 0;
  std::string what;  // "<file>: <message> at offset N", for errors

  [[noreturn]] void fail(const std::string& detail) const { TOPKSAE_FAIL(what, ": malformed flatbuffer: ", detail); }
  void need(size_t pos, size_t len) const {
    if (pos > n || len > n - pos) fail(concat(len, " bytes at ", pos, " run past its end (", n, " bytes)"));
  }
  template <typename T>
  T get(size_t pos) const {
    need(pos, sizeof(T));
    T v;
    std::memcpy(&v, p + pos, sizeof(T));
    return v;
  }
  // The position a uoffset stored at `pos` points to.
  size_t deref(size_t pos) const {
    const uint32_t off = get<uint32_t>(pos);
    if (off == 0) fail(concat("zero offset at ", pos));
    need(pos, size_t(off));  // the target itself is checked by whoever reads it
    return pos + off;
  }
};

// A vector's elements: `count` items from byte `pos`, all inside the buffer.
struct Vec {
  size_t pos = 0, count = 0;
};

class Table {
 public:
  Table() = default;
  Table(const Buf* buf, size_t pos) : buf_(buf), pos_(pos) {
    const int64_t soff = buf->get<int32_t>(pos);
    const int64_t vt = int64_t(pos) - soff;
    if (vt < 0 || size_t(vt) > buf->n) buf->fail(concat("vtable of the table at ", pos, " lies outside"));
    vt_ = size_t(vt);
    vt_size_ = buf->get<uint16_t>(vt_);
    const uint16_t inline_size = buf->get<uint16_t>(vt_ + 2);
    if (vt_size_ < 4 || vt_size_ % 2 != 0) buf->fail(concat("bad vtable size ", vt_size_, " at ", vt_));
    buf->need(vt_, vt_size_);
    if (inline_size < 4) buf->fail(concat("bad table size ", inline_size, " at ", pos));
    buf->need(pos, inline_size);
    inline_size_ = inline_size;
  }
  bool valid() const { return buf_ != nullptr; }
  size_t pos() const { return pos_; }

  // Byte position of field `id`, or 0 when absent.
  size_t field(int id) const {
    const size_t slot = 4 + 2 * size_t(id);
    if (slot + 2 > vt_size_) return 0;
    const uint16_t off = buf_->get<uint16_t>(vt_ + slot);
    if (off == 0) return 0;
    if (off >= inline_size_) buf_->fail(concat("field ", id, " of the table at ", pos_, " lies past its end"));
    return pos_ + off;
  }
  bool has(int id) const { return field(id) != 0; }
  template <typename T>
  T scalar(int id, T def) const {
    const size_t f = field(id);
    if (f == 0) return def;
    if (f + sizeof(T) > pos_ + inline_size_) buf_->fail(concat("field ", id, " of the table at ", pos_, " overruns it"));
    return buf_->get<T>(f);
  }
  // A sub-table (an invalid Table when absent).
  Table table(int id) const {
    const size_t f = field(id);
    if (f == 0) return Table();
    return Table(buf_, buf_->deref(f));
  }
  // A vector of `stride`-byte elements (count 0 when absent).
  Vec vector(int id, size_t stride) const {
    const size_t f = field(id);
    if (f == 0) return Vec{};
    const size_t v = buf_->deref(f);
    const uint32_t count = buf_->get<uint32_t>(v);
    if (stride != 0 && count > (buf_->n - v - 4) / stride)
      buf_->fail(concat("vector of ", count, " elements at ", v, " runs past the end"));
    return Vec{v + 4, count};
  }
  // Element i of a vector of tables.
  Table table_at(const Vec& v, size_t i) const { return Table(buf_, buf_->deref(v.pos + 4 * i)); }
  std::string_view string(int id) const {
    const size_t f = field(id);
    if (f == 0) return {};
    const size_t s = buf_->deref(f);
    const uint32_t len = buf_->get<uint32_t>(s);
    buf_->need(s + 4, len);
    return std::string_view(reinterpret_cast<const char*>(buf_->p + s + 4), len);
  }
  const Buf& buf() const { return *buf_; }

 private:
  const Buf* buf_ = nullptr;
  size_t pos_ = 0, vt_ = 0;
  uint16_t vt_size_ = 0, inline_size_ = 0;
};

// The root table of a flatbuffer.
inline Table root(const Buf& b) { return Table(&b, b.deref(0)); }

}  // namespace topksae::fb
