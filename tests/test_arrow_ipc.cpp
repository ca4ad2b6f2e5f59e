// Arrow IPC reader and Arrow activation datasets against files written by
// tests/fixtures/make_fixtures.py (a stdlib-only flatbuffer + IPC stream writer that mimics what
// pyarrow / HuggingFace datasets write for sae_lens's cache): values compared exactly, column
// selection, state.json order, and malformed files refused with messages naming the problem.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "formats_fixtures.h"
#include "topksae/arrow_ipc.h"
#include "topksae/file_source.h"

namespace topksae {
namespace {

using test::expect_error;
using test::fixtures;

const char* const kHook = "blocks.0.hook_resid_pre";
constexpr int64_t kCtx = 3, kDin = 5;

std::filesystem::path ar(const std::string& name) { return fixtures("arrow") / name; }

// make_fixtures.arrow_acts: sequence r of a record batch written with `seed`, flattened to rows.
std::vector<float> acts(int64_t n_rows, int64_t seed, int64_t first = 0, int64_t ctx = kCtx, int64_t d_in = kDin) {
  std::vector<float> v;
  for (int64_t r = first; r < first + n_rows; ++r)
    for (int64_t c = 0; c < ctx; ++c)
      for (int64_t i = 0; i < d_in; ++i) v.push_back(float(((seed * 7919 + (r * ctx + c) * d_in + i) * 37 % 1001) / 8.0 - 62.5));
  return v;
}
std::vector<float> cat(std::vector<float> a, const std::vector<float>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}
std::vector<float> all_rows(const ArrowStreamFile& f) {
  std::vector<float> out;
  for (const auto& b : f.batches()) out = cat(out, b.to_f32());
  return out;
}
std::vector<float> all_rows(const FileDataset& d) {
  std::vector<float> out(static_cast<size_t>(d.rows() * d.d_in()));
  d.read_rows(0, d.rows(), out.data());
  return out;
}

TEST(ArrowIpc, ReadsTheSaeLensLayout) {
  ArrowStreamFile f = ArrowStreamFile::open(ar("sae_lens.arrow"));
  ASSERT_EQ(f.columns().size(), 2u);
  EXPECT_EQ(f.columns()[0].name, kHook);
  EXPECT_EQ(f.columns()[0].type, "list<list<float32>>");
  EXPECT_TRUE(f.columns()[0].activations);
  EXPECT_EQ(f.columns()[1].name, "token_ids");
  EXPECT_EQ(f.columns()[1].type, "fixed_size_list<int32>[3]");
  EXPECT_FALSE(f.columns()[1].activations);
  EXPECT_EQ(f.column(), kHook);  // the default: the only list<list<float>> column
  EXPECT_EQ(f.dtype(), DType::f32);
  EXPECT_EQ(f.context_size(), kCtx);
  EXPECT_EQ(f.d_in(), kDin);
  EXPECT_EQ(f.sequences(), 5);
  EXPECT_EQ(f.record_batches(), 3u);  // 2, 0 and 3 rows: the empty one has no view
  ASSERT_EQ(f.batches().size(), 2u);
  EXPECT_EQ(f.batches()[0].shape, (Shape{2, kCtx, kDin}));
  EXPECT_EQ(f.batches()[1].shape, (Shape{3, kCtx, kDin}));
  EXPECT_TRUE(f.batches()[0].aligned());
  EXPECT_EQ(f.batches()[0].rows(), 2 * kCtx);  // [N, ctx, d_in] counts N*ctx rows, like npy
  const auto* base = static_cast<const uint8_t*>(f.mapped()->data());  // zero-copy views into the map
  const auto* p = static_cast<const uint8_t*>(f.batches()[1].data);
  EXPECT_TRUE(p > base && p + f.batches()[1].nbytes <= base + f.mapped()->size());
  std::vector<float> got = all_rows(f), want = cat(acts(2, 1), acts(3, 21));
  EXPECT_EQ(got, want);
  EXPECT_NE(want[7], 0.f);
}

TEST(ArrowIpc, ReadsHalfDoubleLargeAndFixedSizeLists) {
  ArrowStreamFile h = ArrowStreamFile::open(ar("f16.arrow"));
  EXPECT_EQ(h.dtype(), DType::f16);
  EXPECT_EQ(all_rows(h), acts(4, 2));  // the values are exact in float16
  ArrowStreamFile d = ArrowStreamFile::open(ar("f64_large_fsl.arrow"));
  EXPECT_EQ(d.columns()[0].type, "large_list<fixed_size_list<float64>[5]>");
  EXPECT_EQ(d.dtype(), DType::f64);
  EXPECT_EQ(all_rows(d), cat(acts(2, 3), acts(1, 13)));
  ArrowStreamFile x = ArrowStreamFile::open(ar("fsl_fsl.arrow"));
  EXPECT_EQ(x.columns()[0].type, "fixed_size_list<fixed_size_list<float32>[5]>[3]");
  EXPECT_EQ(all_rows(x), acts(3, 4));
}

TEST(ArrowIpc, LegacyFramingMissingEosSlicedOffsetsAndColumnsBefore) {
  EXPECT_EQ(all_rows(ArrowStreamFile::open(ar("legacy.arrow"))), acts(2, 5));  // no 0xFFFFFFFF markers
  EXPECT_EQ(all_rows(ArrowStreamFile::open(ar("no_eos.arrow"))), acts(2, 6));  // ends without the EOS marker
  EXPECT_EQ(all_rows(ArrowStreamFile::open(ar("sliced.arrow"))), acts(2, 8, 1));  // offsets from a base of 3
  ArrowStreamFile t = ArrowStreamFile::open(ar("text_first.arrow"));  // utf8 and token_ids columns first
  EXPECT_EQ(t.columns()[0].type, "utf8");
  EXPECT_EQ(t.column(), kHook);
  EXPECT_EQ(all_rows(t), acts(2, 7));
}

TEST(ArrowIpc, ColumnSelection) {
  expect_error([] { ArrowStreamFile::open(ar("two_columns.arrow")); },
               {"two_columns.arrow", "several activation columns (a, b)", "--tensor"});
  EXPECT_EQ(all_rows(ArrowStreamFile::open(ar("two_columns.arrow"), "b")), acts(1, 10));
  EXPECT_EQ(all_rows(ArrowStreamFile::open(ar("two_columns.arrow"), "a")), acts(1, 9));
  expect_error([] { ArrowStreamFile::open(ar("two_columns.arrow"), "nope"); },
               {"two_columns.arrow", "no column named 'nope'", "a list<list<float32>>, b list<list<float32>>"});
  expect_error([] { ArrowStreamFile::open(ar("sae_lens.arrow"), "token_ids"); },
               {"sae_lens.arrow", "column 'token_ids' has type fixed_size_list<int32>[3]", "list of lists"});
  expect_error([] { ArrowStreamFile::open(ar("int_only.arrow")); },
               {"int_only.arrow", "no column is a list of lists of floats", "ints list<list<int32>>"});
  expect_error([] { ArrowStreamFile::open(ar("int_only.arrow"), "ints"); },
               {"int_only.arrow", "column 'ints' has type list<list<int32>>"});
}

TEST(ArrowDataset, DatasetsDirectoryFollowsStateJson) {
  auto ds = FileDataset::open(ar("ds_state"));
  EXPECT_EQ(ds->d_in(), kDin);
  EXPECT_EQ(ds->rows(), 5 * kCtx);
  EXPECT_EQ(ds->shards(), 2u);
  // state.json lists data-b.arrow (seed 30) before data-a.arrow (batches of seeds 40 and 50).
  EXPECT_EQ(all_rows(*ds), cat(cat(acts(2, 30), acts(1, 40)), acts(2, 50)));
  EXPECT_NE(ds->where(2 * kCtx).find("data-a.arrow row 0"), std::string::npos) << ds->where(2 * kCtx);
  // A row of data-a's second record batch is named by its row in the file.
  EXPECT_NE(ds->where(3 * kCtx + 1).find("data-a.arrow row 4"), std::string::npos) << ds->where(3 * kCtx + 1);
  const std::string d = ds->describe();
  EXPECT_NE(d.find("2 arrow shards"), std::string::npos) << d;
  EXPECT_NE(d.find(std::string("column '") + kHook + "'"), std::string::npos) << d;
  EXPECT_NE(d.find("15 rows of d_in 5, f32"), std::string::npos) << d;

  auto names = FileDataset::open(ar("ds_names"));  // no state.json: file-name order
  EXPECT_EQ(all_rows(*names), cat(cat(acts(1, 40), acts(2, 50)), acts(2, 30)));
}

TEST(ArrowDataset, SingleFilesAndRandomAccessAcrossRecordBatches) {
  auto ds = FileDataset::open(ar("sae_lens.arrow"), kHook);
  ASSERT_EQ(ds->rows(), 15);
  const std::vector<float> want = cat(acts(2, 1), acts(3, 21));
  FileSource src(ds);
  std::vector<float> got(want.size());
  std::vector<int64_t> ids(15);
  EXPECT_EQ(src.next_indexed(got.data(), ids.data(), 15), 15);
  EXPECT_EQ(got, want);
  // rows 4..8 straddle the two record batches
  std::vector<float> mid(static_cast<size_t>(5 * kDin));
  ds->read_rows(4, 5, mid.data());
  EXPECT_EQ(mid, std::vector<float>(want.begin() + 4 * kDin, want.begin() + 9 * kDin));
  const int64_t pick[] = {14, 0, 6, 5};
  std::vector<float> r(static_cast<size_t>(4 * kDin));
  src.read_ids(pick, 4, r.data());
  for (int j = 0; j < 4; ++j)
    for (int i = 0; i < kDin; ++i) EXPECT_EQ(r[size_t(j * kDin + i)], want[size_t(pick[j] * kDin + i)]);
  EXPECT_NE(FileDataset::open(ar("f16.arrow"))->describe().find("f16"), std::string::npos);
}

TEST(ArrowDataset, DirectoryErrors) {
  expect_error([] { FileDataset::open(ar("ds_missing")); }, {"state.json", "data-gone.arrow", "missing"});
  expect_error([] { FileDataset::open(ar("ds_d_in")); }, {"data-1.arrow", "d_in 6 differs from the d_in 5"});
  expect_error([] { FileDataset::open(ar("ds_state"), "nope"); }, {"data-b.arrow", "no column named 'nope'"});
}

struct BadCase {
  const char* file;
  std::vector<std::string> parts;
};
void PrintTo(const BadCase& c, std::ostream* os) { *os << c.file; }

class ArrowMalformed : public ::testing::TestWithParam<BadCase> {};

TEST_P(ArrowMalformed, IsRefusedWithAClearMessage) {
  std::vector<std::string> parts = GetParam().parts;
  parts.push_back(GetParam().file);
  expect_error([&] { ArrowStreamFile::open(ar(std::string("bad/") + GetParam().file)); }, parts);
  expect_error([&] { FileDataset::open(ar(std::string("bad/") + GetParam().file)); }, parts);
}

INSTANTIATE_TEST_SUITE_P(
    Files, ArrowMalformed,
    ::testing::Values(
        BadCase{"truncated.arrow", {"body of", "runs past the end of the file", "truncated"}},
        BadCase{"bad_continuation.arrow", {"message at offset", "runs past the end", "continuation marker"}},
        BadCase{"not_arrow.arrow", {"not an Arrow IPC stream"}},
        BadCase{"empty.arrow", {"no schema message"}},
        BadCase{"body_past_eof.arrow", {"message 1", "body of 1099511627776 bytes runs past the end"}},
        BadCase{"buffer_past_body.arrow", {"buffer 5", "lies outside the message body"}},
        BadCase{"ragged_outer.arrow", {kHook, "record batch 0", "element 0 holds 4 lists where 3 (the context size)"}},
        BadCase{"ragged_inner.arrow", {kHook, "element 1 holds 4 values where 5 (the d_in)"}},
        BadCase{"offsets_past_values.arrow", {kHook, "35 values needed but the array holds 30"}},
        BadCase{"offsets_decrease.arrow", {kHook, "offsets decrease at element 1"}},
        BadCase{"short_offsets.arrow", {kHook, "offsets buffer of 8 bytes is too short for 3 offsets"}},
        BadCase{"nulls.arrow", {kHook, "1 nulls", "must not be null"}},
        BadCase{"compressed.arrow", {kHook, "compressed", "not supported"}},
        BadCase{"dictionary.arrow", {"dictionary batch", "not supported"}},
        BadCase{"big_endian.arrow", {"big-endian"}},
        BadCase{"ctx_disagree.arrow", {"record batch 1", "holds 2 lists where 3 (the context size)"}},
        BadCase{"ext_mismatch.arrow", {"record batch 0", "holds 3 lists where 4 (the context size)"}},
        BadCase{"bad_flatbuffer.arrow", {"malformed flatbuffer", "run past its end"}}));

// Every prefix and every single-byte corruption of a valid file: a result or an Error, never a
// crash (the sanitizer CI step runs this under ASan + UBSan; the fuzzer goes further).
TEST(ArrowIpc, PrefixesAndByteFlipsNeverCrash) {
  std::ifstream in(ar("sae_lens.arrow"), std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 500u);
  int ok = 0, refused = 0;
  auto attempt = [&](const std::vector<uint8_t>& b) {
    try {
      ArrowStreamFile f = ArrowStreamFile::parse(b.data(), b.size(), "mutant");
      for (const auto& v : f.batches()) {
        const auto* p = static_cast<const uint8_t*>(v.data);
        ASSERT_TRUE(p >= b.data() && p + v.nbytes <= b.data() + b.size());
        ASSERT_EQ(int64_t(v.nbytes), v.rows() * v.cols() * int64_t(itemsize(v.dtype)));
        (void)v.to_f32();
      }
      ++ok;
    } catch (const Error&) {
      ++refused;
    }
  };
  for (size_t n = 0; n < bytes.size(); ++n) attempt(std::vector<uint8_t>(bytes.begin(), bytes.begin() + long(n)));
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::vector<uint8_t> b = bytes;
    b[i] ^= 0xA5;
    attempt(b);
  }
  EXPECT_GT(refused, int(bytes.size()) / 2);
  EXPECT_GT(ok, 0);
}

}  // namespace
}  // namespace topksae
