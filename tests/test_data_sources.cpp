// File datasets, the mixing buffer and the prefetch thread: contents, error paths, and that
// position()/seek() resume exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <unistd.h>
#include <set>

#include "test_util.h"
#include "topksae/error.h"
#include "topksae/file_source.h"
#include "topksae/npy.h"
#include "topksae/prefetch.h"
#include "topksae/safetensors.h"
#include "topksae/shuffle_buffer.h"

namespace topksae {
namespace {
namespace fs = std::filesystem;

// Rows whose value encodes their global index, so any row can be recognised: x[r, i] = r + i/100.
std::vector<float> coded_rows(int64_t row0, int64_t n, int64_t d) {
  std::vector<float> v(static_cast<size_t>(n * d));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < d; ++i) v[size_t(r * d + i)] = float(row0 + r) + float(i) / 100.f;
  return v;
}
int64_t row_code(const float* row) { return int64_t(std::lround(row[0])); }

// 3 shards: a_*.npy [23, 5], b_*.npy [3, 4, 5] (12 rows), c_*.safetensors "acts" [10, 5] + "other".
void write_dataset(const fs::path& dir) {
  const int64_t d = 5;
  auto a = coded_rows(0, 23, d);
  write_npy(dir / "a_000.npy", DType::f32, {23, d}, a.data());
  auto b = coded_rows(23, 12, d);
  write_npy(dir / "b_001.npy", DType::f32, {3, 4, d}, b.data());
  auto c = coded_rows(35, 10, d);
  std::vector<float> other(7, 1.f);
  SafetensorsWriter w;
  w.add("acts", DType::f32, {10, d}, c.data());
  w.add("other", DType::f32, {7}, other.data());
  w.write(dir / "c_002.safetensors");
  std::ofstream(dir / "README.txt") << "not a shard";
}

TEST(FileDataset, ConcatenatesShardsInNameOrder) {
  test::TempDir t{"topksae_data"};
  write_dataset(t.path);
  auto ds = FileDataset::open(t.path, "acts");
  EXPECT_EQ(ds->d_in(), 5);
  EXPECT_EQ(ds->rows(), 45);
  EXPECT_EQ(ds->shards(), 3u);
  std::vector<float> all(45 * 5);
  ds->read_rows(0, 45, all.data());
  auto want = coded_rows(0, 45, 5);
  EXPECT_ALLCLOSE(all.data(), want.data(), all.size(), 0.0, 0.0);
  EXPECT_NONZERO(all);
  EXPECT_NE(ds->where(30).find("b_001.npy row 7"), std::string::npos) << ds->where(30);
}

TEST(FileDataset, ErrorsNameTheFileAndTheProblem) {
  test::TempDir t{"topksae_data"};
  write_dataset(t.path);
  try {
    FileDataset::open(t.path);  // c_002.safetensors holds two tensors
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("c_002.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--tensor"), std::string::npos) << e.what();
  }
  EXPECT_THROW(FileDataset::open(t.path, "missing"), Error);
  // a shard of another d_in
  auto x = coded_rows(0, 4, 6);
  write_npy(t.path / "d_003.npy", DType::f32, {4, 6}, x.data());
  try {
    FileDataset::open(t.path, "acts");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("d_003.npy"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("d_in 6"), std::string::npos) << e.what();
  }
  // an empty directory, an empty file, integer data, a 1-D array, a missing path
  test::TempDir e{"topksae_data"};
  EXPECT_THROW(FileDataset::open(e.path), Error);
  std::ofstream(e.path / "empty.npy").close();
  EXPECT_THROW(FileDataset::open(e.path / "empty.npy"), Error);
  std::vector<int32_t> ints(8, 1);
  write_npy(e.path / "ints.npy", DType::i32, {2, 4}, ints.data());
  EXPECT_THROW(FileDataset::open(e.path / "ints.npy"), Error);
  write_npy(e.path / "flat.npy", DType::f32, {5}, x.data());
  EXPECT_THROW(FileDataset::open(e.path / "flat.npy"), Error);
  write_npy(e.path / "zero.npy", DType::f32, {0, 5}, x.data());
  EXPECT_THROW(FileDataset::open(e.path / "zero.npy"), Error);
  EXPECT_THROW(FileDataset::open(e.path / "nope"), Error);
}

