// Writing a file so that a crash never leaves a half-written one: bytes go to a temporary file in
// the same directory, which commit() fsyncs and renames over the destination. If the writer is
// destroyed without commit() (an exception, an early return) the temporary file is removed.
#pragma once
#include <cstddef>
#include <filesystem>
#include <string_view>

namespace topksae {

class AtomicFile {
 public:
  // Creates the temporary file next to `path` (the directory must exist). Throws Error on failure.
  explicit AtomicFile(std::filesystem::path path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t bytes);  // throws Error naming the file (disk full, ...)
  void write(std::string_view s) { write(s.data(), s.size()); }
  // fsync, close, rename into place, fsync the directory. Throws Error on failure.
  void commit();

  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

// Writes `bytes` to `path` through an AtomicFile.
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

// Reads a whole (small) file, such as cfg.json; throws Error naming the file if it cannot, or if it
// is larger than max_bytes.
std::string read_small_file(const std::filesystem::path& path, size_t max_bytes = size_t(64) << 20);

}  // namespace topksae
