// SafetensorsStreamWriter against SafetensorsWriter: the same tensors (appended in uneven chunks,
// some larger than the writer's buffer) and metadata give the same file, byte for byte, for every
// dtype, f16/bf16 conversion, CSR's int64 indptr and empty tensors. And no failure leaves anything
// behind: no output, no temporary file, no spill file, with messages naming the output.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "formats_fixtures.h"
#include "test_util.h"
#include "topksae/safetensors.h"

namespace topksae {
namespace {

using test::expect_error;
using test::randn;
namespace fs = std::filesystem;

// The test's own directory (test_util.h's), and what it holds.
struct Dir : test::TempDir {
  fs::path dir;
  Dir() : test::TempDir("topksae_stream"), dir(path) {}
  // Names of everything in the directory, hidden files included, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Appends rows [0, total) of a tensor in uneven chunks (a zero-row chunk among them).
template <typename F>
void in_chunks(int64_t total, F&& append) {
  const int64_t sizes[] = {1, 0, 7, 1000, 3, 70001};
  int64_t r = 0;
  for (size_t i = 0; r < total; ++i) {
    const int64_t n = std::min(sizes[i % 6], total - r);
    append(r, n);
    r += n;
  }
}

TEST(SafetensorsStream, IsTheWriterByteForByte) {
  Dir t;
  // Row counts not multiples of anything; "big" and "big16" exceed the 1 MiB buffer.
  constexpr int64_t kRows = 301, kBig = 300007, kNnz = 1234;
  const std::vector<float> a = randn(size_t(kRows * 3), 1), big = randn(size_t(kBig), 2), h = randn(size_t(kRows * 5), 3);
  std::vector<double> d{1.0 / 3.0, -2.5, 1e300};
  std::vector<int64_t> indptr(static_cast<size_t>(kRows + 1));
  for (int64_t r = 1; r <= kRows; ++r) indptr[size_t(r)] = indptr[size_t(r - 1)] + (r * 7) % 9;
  indptr.back() = kNnz;
  std::vector<int32_t> idx(static_cast<size_t>(kNnz));
  for (int64_t i = 0; i < kNnz; ++i) idx[size_t(i)] = int32_t(i * 37 % 1001 - 500);
  std::vector<uint8_t> u8(static_cast<size_t>(kRows * 2));
  for (size_t i = 0; i < u8.size(); ++i) u8[i] = uint8_t(i * 13);

  // Declared (and added) 2-byte tensors first, so the largest-itemsize-first layout reorders them.
  SafetensorsWriter ref;
  ref.add_f32("h16", {kRows, 5}, h.data(), DType::f16);
  ref.add_f32("hb", {kRows, 5}, h.data(), DType::bf16);
  ref.add_f32("big16", {kBig}, big.data(), DType::f16);
  ref.add_f32("a", {kRows, 3}, a.data());
  ref.add("indptr", DType::i64, {kRows + 1}, indptr.data());
  ref.add("indices", DType::i32, {kNnz}, idx.data());
  ref.add_f32("big", {kBig}, big.data());
  ref.add("d", DType::f64, {3}, d.data());
  ref.add("u8", DType::u8, {kRows, 2}, u8.data());
  ref.add("empty", DType::f32, {0, 4}, nullptr);
  ref.add("no_cols", DType::i32, {kRows, 0}, nullptr);
  ref.set_metadata("source", "test");
  ref.set_metadata("format", "csr");
  ref.write(t.dir / "ref.safetensors");

  const fs::path out = t.dir / "streamed.safetensors";
  SafetensorsStreamWriter w(out);
  const size_t th16 = w.declare("h16", DType::f16, {5}), thb = w.declare("hb", DType::bf16, {5}),
               tbig16 = w.declare("big16", DType::f16), ta = w.declare("a", DType::f32, {3}),
               tptr = w.declare("indptr", DType::i64), tidx = w.declare("indices", DType::i32),
               tbig = w.declare("big", DType::f32), td = w.declare("d", DType::f64), tu8 = w.declare("u8", DType::u8, {2});
  w.declare("empty", DType::f32, {4});
  const size_t tnc = w.declare("no_cols", DType::i32, {0});
  expect_error([&] { w.declare("a", DType::f32); }, {"streamed.safetensors", "'a'", "twice"});
  w.set_metadata("format", "csr");
  w.set_metadata("source", "test");
  // Interleaved as encode does: each chunk of rows to every tensor in turn.
  in_chunks(kRows, [&](int64_t r, int64_t n) {
    w.append_f32(th16, h.data() + r * 5, n);
    w.append_f32(thb, h.data() + r * 5, n);
    w.append_f32(ta, a.data() + r * 3, n);
    w.append(tu8, u8.data() + r * 2, n);
    w.append(tnc, nullptr, n);
  });
  in_chunks(kRows + 1, [&](int64_t r, int64_t n) { w.append(tptr, indptr.data() + r, n); });
  in_chunks(kNnz, [&](int64_t r, int64_t n) { w.append(tidx, idx.data() + r, n); });
  in_chunks(kBig, [&](int64_t r, int64_t n) { w.append_f32(tbig16, big.data() + r, n); });
  w.append_f32(tbig, big.data(), kBig);  // one append larger than the buffer
  w.append(td, d.data(), 1);
  w.append_f32(td, nullptr, 0);
  w.append(td, d.data() + 1, 2);
  EXPECT_EQ(w.rows(tptr), kRows + 1);
  EXPECT_EQ(w.rows(tnc), kRows);
  // Nothing shows in the directory while streaming: the spills are unlinked at creation.
  EXPECT_EQ(t.entries(), std::vector<std::string>{"ref.safetensors"});
  w.finish();

  const std::string want = read_all(t.dir / "ref.safetensors"), got = read_all(out);
  ASSERT_GT(want.size(), size_t(kBig * 6));
  EXPECT_EQ(got.size(), want.size());
  EXPECT_TRUE(got == want) << "streamed file differs from SafetensorsWriter's";
  EXPECT_TRUE(got == ref.to_bytes());
  // It reads back, converted values included (a guard against both writers being wrong alike).
  SafetensorsFile f = SafetensorsFile::open(out);
  EXPECT_EQ(f.at("indptr").shape, (Shape{kRows + 1}));
  EXPECT_EQ(f.at("h16").shape, (Shape{kRows, 5}));
  EXPECT_EQ(f.at("empty").shape, (Shape{0, 4}));
  EXPECT_EQ(f.read_f32("a"), a);
  const std::vector<float> h16 = f.read_f32("h16"), hb = f.read_f32("hb");
  for (size_t i = 0; i < h.size(); ++i) {
    EXPECT_EQ(h16[i], f16_to_f32(f32_to_f16(h[i])));
    EXPECT_EQ(hb[i], bf16_to_f32(f32_to_bf16(h[i])));
  }
  EXPECT_EQ(t.entries(), (std::vector<std::string>{"ref.safetensors", "streamed.safetensors"}));
  expect_error([&] { w.append(tidx, idx.data(), 1); }, {"streamed.safetensors", "after finish"});
}

TEST(SafetensorsStream, EmptyFilesAreTheWritersToo) {
  Dir t;
  {  // no tensors at all
    SafetensorsWriter ref;
    SafetensorsStreamWriter w(t.dir / "none.safetensors");
    w.finish();
    EXPECT_EQ(read_all(t.dir / "none.safetensors"), ref.to_bytes());
  }
  {  // encode's CSR file for zero rows: indptr [1] = {0}, indices/values [0]
    SafetensorsWriter ref;
    const int64_t zero = 0;
    ref.add("indptr", DType::i64, {1}, &zero);
    ref.add("indices", DType::i32, {0}, nullptr);
    ref.add_f32("values", {0}, nullptr, DType::bf16);
    ref.set_metadata("k", "4");
    SafetensorsStreamWriter w(t.dir / "csr0.safetensors");
    w.append(w.declare("indptr", DType::i64), &zero, 1);
    w.declare("indices", DType::i32);
    w.declare("values", DType::bf16);
    w.set_metadata("k", "4");
    w.finish();
    const std::string got = read_all(t.dir / "csr0.safetensors");
    EXPECT_EQ(got, ref.to_bytes());
    EXPECT_GT(got.size(), size_t(16));
  }
}

TEST(SafetensorsStream, RefusesWhatItCannotWrite) {
  Dir t;
  SafetensorsStreamWriter w(t.dir / "x.safetensors");
  const size_t i = w.declare("i", DType::i32, {2});
  expect_error([&] { w.append_f32(i, nullptr, 0); }, {"x.safetensors", "'i'", "i32"});
  expect_error([&] { w.append(i, nullptr, 1); }, {"x.safetensors", "'i'", "no data"});
  expect_error([&] { w.append(i, nullptr, -1); }, {"x.safetensors", "'i'", "-1 rows"});
  expect_error([&] { w.append(7, nullptr, 0); }, {"x.safetensors", "undeclared"});
  expect_error([&] { w.declare("__metadata__", DType::f32); }, {"x.safetensors", "invalid tensor name"});
  expect_error([&] { w.declare("neg", DType::f32, {-2}); }, {"-2"});
}

// ---- nothing left behind --------------------------------------------------------------------------

TEST(SafetensorsStream, MissingDirectoryIsNamedAndNothingIsCreated) {
  Dir t;
  SafetensorsStreamWriter w(t.dir / "no" / "such" / "f.safetensors");
  expect_error([&] { w.declare("a", DType::f32); }, {"f.safetensors", "cannot create a spill file", "no/such"});
  EXPECT_TRUE(t.entries().empty());
}

TEST(SafetensorsStream, UnwritableDirectoryIsNamed) {
  // The parent "directory" is a regular file: mkstemp fails with ENOTDIR, which root cannot bypass
  // (a read-only directory would not stop root, and CI runs as root).
  Dir t;
  { std::ofstream(t.dir / "ro") << "a file, not a directory"; }
  SafetensorsStreamWriter w(t.dir / "ro" / "f.safetensors");
  expect_error([&] { w.declare("a", DType::f32); },
               {"f.safetensors", "cannot create a spill file", "ro", std::strerror(ENOTDIR)});
  // Nothing was created beside the file that stood in for the directory.
  ASSERT_EQ(t.entries().size(), 1u);
  EXPECT_TRUE(fs::is_regular_file(t.dir / "ro"));
}

TEST(SafetensorsStream, AbandonedWriterLeavesNothing) {
  Dir t;
  const std::vector<float> v = randn(1000, 4);
  {
    SafetensorsStreamWriter w(t.dir / "f.safetensors");
    const size_t a = w.declare("a", DType::f32, {10});
    w.append_f32(a, v.data(), 100);
    // destroyed without finish(), as when encoding throws
  }
  EXPECT_TRUE(t.entries().empty());
}

TEST(SafetensorsStream, FailedFinishLeavesNothing) {
  Dir t;
  // The output path is a directory: the rename at the end of finish() fails, after the whole file
  // was written to its temporary file.
  fs::create_directory(t.dir / "out.safetensors");
  const std::vector<float> v = randn(1000, 5);
  SafetensorsStreamWriter w(t.dir / "out.safetensors");
  const size_t a = w.declare("a", DType::f16, {10});
  w.append_f32(a, v.data(), 100);
  expect_error([&] { w.finish(); }, {"out.safetensors", "rename"});
  EXPECT_EQ(t.entries(), std::vector<std::string>{"out.safetensors"});
  EXPECT_TRUE(fs::is_empty(t.dir / "out.safetensors"));
  expect_error([&] { w.append_f32(a, v.data(), 1); }, {"out.safetensors", "after finish() or a failed write"});
  expect_error([&] { w.finish(); }, {"out.safetensors"});
}

// A disk that fills up, without root tricks: RLIMIT_FSIZE caps the size of any file this process
// writes (for root too), and a write past it fails with EFBIG once SIGXFSZ is ignored.
struct FileSizeLimit {
  rlimit old{};
  void (*old_handler)(int) = SIG_DFL;
  bool ok = false;
  explicit FileSizeLimit(rlim_t bytes) {
    if (::getrlimit(RLIMIT_FSIZE, &old) != 0 || (old.rlim_max != RLIM_INFINITY && old.rlim_max < bytes)) return;
    old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = old;
    lim.rlim_cur = bytes;
    ok = ::setrlimit(RLIMIT_FSIZE, &lim) == 0;
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
  }
};

TEST(SafetensorsStream, FullDiskWhileStreamingLeavesNothing) {
  Dir t;
  const std::vector<float> v = randn(size_t(1) << 20, 6);  // 4 MiB: past the buffer and the limit
  SafetensorsStreamWriter w(t.dir / "full.safetensors");
  const size_t a = w.declare("a", DType::f32, {1024});
  {
    FileSizeLimit lim(1 << 20);
    if (!lim.ok) GTEST_SKIP() << "cannot set RLIMIT_FSIZE";
    expect_error([&] { w.append_f32(a, v.data(), 1024); },
                 {"full.safetensors", "spill file of tensor 'a'", std::strerror(EFBIG)});
  }
  expect_error([&] { w.finish(); }, {"full.safetensors", "failed write"});
  EXPECT_TRUE(t.entries().empty());
}

TEST(SafetensorsStream, FullDiskInFinishLeavesNothing) {
  Dir t;
  // Three spills of 600 KiB each fit under a 1 MiB limit; the 1.8 MiB output does not.
  const std::vector<float> v = randn(150 * 1024, 7);
  SafetensorsStreamWriter w(t.dir / "full.safetensors");
  for (const char* name : {"a", "b", "c"}) w.append_f32(w.declare(name, DType::f32, {1024}), v.data(), 150);
  {
    FileSizeLimit lim(1 << 20);
    if (!lim.ok) GTEST_SKIP() << "cannot set RLIMIT_FSIZE";
    expect_error([&] { w.finish(); }, {"full.safetensors", "write failed", std::strerror(EFBIG)});
  }
  EXPECT_TRUE(t.entries().empty());
}

}  // namespace
}  // namespace topksae
