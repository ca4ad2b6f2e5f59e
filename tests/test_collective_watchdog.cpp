// dist::CollectiveWatchdog without MPI: it fires once a call has been in progress longer than the
// timeout, with a message naming the call, its peer, the phase, the step and the flag; it never
// fires while each call completes in time, however long the run; off (0) it never fires. The
// MPI end to end (a SIGSTOPped rank) is tests/mpi/cli_faults_test.py.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "dist/collective_watchdog.h"
#include "topksae/error.h"

using namespace topksae;
using namespace std::chrono_literals;

namespace {

// Records the watchdog's message (from its thread).
struct Stalls {
  std::mutex mu;
  std::condition_variable cv;
  int count = 0;
  std::string message;
  std::function<void(const std::string&)> callback() {
    return [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(mu);
      ++count;
      message = m;
      cv.notify_all();
    };
  }
  bool wait(std::chrono::milliseconds limit) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, limit, [this] { return count > 0; });
  }
};

}  // namespace

TEST(CollectiveWatchdog, FiresAfterTheTimeoutNamingTheCallPhaseStepAndFlag) {
  Stalls s;
  dist::CollectiveWatchdog w(0.2, s.callback());
  w.set_phase("training", 41);
  const auto t0 = std::chrono::steady_clock::now();
  w.arm("all_reduce_sum");
  ASSERT_TRUE(s.wait(5000ms)) << "no stall reported within 5 s of a 0.2 s timeout";
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 0.2);
  EXPECT_LT(waited, 2.0);
  EXPECT_NE(s.message.find("MPI all_reduce_sum has not completed after 0.2 s, during training at step 41"),
            std::string::npos)
      << s.message;
  EXPECT_NE(s.message.find("--collective-timeout"), std::string::npos) << s.message;
  std::this_thread::sleep_for(300ms);
  std::lock_guard<std::mutex> lock(s.mu);
  EXPECT_EQ(s.count, 1);  // once: the job is ending
}

TEST(CollectiveWatchdog, NamesThePeerOfAPointToPointCall) {
  Stalls s;
  dist::CollectiveWatchdog w(0.1, s.callback());
  w.set_phase("the final save", 7);
  w.arm("send to", 2);
  ASSERT_TRUE(s.wait(5000ms));
  EXPECT_NE(s.message.find("MPI send to rank 2 has not completed after 0.1 s, during the final save at step 7"),
            std::string::npos)
      << s.message;
}

TEST(CollectiveWatchdog, CallsThatEachCompleteInTimeNeverFire) {
  Stalls s;
  dist::CollectiveWatchdog w(0.2, s.callback());
  // 0.7 s of calls (three and a half timeouts), each shorter than the timeout: many short ones,
  // then a few of half the timeout back to back.
  const auto t0 = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - t0 < 300ms) {
    w.arm("all_gather");
    w.disarm();
  }
  for (int i = 0; i < 4; ++i) {
    w.arm("barrier");
    std::this_thread::sleep_for(100ms);
    w.disarm();
  }
  EXPECT_FALSE(s.wait(300ms)) << s.message;  // idle (disarmed) longer than the timeout: no call, no stall
}

TEST(CollectiveWatchdog, ZeroTurnsItOff) {
  Stalls s;
  dist::CollectiveWatchdog w(0, s.callback());
  w.arm("all_reduce_sum");
  EXPECT_FALSE(s.wait(300ms));
}

TEST(CollectiveWatchdog, TimeoutFromTheEnvironment) {
  const char* saved = std::getenv("TOPKSAE_COLLECTIVE_TIMEOUT");
  const std::string keep = saved ? saved : "";
  unsetenv("TOPKSAE_COLLECTIVE_TIMEOUT");
  EXPECT_EQ(dist::collective_timeout_from_env(), dist::kDefaultCollectiveTimeoutS);
  setenv("TOPKSAE_COLLECTIVE_TIMEOUT", "2.5", 1);
  EXPECT_EQ(dist::collective_timeout_from_env(), 2.5);
  setenv("TOPKSAE_COLLECTIVE_TIMEOUT", "0", 1);
  EXPECT_EQ(dist::collective_timeout_from_env(), 0.0);
  for (const char* bad : {"-1", "ten", "5s", "nan"}) {
    setenv("TOPKSAE_COLLECTIVE_TIMEOUT", bad, 1);
    try {
      dist::collective_timeout_from_env();
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("TOPKSAE_COLLECTIVE_TIMEOUT=") + bad), std::string::npos)
          << e.what();
    }
  }
  if (saved)
    setenv("TOPKSAE_COLLECTIVE_TIMEOUT", keep.c_str(), 1);
  else
    unsetenv("TOPKSAE_COLLECTIVE_TIMEOUT");
}
