// A stalled collective never hangs a sharded run: the Collectives implementation arms this
// watchdog around every call (two relaxed atomic stores and one steady_clock read, no lock, no
// thread per call), and one thread, started once, wakes a few times per timeout and fires when a
// call has been in progress longer than the timeout. A stall is what an MPI error handler cannot
// see: a rank that is stopped (SIGSTOP, a debugger), stuck in its own work or livelocked is still
// alive, so MPI never reports an error and the other ranks would wait in their next collective
// forever. On firing, on_stall gets a message naming the collective, the step and the timeout;
// the MPI engine prints it and ends the job (MPI_Abort).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace topksae::dist {

// The timeout used when neither --collective-timeout nor TOPKSAE_COLLECTIVE_TIMEOUT says (seconds;
// docs/scaling.md "Faults" explains the choice).
inline constexpr double kDefaultCollectiveTimeoutS = 600;

// TOPKSAE_COLLECTIVE_TIMEOUT (seconds, 0 = no watchdog) or kDefaultCollectiveTimeoutS when unset.
// Throws Error naming the variable when it is not a number >= 0.
double collective_timeout_from_env();

class CollectiveWatchdog {
 public:
  // timeout_s <= 0: disabled (no thread; arm/disarm still cost only the stores).
  CollectiveWatchdog(double timeout_s, std::function<void(const std::string& message)> on_stall);
  ~CollectiveWatchdog();
  CollectiveWatchdog(const CollectiveWatchdog&) = delete;
  CollectiveWatchdog& operator=(const CollectiveWatchdog&) = delete;

  // Around each collective: what (a string literal) and peer (-1: none) name it in the message.
  void arm(const char* what, int peer = -1) noexcept;
  void disarm() noexcept { since_ns_.store(0, std::memory_order_relaxed); }
  // What the job is doing (a string literal such as "training step") and its step, for the message.
  void set_phase(const char* phase, int64_t step) noexcept {
    phase_.store(phase, std::memory_order_relaxed);
    step_.store(step, std::memory_order_relaxed);
  }
  double timeout_s() const { return timeout_s_; }

 private:
  void watch();
  const double timeout_s_;
  std::function<void(const std::string&)> on_stall_;
  std::atomic<int64_t> since_ns_{0};  // steady_clock ns when the current call began; 0: none in progress
  std::atomic<const char*> what_{""};
  std::atomic<int> peer_{-1};
  std::atomic<const char*> phase_{"starting"};
  std::atomic<int64_t> step_{-1};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

// Arms the watchdog for one call's scope.
class WatchdogScope {
 public:
  WatchdogScope(CollectiveWatchdog& w, const char* what, int peer = -1) noexcept : w_(w) { w_.arm(what, peer); }
  ~WatchdogScope() { w_.disarm(); }
  WatchdogScope(const WatchdogScope&) = delete;
  WatchdogScope& operator=(const WatchdogScope&) = delete;

 private:
  CollectiveWatchdog& w_;
};

}  // namespace topksae::dist
