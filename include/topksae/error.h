// Errors and checks: one exception type for everything a user can cause, one reporter that names
// the failing expression, file and line for everything a programmer can cause.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace topksae {

// Thrown for bad input (files, arguments, shapes). `what()` is meant to be read by a user.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// Formats its arguments with operator<< into one string.
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// Throws Error("<what>: <detail> (at file:line)"); used by the check macros below.
[[noreturn]] void report_failure(const char* what, const std::string& detail, const char* file, int line);

}  // namespace topksae

// TOPKSAE_CHECK(cond, msg...): a precondition a user can violate; throws topksae::Error with the
// message, the condition text and the source location.
#define TOPKSAE_CHECK(cond, ...)                                                                  \
  do {                                                                                            \
    if (!(cond)) ::topksae::report_failure(#cond, ::topksae::concat(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)

// TOPKSAE_FAIL(msg...): unconditional failure with a user-readable message.
#define TOPKSAE_FAIL(...) ::topksae::report_failure(nullptr, ::topksae::concat(__VA_ARGS__), __FILE__, __LINE__)
