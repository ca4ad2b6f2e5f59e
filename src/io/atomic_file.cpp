#include "topksae/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "topksae/error.h"

namespace topksae {

namespace {
void fsync_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some filesystems refuse to open directories
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

AtomicFile::AtomicFile(std::filesystem::path path) : path_(std::move(path)) {
  std::filesystem::path dir = path_.parent_path();
  std::string name = ".";  // built in steps: GCC 12 warns falsely (-Wrestrict) on "." + s + "..."
  name += path_.filename().string();
  name += ".tmp.XXXXXX";
  std::string templ = (dir / name).string();
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) TOPKSAE_FAIL(path_.string(), ": cannot create a temporary file in '", dir.string(), "': ", std::strerror(errno));
  tmp_ = buf.data();
  // mkstemp makes the file 0600; give it the mode a plain open() would (0666 & ~umask).
  mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd_, 0666 & ~mask);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
  TOPKSAE_CHECK(fd_ >= 0 && !committed_, path_.string(), ": write after commit");
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd_, p, bytes > (size_t(1) << 30) ? (size_t(1) << 30) : bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      TOPKSAE_FAIL(path_.string(), ": write failed: ", std::strerror(errno));
    }
    p += n;
    bytes -= size_t(n);
  }
}

void AtomicFile::commit() {
  TOPKSAE_CHECK(fd_ >= 0 && !committed_, path_.string(), ": commit twice");
  if (::fsync(fd_) != 0) TOPKSAE_FAIL(path_.string(), ": fsync failed: ", std::strerror(errno));
  int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) TOPKSAE_FAIL(path_.string(), ": close failed: ", std::strerror(errno));
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    TOPKSAE_FAIL(path_.string(), ": cannot rename the temporary file into place: ", std::strerror(errno));
  committed_ = true;
  fsync_dir(path_.parent_path());
}

void write_file_atomic(const std::filesystem::path& path, std::string_view bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

std::string read_small_file(const std::filesystem::path& path, size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) TOPKSAE_FAIL(path.string(), ": no such file");
  auto size = std::filesystem::file_size(path, ec);
  if (ec) TOPKSAE_FAIL(path.string(), ": cannot stat: ", ec.message());
  if (size > max_bytes) TOPKSAE_FAIL(path.string(), ": file is ", size, " bytes, more than the ", max_bytes, " allowed");
  std::ifstream in(path, std::ios::binary);
  if (!in) TOPKSAE_FAIL(path.string(), ": cannot open");
  std::string s(size_t(size), '\0');
  in.read(s.data(), std::streamsize(size));
  if (size_t(in.gcount()) != size) TOPKSAE_FAIL(path.string(), ": short read");
  return s;
}

}  // namespace topksae