TEST(FileSource, NonFiniteRowsAreRefusedOrSkipped) {
  test::TempDir t{"topksae_data"};
  auto x = coded_rows(0, 20, 3);
  x[7 * 3 + 1] = NAN;
  x[12 * 3 + 2] = INFINITY;
  write_npy(t.path / "x.npy", DType::f32, {20, 3}, x.data());
  std::vector<float> out(20 * 3);
  {
    FileSource src(FileDataset::open(t.path / "x.npy"));
    try {
      src.next(out.data(), 20);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("x.npy row 7"), std::string::npos) << e.what();
    }
  }
  FileSource src(FileDataset::open(t.path / "x.npy"), {.skip_nonfinite = true});
  EXPECT_EQ(src.next(out.data(), 20), 18);
  EXPECT_EQ(src.skipped(), 2);
  std::vector<int64_t> codes;
  for (int r = 0; r < 18; ++r) codes.push_back(row_code(&out[size_t(r * 3)]));
  EXPECT_EQ(std::count(codes.begin(), codes.end(), 7), 0);
  EXPECT_EQ(std::count(codes.begin(), codes.end(), 12), 0);
  EXPECT_EQ(codes.back(), 19);
  for (float v : std::vector<float>(out.begin(), out.begin() + 18 * 3)) EXPECT_TRUE(std::isfinite(v));
  // every row bad, looping: an error rather than a spin
  std::vector<float> bad(6, NAN);
  write_npy(t.path / "bad.npy", DType::f32, {2, 3}, bad.data());
  FileSource all_bad(FileDataset::open(t.path / "bad.npy"), {.skip_nonfinite = true, .loop = true});
  EXPECT_THROW(all_bad.next(out.data(), 4), Error);
}

TEST(FileSource, ResumesExactlyAndLoops) {
  test::TempDir t{"topksae_data"};
  write_dataset(t.path);
  auto ds = FileDataset::open(t.path, "acts");
  FileSource a(ds, {.loop = true});
  std::vector<float> buf(60 * 5), want(50 * 5), got(50 * 5);
  a.next(buf.data(), 37);
  std::string pos = a.position();
  a.next(want.data(), 50);  // wraps past row 45
  EXPECT_EQ(a.epoch(), 1);
  EXPECT_EQ(row_code(&want[size_t(8 * 5)]), 0);
  FileSource b(ds, {.loop = true});
  b.seek(pos);
  b.next(got.data(), 50);
  EXPECT_ALLCLOSE(got.data(), want.data(), got.size(), 0.0, 0.0);
  EXPECT_NONZERO(got);
  FileSource once(ds);
  EXPECT_EQ(once.next(buf.data(), 60), 45);  // a finite source returns fewer rows at the end
  EXPECT_EQ(once.next(buf.data(), 60), 0);
  // a position from other data is refused
  test::TempDir u{"topksae_data"};
  auto y = coded_rows(0, 9, 5);
  write_npy(u.path / "y.npy", DType::f32, {9, 5}, y.data());
  FileSource other(FileDataset::open(u.path / "y.npy"));
  EXPECT_THROW(other.seek(pos), Error);
}

std::unique_ptr<IndexedSource> coded_source(const fs::path& dir, int64_t rows, int64_t d) {
  auto x = coded_rows(0, rows, d);
  write_npy(dir / "x.npy", DType::f32, {rows, d}, x.data());
  return std::make_unique<FileSource>(FileDataset::open(dir / "x.npy"));
}

