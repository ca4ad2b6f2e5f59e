// What the fuzz targets that read directories share: the fuzzer's bytes are split into the files
// of one directory (unpack), written into a directory of this process (scratch_dir), and read by
// the engine's own loader. Pack format (tests/fuzz/pack_seed.py writes it too): every part but the
// last is a 2-byte little-endian length and that many bytes; the last part takes the rest; parts
// the bytes run out before are empty.
#pragma once
#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

namespace topksae::fuzz {

inline std::vector<std::string_view> unpack(const uint8_t* data, size_t size, size_t parts) {
  std::vector<std::string_view> out;
  const char* p = reinterpret_cast<const char*>(data);
  for (size_t i = 0; i < parts; ++i) {
    if (i + 1 == parts) {
      out.emplace_back(p, size);
      break;
    }
    size_t n = 0;
    if (size >= 2) {
      n = size_t(uint8_t(p[0])) | size_t(uint8_t(p[1])) << 8;
      p += 2;
      size -= 2;
    } else {
      size = 0;
    }
    if (n > size) n = size;
    out.emplace_back(p, n);
    p += n;
    size -= n;
  }
  return out;
}

inline std::string pack(const std::vector<std::string>& parts) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i + 1 < parts.size()) {
      const size_t n = parts[i].size() < 0xffff ? parts[i].size() : 0xffff;
      out += char(n & 0xff);
      out += char(n >> 8);
      out.append(parts[i], 0, n);
    } else {
      out += parts[i];
    }
  }
  return out;
}

// A directory of this process, emptied at exit (libFuzzer may exit() from anywhere, so atexit).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    char templ[] = "/tmp/topksae_fuzz_XXXXXX";
    if (::mkdtemp(templ) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return std::filesystem::path(templ);
  }();
  return dir;
}

// A fresh, empty subdirectory of scratch_dir() for one input.
inline std::filesystem::path fresh_dir(const char* name) {
  const std::filesystem::path d = scratch_dir() / name;
  std::error_code ec;
  std::filesystem::remove_all(d, ec);
  std::filesystem::create_directories(d);
  return d;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) std::abort();
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace topksae::fuzz
