// Fixture files for the format tests, written once per test process by
// tests/fixtures/make_fixtures.py (Python standard library only, so the bytes do not come from our
// own writers), and a helper that asserts an Error whose message names the file and the problem.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "topksae/error.h"

namespace topksae::test {

struct FormatFixtures {
  std::filesystem::path dir;
  std::string error;  // non-empty when the script failed
  FormatFixtures() {
    char templ[] = "/tmp/topksae_fixtures_XXXXXX";
    if (::mkdtemp(templ) == nullptr) {
      error = "mkdtemp failed";
      return;
    }
    dir = templ;
#ifdef TOPKSAE_PYTHON
    const char* python = TOPKSAE_PYTHON;
#else
    const char* python = "python3";
#endif
    std::string cmd = std::string("'") + python + "' '" + TOPKSAE_TEST_DIR + "/fixtures/make_fixtures.py' '" + dir.string() + "'";
    int rc = std::system(cmd.c_str());
    if (rc != 0) error = "fixture script failed (exit status " + std::to_string(rc) + "): " + cmd;
  }
  ~FormatFixtures() {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

// The fixture directory, created on first use; fails the calling test loudly if python3 failed.
inline std::filesystem::path fixtures(const std::string& sub = "") {
  static FormatFixtures f;
  if (!f.error.empty()) ADD_FAILURE() << f.error;
  return sub.empty() ? f.dir : f.dir / sub;
}

// Runs fn, expecting topksae::Error whose message contains every one of `parts`.
template <typename F>
void expect_error(F&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "message lacks \"" << p << "\": " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected topksae::Error, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "expected topksae::Error mentioning \"" << (parts.empty() ? "" : parts[0]) << "\", nothing was thrown";
}

}  // namespace topksae::test
