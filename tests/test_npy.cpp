// npy reader against files written by tests/fixtures/make_fixtures.py (Python stdlib), malformed
// files refused with messages naming the file and the problem, and the writer read back.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>

#include "formats_fixtures.h"
#include "topksae/npy.h"

namespace topksae {
namespace {

using test::expect_error;
using test::fixtures;

std::filesystem::path np(const std::string& name) { return fixtures("npy") / name; }

TEST(Npy, ReadsVersion1Float32) {
  NpyFile f = NpyFile::open(np("valid_v1_f4.npy"));
  EXPECT_EQ(f.version_major(), 1);
  const ArrayView& a = f.array();
  EXPECT_EQ(a.dtype, DType::f32);
  EXPECT_EQ(a.shape, (Shape{3, 4}));
  EXPECT_TRUE(a.aligned());
  std::vector<float> want(12);
  for (int i = 0; i < 12; ++i) want[size_t(i)] = float(i) * 0.5f - 2.f;
  EXPECT_EQ(a.to_f32(), want);
  EXPECT_EQ(a.rows(), 3);
  EXPECT_EQ(a.cols(), 4);
}

TEST(Npy, ReadsVersion2Float16AndVersion3Float64In3D) {
  NpyFile h = NpyFile::open(np("valid_v2_f2.npy"));
  EXPECT_EQ(h.version_major(), 2);
  EXPECT_EQ(h.array().dtype, DType::f16);
  EXPECT_EQ(h.array().to_f32(), (std::vector<float>{0.5f, -1.f, 2.f, 1024.f, -0.25f, 3.f}));

  NpyFile d = NpyFile::open(np("valid_v3_f8_3d.npy"));
  EXPECT_EQ(d.version_major(), 3);
  const ArrayView& a = d.array();
  EXPECT_EQ(a.shape, (Shape{2, 2, 3}));
  EXPECT_EQ(a.rows(), 4);  // [N, ctx, d_in] is N*ctx rows of d_in
  EXPECT_EQ(a.cols(), 3);
  std::vector<float> r(6);
  a.rows_f32(2, 2, r.data());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(r[size_t(i)], float(0.1 * (6 + i)));
}

TEST(Npy, ReadsIntegersOneDimAndPython2Longs) {
  NpyFile i4 = NpyFile::open(np("valid_i4.npy"));
  EXPECT_EQ(i4.array().dtype, DType::i32);
  std::vector<int32_t> v(4);
  std::memcpy(v.data(), i4.array().data, 16);
  EXPECT_EQ(v, (std::vector<int32_t>{1, -2, 3, -4}));
  NpyFile i8 = NpyFile::open(np("valid_i8.npy"));
  EXPECT_EQ(i8.array().dtype, DType::i64);
  int64_t w[2];
  std::memcpy(w, i8.array().data, 16);
  EXPECT_EQ(w[0], int64_t(1) << 40);
  EXPECT_EQ(w[1], -7);
  expect_error([&] { i8.array().to_f32(); }, {"i64", "float32"});
  EXPECT_EQ(NpyFile::open(np("valid_1d.npy")).array().shape, (Shape{5}));
  EXPECT_EQ(NpyFile::open(np("valid_python2_long.npy")).array().shape, (Shape{2, 2}));
}

struct BadCase {
  const char* file;
  std::vector<std::string> parts;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.file; }

class NpyMalformed : public ::testing::TestWithParam<BadCase> {};

TEST_P(NpyMalformed, IsRefusedWithAClearMessage) {
  std::vector<std::string> parts = GetParam().parts;
  parts.push_back(GetParam().file);
  expect_error([&] { NpyFile::open(np(GetParam().file)); }, parts);
}

INSTANTIATE_TEST_SUITE_P(
    Files, NpyMalformed,
    ::testing::Values(BadCase{"fortran.npy", {"fortran_order True"}}, BadCase{"big_endian.npy", {"big-endian", ">f4"}},
                      BadCase{"object.npy", {"object dtype", "|O"}}, BadCase{"bad_magic.npy", {"bad magic"}},
                      BadCase{"bad_version.npy", {"unsupported npy version 7.0"}},
                      BadCase{"shape_mismatch.npy", {"shape [3, 5]", "mismatch"}},
                      BadCase{"truncated.npy", {"mismatch", "truncated"}},
                      BadCase{"header_past_end.npy", {"header length 60000", "past the end"}},
                      BadCase{"bad_header.npy", {"malformed npy header", "'shape' must be a tuple"}},
                      BadCase{"missing_key.npy", {"malformed npy header", "'fortran_order'"}},
                      BadCase{"structured.npy", {"structured"}}),
    [](const ::testing::TestParamInfo<BadCase>& i) {
      std::string n = i.param.file;
      return n.substr(0, n.find('.'));
    });

TEST(Npy, HeaderIsParsedStrictly) {
  auto bytes_with = [](const std::string& dict) {
    std::string h = dict;
    while ((10 + h.size() + 1) % 64) h += ' ';
    h += '\n';
    std::string out("\x93NUMPY\x01\x00", 8);
    out += char(h.size() & 0xff);
    out += char(h.size() >> 8);
    return out + h + std::string(8, '\0');  // 2 floats
  };
  const std::string ok = bytes_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }");
  EXPECT_EQ(NpyFile::parse(ok.data(), ok.size(), "ok").array().shape, (Shape{2}));
  for (const char* bad : {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}",
                          "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",
                          "{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}",
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}",
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} junk",
                          "{'descr': '<f4' 'fortran_order': False, 'shape': (2,)}",
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}",
                          "{'descr': '<f4', 'fortran_order': False, 'shape': (2,"}) {
    const std::string b = bytes_with(bad);
    expect_error([&] { NpyFile::parse(b.data(), b.size(), "mem.npy"); }, {"mem.npy", "malformed npy header"});
  }
}

TEST(Npy, WriterOutputReadsBackWithNumpyLayout) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  std::vector<float> x(7 * 3 * 5);  // [7, 3, 5]
  for (auto& v : x) v = nd(rng);
  auto path = fixtures() / "written.npy";
  write_npy(path, DType::f32, {7, 3, 5}, x.data());
  NpyFile f = NpyFile::open(path);
  EXPECT_EQ(f.array().shape, (Shape{7, 3, 5}));
  EXPECT_EQ(f.array().to_f32(), x);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.array().data) % 64, 0u);  // header padded to 64 bytes
  // numpy's exact header text for this array
  std::ifstream in(path, std::ios::binary);
  std::string head(128, '\0');
  in.read(head.data(), 128);
  EXPECT_NE(head.find("{'descr': '<f4', 'fortran_order': False, 'shape': (7, 3, 5), }"), std::string::npos);

  std::vector<int32_t> i{1, 2, 3};
  write_npy(path, DType::i32, {3}, i.data());
  NpyFile g = NpyFile::open(path);
  EXPECT_EQ(g.array().dtype, DType::i32);
  EXPECT_EQ(g.array().shape, (Shape{3}));
  std::vector<int64_t> l{-1, 5};
  std::string b = npy_bytes(DType::i64, {2}, l.data());
  EXPECT_EQ(NpyFile::parse(b.data(), b.size()).array().dtype, DType::i64);
  EXPECT_NE(b.find("'shape': (2,)"), std::string::npos);
}

}  // namespace
}  // namespace topksae
