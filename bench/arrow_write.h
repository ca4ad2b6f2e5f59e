// A minimal writer of the Arrow IPC stream sae_lens's activation cache holds (bench_data only):
// one column list<list<float16|float32>> of [ctx, d_in] per row, in record batches, as the
// HuggingFace `datasets` files that CacheActivationsRunner writes (tests/fixtures/make_fixtures.py
// writes the same layout, with every variant the reader accepts, for the tests). The flatbuffer
// metadata is laid out by hand, front to back: a table is written with placeholders for its
// offsets, and each child is written after it and its offset patched in (flatbuffer offsets
// point forward). Field ids are those of Arrow's format/Message.fbs and format/Schema.fbs.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "topksae/error.h"

namespace topksae::bench {

class FlatWriter {
 public:
  std::vector<uint8_t> b;
  // A table field: a scalar of 1/2/4/8 bytes, or an offset to a child written by `child`.
  struct Field {
    int id;
    uint64_t value = 0;
    int size = 0;                            // scalar bytes; 0: an offset
    std::function<size_t(FlatWriter&)> child;  // writes the child, returns its position
  };
  static Field scalar(int id, uint64_t v, int size) { return Field{id, v, size, nullptr}; }
  static Field offset(int id, std::function<size_t(FlatWriter&)> child) { return Field{id, 0, 0, std::move(child)}; }

  size_t align(size_t a) {
    while (b.size() % a) b.push_back(0);
    return b.size();
  }
  template <typename T>
  void put(size_t at, T v) {
    std::memcpy(b.data() + at, &v, sizeof v);
  }
  size_t grow(size_t n) {
    const size_t at = b.size();
    b.resize(at + n);
    return at;
  }
  void patch(size_t at, size_t target) { put<uint32_t>(at, uint32_t(target - at)); }

