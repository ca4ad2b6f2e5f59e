// ckpt_io's out-of-line pieces (see checkpoint_io.h).
#include "train/checkpoint_io.h"

#include <fstream>

namespace topksae::ckpt_io {

uint64_t fnv1a(const char* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ uint8_t(p[i])) * 1099511628211ull;
  return h;
}

std::string read_all(const std::filesystem::path& path, size_t max_bytes) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  TOPKSAE_CHECK(!ec, "cannot read ", path.string(), ": ", ec.message());
  TOPKSAE_CHECK(size <= max_bytes, path.string(), " is ", size, " bytes, larger than expected (", max_bytes, ")");
  std::ifstream in(path, std::ios::binary);
  TOPKSAE_CHECK(in.good(), "cannot open ", path.string());
  std::string s(size_t(size), '\0');
  in.read(s.data(), std::streamsize(size));
  TOPKSAE_CHECK(in.gcount() == std::streamsize(size), "short read from ", path.string());
  return s;
}

}  // namespace topksae::ckpt_io
