// safetensors reader against files written by tests/fixtures/make_fixtures.py (Python stdlib),
// every malformed case refused with a message naming the file and the problem, and the writer
// read back by the reader.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "formats_fixtures.h"
#include "topksae/safetensors.h"

namespace topksae {
namespace {

using test::expect_error;
using test::fixtures;

std::filesystem::path st(const std::string& name) { return fixtures("st") / name; }

template <typename T>
std::vector<T> as(const ArrayView& v) {
  std::vector<T> out(v.nbytes / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), v.data, v.nbytes);
  return out;
}

TEST(Safetensors, ReadsEveryDtypeFromPythonWrittenFile) {
  SafetensorsFile f = SafetensorsFile::open(st("valid.safetensors"));
  ASSERT_EQ(f.tensors().size(), 9u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "made by make_fixtures.py");
  EXPECT_EQ(f.at("a").dtype, DType::f32);
  EXPECT_EQ(f.at("a").shape, (Shape{2, 3}));
  EXPECT_EQ(f.read_f32("a"), (std::vector<float>{0.5f, -1.25f, 2.f, 3.5f, -4.f, 0.001f}));
  EXPECT_EQ(f.at("b").dtype, DType::f16);
  EXPECT_EQ(f.read_f32("b"), (std::vector<float>{1.5f, -2.f, 65504.f}));
  EXPECT_EQ(f.at("c").dtype, DType::bf16);
  EXPECT_EQ(f.at("c").shape, (Shape{2, 2}));
  EXPECT_EQ(f.read_f32("c"), (std::vector<float>{1.f, -0.5f, 3.f, 256.f}));
  EXPECT_EQ(f.at("d").dtype, DType::f64);
  EXPECT_EQ(f.read_f32("d"), (std::vector<float>{0.1f, -1e10f}));
  EXPECT_EQ(as<int32_t>(f.at("e")), (std::vector<int32_t>{7, -8, 2147483647}));
  EXPECT_EQ(as<int64_t>(f.at("f")), (std::vector<int64_t>{-1, int64_t(1) << 40}));
  EXPECT_EQ(as<uint8_t>(f.at("g")), (std::vector<uint8_t>{0, 1, 2, 254, 255}));
  EXPECT_EQ(f.at("h").dtype, DType::boolean);
  EXPECT_EQ(as<uint8_t>(f.at("h")), (std::vector<uint8_t>{1, 0, 1}));
  EXPECT_EQ(f.at("empty").shape, (Shape{0, 4}));
  EXPECT_EQ(f.at("empty").numel(), 0);
  EXPECT_TRUE(f.read_f32("empty").empty());
  // tensors() is in file order
  EXPECT_EQ(f.tensors().front().name, "a");
  EXPECT_EQ(f.tensors().back().name, "empty");
}

TEST(Safetensors, IntegerTensorIsNotReadAsFloat) {
  SafetensorsFile f = SafetensorsFile::open(st("valid.safetensors"));
  expect_error([&] { f.read_f32("e"); }, {"e", "i32", "float32"});
  expect_error([&] { f.at("zzz"); }, {"valid.safetensors", "no tensor named 'zzz'"});
}

TEST(Safetensors, UnalignedDataIsConverted) {
  SafetensorsFile f = SafetensorsFile::open(st("unaligned.safetensors"));
  EXPECT_FALSE(f.at("a").aligned());
  EXPECT_EQ(f.read_f32("a"), (std::vector<float>{0.5f, -1.25f, 2.f, 3.5f, -4.f, 0.001f}));
  std::vector<float> rows(3);
  f.at("a").rows_f32(1, 1, rows.data());
  EXPECT_EQ(rows, (std::vector<float>{3.5f, -4.f, 0.001f}));
}

TEST(Safetensors, ThreeDimensionalActivationsAreRows) {
  SafetensorsFile f = SafetensorsFile::open(st("activations.safetensors"));
  const ArrayView& a = f.at("acts");
  EXPECT_EQ(a.rows(), 6);
  EXPECT_EQ(a.cols(), 4);
  std::vector<float> r(8);
  a.rows_f32(4, 2, r.data());
  EXPECT_EQ(r[0], 16.f - 5.f);
  EXPECT_EQ(r[7], 23.f - 5.f);
  expect_error([&] { a.rows_f32(5, 2, r.data()); }, {"out of range"});
}

TEST(Safetensors, EmptyHeaderIsAValidEmptyFile) {
  SafetensorsFile f = SafetensorsFile::open(st("empty_header.safetensors"));
  EXPECT_TRUE(f.tensors().empty());
}

struct BadCase {
  const char* file;
  std::vector<std::string> parts;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.file; }

class SafetensorsMalformed : public ::testing::TestWithParam<BadCase> {};

TEST_P(SafetensorsMalformed, IsRefusedWithAClearMessage) {
  const BadCase& c = GetParam();
  expect_error([&] { SafetensorsFile::open(st(c.file)); }, [&] {
    std::vector<std::string> parts = c.parts;
    parts.push_back(c.file);  // the message names the file
    return parts;
  }());
}

INSTANTIATE_TEST_SUITE_P(
    Files, SafetensorsMalformed,
    ::testing::Values(BadCase{"truncated.safetensors", {"out of range", "truncated"}},
                      BadCase{"too_short.safetensors", {"truncated"}},
                      BadCase{"header_past_end.safetensors", {"header length 4096", "past the end"}},
                      BadCase{"header_2p63.safetensors", {"header length 9223372036854775808", "limit"}},
                      BadCase{"overlap.safetensors", {"overlapping", "'b'", "'a'"}},
                      BadCase{"out_of_range.safetensors", {"'b'", "out of range"}},
                      BadCase{"hole.safetensors", {"hole", "[4, 8)"}},
                      BadCase{"tail.safetensors", {"hole", "[12, 16)", "at the end"}},
                      BadCase{"unknown_dtype.safetensors", {"unknown dtype 'Q4'"}},
                      BadCase{"shape_mismatch.safetensors", {"shape*itemsize mismatch", "[2, 3]"}},
                      BadCase{"bad_json.safetensors", {"not valid JSON"}},
                      BadCase{"not_object.safetensors", {"must be a JSON object"}},
                      BadCase{"duplicate.safetensors", {"duplicate name 'a'"}},
                      BadCase{"bad_metadata.safetensors", {"__metadata__", "'n'", "string"}},
                      BadCase{"negative_offset.safetensors", {"data_offsets", "non-negative"}},
                      BadCase{"huge_shape.safetensors", {"more than 2^64", "mismatch"}}),
    [](const ::testing::TestParamInfo<BadCase>& i) {
      std::string n = i.param.file;
      return n.substr(0, n.find('.'));
    });

TEST(Safetensors, MissingFileIsNamed) {
  expect_error([] { SafetensorsFile::open(fixtures("st") / "nope.safetensors"); }, {"nope.safetensors", "cannot open"});
}

TEST(Safetensors, WriterRoundTripsEveryDtypeAndPadsHeader) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  std::vector<float> w(35);  // [5, 7]: not a multiple of anything
  for (auto& v : w) v = nd(rng);
  std::vector<double> d{1.0 / 3.0, -2.5};
  std::vector<int32_t> i32{1, -2, 3};
  std::vector<int64_t> i64{int64_t(1) << 50};
  std::vector<uint8_t> u8{9, 8, 7};
  std::vector<uint8_t> b{1, 0};
  SafetensorsWriter wr;
  wr.add_f32("w16", {5, 7}, w.data(), DType::f16);  // 2-byte tensor first: the writer reorders
  wr.add_f32("w", {5, 7}, w.data());
  wr.add_f32("wb", {5, 7}, w.data(), DType::bf16);
  wr.add("d", DType::f64, {2}, d.data());
  wr.add("i32", DType::i32, {3}, i32.data());
  wr.add("i64", DType::i64, {1}, i64.data());
  wr.add("u8", DType::u8, {3}, u8.data());
  wr.add("bool", DType::boolean, {2}, b.data());
  wr.set_metadata("source", "test");
  expect_error([&] { wr.add("w", DType::f32, {1}, w.data()); }, {"'w'", "twice"});
  auto path = fixtures() / "written.safetensors";
  wr.write(path);