TEST(ShuffleBuffer, MixesLikeSaeLensAndCoversTheData) {
  test::TempDir t{"topksae_data"};
  const int64_t N = 203, d = 3, batch = 10, buffer = 40;
  ShuffleBuffer sb(coded_source(t.path, N, d), buffer, batch, 7);
  std::vector<float> out(size_t(batch * d));
  std::vector<int64_t> seen;
  int64_t n;
  int batches = 0;
  while ((n = sb.next(out.data(), batch)) > 0) {
    ASSERT_EQ(n, batch);
    for (int64_t r = 0; r < n; ++r) {
      int64_t c = row_code(&out[size_t(r * d)]);
      // the first refill holds rows 0..39 only: the first two batches come from them
      if (batches < 2) EXPECT_LT(c, buffer);
      seen.push_back(c);
    }
    ++batches;
  }
  // 203 rows: the 3 left over at the end do not make a batch and are dropped, as in sae_lens
  EXPECT_EQ(seen.size(), 200u);
  std::set<int64_t> uniq(seen.begin(), seen.end());
  EXPECT_EQ(uniq.size(), seen.size());
  int in_order = 0;
  for (size_t i = 1; i < seen.size(); ++i) in_order += seen[i] == seen[i - 1] + 1;
  EXPECT_LT(in_order, 100) << "the buffer did not shuffle";
  // same seed, same order
  test::TempDir t2{"topksae_data"};
  ShuffleBuffer again(coded_source(t2.path, N, d), buffer, batch, 7);
  again.next(out.data(), batch);
  EXPECT_EQ(row_code(out.data()), seen[0]);
  EXPECT_THROW(ShuffleBuffer(coded_source(t2.path, N, d), 5, 10, 1), Error);
}

TEST(ShuffleBuffer, ResumesExactly) {
  test::TempDir t{"topksae_data"};
  const int64_t N = 150, d = 4, batch = 8, buffer = 30;
  ShuffleBuffer a(coded_source(t.path, N, d), buffer, batch, 3);
  std::vector<float> buf(size_t(100 * d)), want(size_t(60 * d)), got(size_t(60 * d));
  a.next(buf.data(), 29);  // mid-way through a serving set
  std::string pos = a.position();
  EXPECT_EQ(a.next(want.data(), 60), 60);
  ShuffleBuffer b(std::make_unique<FileSource>(FileDataset::open(t.path / "x.npy")), buffer, batch, 3);
  b.seek(pos);
  EXPECT_EQ(b.next(got.data(), 60), 60);
  EXPECT_ALLCLOSE(got.data(), want.data(), got.size(), 0.0, 0.0);
  EXPECT_NONZERO(got);
  ShuffleBuffer other_seed(std::make_unique<FileSource>(FileDataset::open(t.path / "x.npy")), buffer, batch, 4);
  EXPECT_THROW(other_seed.seek(pos), Error);
}

TEST(Prefetch, SameStreamAndExactResumeMidBatch) {
  test::TempDir t{"topksae_data"};
  const int64_t N = 97, d = 3;
  auto ds = [&] { return std::make_unique<FileSource>(FileDataset::open(t.path / "x.npy")); };
  coded_source(t.path, N, d);
  PrefetchSource p(ds(), 10, 3);
  std::vector<float> buf(size_t(N * d));
  EXPECT_EQ(p.next(buf.data(), 13), 13);  // 1.3 batches: the position lies inside a batch
  std::string pos = p.position();
  std::vector<float> want(size_t(N * d)), got(size_t(N * d));
  EXPECT_EQ(p.next(want.data(), 100), N - 13);
  EXPECT_EQ(p.next(want.data(), 5), 0);
  for (int64_t r = 0; r < N - 13; ++r) EXPECT_EQ(row_code(&want[size_t(r * d)]), 13 + r);
  PrefetchSource q(ds(), 10, 2);
  q.seek(pos);
  EXPECT_EQ(q.next(got.data(), 7), 7);
  EXPECT_EQ(q.next(got.data() + 7 * d, 100), N - 20);
  EXPECT_ALLCLOSE(got.data(), want.data(), size_t((N - 13) * d), 0.0, 0.0);
  EXPECT_NONZERO(got);
}

TEST(Prefetch, ErrorsArriveAfterTheGoodBatches) {
  test::TempDir t{"topksae_data"};
  auto x = coded_rows(0, 30, 2);
  x[25 * 2] = NAN;
  write_npy(t.path / "x.npy", DType::f32, {30, 2}, x.data());
  PrefetchSource p(std::make_unique<FileSource>(FileDataset::open(t.path / "x.npy")), 10, 4);
  std::vector<float> buf(20);
  EXPECT_EQ(p.next(buf.data(), 10), 10);
  EXPECT_EQ(p.next(buf.data(), 10), 10);
  EXPECT_THROW(p.next(buf.data(), 10), Error);
}

}  // namespace
}  // namespace topksae
