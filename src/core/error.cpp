#include "topksae/error.h"

namespace topksae {

void report_failure(const char* what, const std::string& detail, const char* file, int line) {
  std::string msg = detail;
  if (what != nullptr) msg += concat(msg.empty() ? "" : " ", "[check failed: ", what, "]");
  // Keep only the file name: the full build path is noise for a user.
  std::string f = file;
  if (auto slash = f.find_last_of('/'); slash != std::string::npos) f = f.substr(slash + 1);
  msg += concat(" (", f, ":", line, ")");
  throw Error(msg);
}

}  // namespace topksae