  std::ifstream in(path, std::ios::binary);
  uint8_t len[8];
  in.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  EXPECT_EQ(n % 8, 0u);

  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata().at("source"), "test");
  for (const auto& t : f.tensors()) EXPECT_TRUE(t.aligned()) << t.name;
  EXPECT_EQ(f.read_f32("w"), w);
  auto w16 = f.read_f32("w16");
  auto wb = f.read_f32("wb");
  double norm = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_EQ(w16[i], f16_to_f32(f32_to_f16(w[i])));
    EXPECT_EQ(wb[i], bf16_to_f32(f32_to_bf16(w[i])));
    norm += std::fabs(w16[i]);
  }
  EXPECT_GT(norm, 0.0);
  EXPECT_EQ(as<double>(f.at("d")), d);
  EXPECT_EQ(as<int32_t>(f.at("i32")), i32);
  EXPECT_EQ(as<int64_t>(f.at("i64")), i64);
  EXPECT_EQ(as<uint8_t>(f.at("u8")), u8);
  EXPECT_EQ(as<uint8_t>(f.at("bool")), b);
  // No temporary file is left beside it.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(fixtures()))
    files += e.path().filename().string().find("written.safetensors") != std::string::npos;
  EXPECT_EQ(files, 1);
}

TEST(Safetensors, ParseFromMemoryMatchesWriterBytes) {
  std::vector<float> v{1.f, 2.f, 3.f};
  SafetensorsWriter wr;
  wr.add_f32("v", {3}, v.data());
  std::string bytes = wr.to_bytes();
  SafetensorsFile f = SafetensorsFile::parse(bytes.data(), bytes.size(), "mem");
  EXPECT_EQ(f.read_f32("v"), v);
  expect_error([&] { SafetensorsFile::parse(bytes.data(), bytes.size() - 1, "mem"); }, {"mem", "out of range"});
}

}  // namespace
}  // namespace topksae
