// dist::CollectiveWatchdog (see the header): one polling thread per process.
#include "dist/collective_watchdog.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "topksae/error.h"

namespace topksae::dist {

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

double collective_timeout_from_env() {
  const char* v = std::getenv("TOPKSAE_COLLECTIVE_TIMEOUT");
  if (!v || !*v) return kDefaultCollectiveTimeoutS;
  char* end = nullptr;
  const double t = std::strtod(v, &end);
  TOPKSAE_CHECK(end && *end == '\0' && std::isfinite(t) && t >= 0, "TOPKSAE_COLLECTIVE_TIMEOUT=", v,
                ": expected seconds, a number >= 0 (0 turns the collective watchdog off)");
  return t;
}

CollectiveWatchdog::CollectiveWatchdog(double timeout_s, std::function<void(const std::string&)> on_stall)
    : timeout_s_(timeout_s), on_stall_(std::move(on_stall)) {
  if (timeout_s_ > 0) thread_ = std::thread([this] { watch(); });
}

CollectiveWatchdog::~CollectiveWatchdog() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void CollectiveWatchdog::arm(const char* what, int peer) noexcept {
  what_.store(what, std::memory_order_relaxed);
  peer_.store(peer, std::memory_order_relaxed);
  // Release: the watchdog that sees this start time also sees the name stored before it.
  since_ns_.store(now_ns(), std::memory_order_release);
}

void CollectiveWatchdog::watch() {
  // Polled (not a timer per call): a tenth of the timeout, between 50 ms and 1 s, so a stall is
  // reported within about 1.1 x the timeout while the thread wakes at most 20 times a second.
  const auto poll = std::chrono::duration<double>(std::clamp(timeout_s_ / 10, 0.05, 1.0));
  const auto limit_ns = int64_t(timeout_s_ * 1e9);
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, poll, [this] { return stop_; })) {
    const int64_t since = since_ns_.load(std::memory_order_acquire);
    if (since == 0 || now_ns() - since < limit_ns) continue;
    const char* what = what_.load(std::memory_order_relaxed);
    const int peer = peer_.load(std::memory_order_relaxed);
    // The same call still in progress (not a new one that began between the two loads)?
    if (since_ns_.load(std::memory_order_acquire) != since) continue;
    const int64_t step = step_.load(std::memory_order_relaxed);
    const std::string msg = concat(
        "MPI ", what, peer >= 0 ? concat(" rank ", peer) : std::string(), " has not completed after ",
        timeout_s_, " s, during ", phase_.load(std::memory_order_relaxed),
        step >= 0 ? concat(" at step ", step) : std::string(),
        ": another rank is stopped, stuck or much slower (a dead rank is reported by the launcher instead). "
        "Ending the job; its last complete checkpoint set resumes. The limit is --collective-timeout or "
        "TOPKSAE_COLLECTIVE_TIMEOUT (seconds; 0 turns the watchdog off)");
    lock.unlock();
    on_stall_(msg);  // normally does not return (MPI_Abort)
    return;
  }
}

}  // namespace topksae::dist