  // vtable, then the table (soffset to the vtable, the fields each aligned to its size), then the
  // children; returns the table's position.
  size_t table(const std::vector<Field>& fields) {
    int max_id = -1;
    for (auto& f : fields) max_id = std::max(max_id, f.id);
    // Field offsets inside the table: the soffset first, then each field at its alignment.
    std::vector<size_t> at(fields.size());
    size_t size = 4;
    for (size_t i = 0; i < fields.size(); ++i) {
      const size_t s = fields[i].size ? size_t(fields[i].size) : 4;
      size = (size + s - 1) / s * s;
      at[i] = size;
      size += s;
    }
    const size_t vt_bytes = 4 + 2 * size_t(max_id + 1);
    // The table starts 8-aligned (its 8-byte fields are aligned relative to it).
    while ((b.size() + vt_bytes) % 8) b.push_back(0);
    const size_t vt = grow(vt_bytes);
    put<uint16_t>(vt, uint16_t(vt_bytes));
    put<uint16_t>(vt + 2, uint16_t(size));
    for (size_t i = 0; i < fields.size(); ++i) put<uint16_t>(vt + 4 + 2 * size_t(fields[i].id), uint16_t(at[i]));
    const size_t t = grow(size);
    put<int32_t>(t, int32_t(t - vt));
    for (size_t i = 0; i < fields.size(); ++i)
      if (fields[i].size) std::memcpy(b.data() + t + at[i], &fields[i].value, size_t(fields[i].size));
    for (size_t i = 0; i < fields.size(); ++i)
      if (!fields[i].size) {
        const size_t child = fields[i].child(*this);
        patch(t + at[i], child);
      }
    return t;
  }
  size_t string(const std::string& s) {
    align(4);
    const size_t at = grow(4 + s.size() + 1);
    put<uint32_t>(at, uint32_t(s.size()));
    std::memcpy(b.data() + at + 4, s.data(), s.size());
    return at;
  }
  // A vector of tables: the count, the offsets, then each table.
  size_t tables(const std::vector<std::function<size_t(FlatWriter&)>>& items) {
    align(4);
    const size_t at = grow(4 + 4 * items.size());
    put<uint32_t>(at, uint32_t(items.size()));
    for (size_t i = 0; i < items.size(); ++i) patch(at + 4 + 4 * i, items[i](*this));
    return at;
  }
  // A vector of 16-byte structs {int64, int64} (FieldNode, Buffer), 8-aligned.
  size_t pairs(const std::vector<std::pair<int64_t, int64_t>>& v) {
    while ((b.size() + 4) % 8) b.push_back(0);
    const size_t at = grow(4 + 16 * v.size());
    put<uint32_t>(at, uint32_t(v.size()));
    for (size_t i = 0; i < v.size(); ++i) {
      put<int64_t>(at + 4 + 16 * i, v[i].first);
      put<int64_t>(at + 12 + 16 * i, v[i].second);
    }
    return at;
  }
  // The finished buffer: the root offset first.
  static std::vector<uint8_t> root(const std::function<size_t(FlatWriter&)>& make) {
    FlatWriter w;
    w.grow(8);  // root uoffset + padding so the tables below keep their alignment
    const size_t r = make(w);
    w.patch(0, r);
    w.align(8);
    return std::move(w.b);
  }
};

// Writes `path`: an Arrow IPC stream with one column `name` of list<list<float>> ([ctx, d_in] per
// row; float16 when f16, else float32) holding n_seq rows of `values` (n_seq * ctx * d_in
// elements of 2 or 4 bytes), in record batches of at most seq_per_batch rows.
inline void write_arrow_acts(const std::filesystem::path& path, const std::string& name, bool f16, const void* values,
                             int64_t n_seq, int64_t ctx, int64_t d_in, int64_t seq_per_batch) {
  using W = FlatWriter;
  const int16_t precision = f16 ? 0 : 1;
  const size_t isz = f16 ? 2 : 4;
  auto field = [](std::string n, uint8_t type_id, std::function<size_t(W&)> type,
                  std::vector<std::function<size_t(W&)>> children) {
    return [=](W& w) {
      return w.table({W::offset(0, [n](W& x) { return x.string(n); }), W::scalar(1, 0, 1),  // nullable: false
                      W::scalar(2, type_id, 1), W::offset(3, type),
                      W::offset(5, [children](W& x) { return x.tables(children); })});
    };
  };
  auto empty_table = [](W& w) { return w.table({}); };
  auto fp = [precision](W& w) { return w.table({W::scalar(0, uint16_t(precision), 2)}); };
  auto item = field("item", 3, fp, {});
  auto inner = field("item", 12, empty_table, {item});
  auto column = field(name, 12, empty_table, {inner});
  auto message = [](uint8_t header_type, std::function<size_t(W&)> header, int64_t body) {
    return W::root([=](W& w) {
      return w.table({W::scalar(0, 4, 2),  // MetadataVersion V5
                      W::scalar(1, header_type, 1), W::offset(2, header), W::scalar(3, uint64_t(body), 8)});
    });
  };
  std::FILE* f = std::fopen(path.c_str(), "wb");
  TOPKSAE_CHECK(f, path.string(), ": cannot create");
  auto write = [&](const void* p, size_t n) {
    TOPKSAE_CHECK(std::fwrite(p, 1, n, f) == n, path.string(), ": write failed (disk full?)");
  };
  auto write_message = [&](const std::vector<uint8_t>& meta) {
    const uint32_t cont = 0xFFFFFFFFu;
    const int32_t len = int32_t(meta.size());
    write(&cont, 4);
    write(&len, 4);
    write(meta.data(), meta.size());
  };
  write_message(message(1, [column](W& w) {
    return w.table({W::scalar(0, 0, 2), W::offset(1, [column](W& x) { return x.tables({column}); })});
  }, 0));
  std::vector<int32_t> outer, inner_off;
  const uint8_t* v = static_cast<const uint8_t*>(values);
  for (int64_t s0 = 0; s0 < n_seq; s0 += seq_per_batch) {
    const int64_t n = std::min(seq_per_batch, n_seq - s0);
    outer.resize(size_t(n + 1));
    inner_off.resize(size_t(n * ctx + 1));
    for (int64_t i = 0; i <= n; ++i) outer[size_t(i)] = int32_t(i * ctx);
    for (int64_t i = 0; i <= n * ctx; ++i) inner_off[size_t(i)] = int32_t(i * d_in);
    auto pad8 = [](int64_t x) { return (x + 7) / 8 * 8; };
    const int64_t o_bytes = int64_t(outer.size() * 4), i_bytes = int64_t(inner_off.size() * 4),
                  d_bytes = n * ctx * d_in * int64_t(isz);
    const int64_t o_at = 0, i_at = pad8(o_bytes), d_at = i_at + pad8(i_bytes), body = d_at + pad8(d_bytes);
    std::vector<std::pair<int64_t, int64_t>> nodes = {{n, 0}, {n * ctx, 0}, {n * ctx * d_in, 0}};
    // validity (empty), offsets; validity, offsets; validity, data
    std::vector<std::pair<int64_t, int64_t>> bufs = {{0, 0}, {o_at, o_bytes}, {i_at, 0}, {i_at, i_bytes},
                                                     {d_at, 0}, {d_at, d_bytes}};
    write_message(message(3, [=](W& w) {
      return w.table({W::scalar(0, uint64_t(n), 8), W::offset(1, [nodes](W& x) { return x.pairs(nodes); }),
                      W::offset(2, [bufs](W& x) { return x.pairs(bufs); })});
    }, body));
    const uint8_t zeros[8] = {};
    write(outer.data(), size_t(o_bytes));
    write(zeros, size_t(pad8(o_bytes) - o_bytes));
    write(inner_off.data(), size_t(i_bytes));
    write(zeros, size_t(pad8(i_bytes) - i_bytes));
    write(v + size_t(s0 * ctx * d_in) * isz, size_t(d_bytes));
    write(zeros, size_t(pad8(d_bytes) - d_bytes));
  }
  const uint32_t eos[2] = {0xFFFFFFFFu, 0};
  write(eos, 8);
  TOPKSAE_CHECK(std::fclose(f) == 0, path.string(), ": close failed");
}

}  // namespace topksae::bench
