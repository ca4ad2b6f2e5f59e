// A read-only memory map of a whole file (RAII). Readers parse straight out of the map, so a file
// larger than memory streams through the page cache instead of being copied.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace topksae {

class MappedFile {
 public:
  // Maps `path` read-only. Throws Error naming the file when it cannot be opened, is not a
  // regular file, or cannot be mapped. An empty file maps to data() == nullptr, size() == 0.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::filesystem::path path_;
};

}  // namespace topksae
