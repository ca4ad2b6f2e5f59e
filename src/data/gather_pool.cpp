// The gather threads (src/data/gather_pool.h).
#include "data/gather_pool.h"

#include <algorithm>

namespace topksae::detail {

GatherPool::GatherPool(int threads) {
  if (threads <= 0) threads = int(std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
}

GatherPool::~GatherPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void GatherPool::drain() {
  for (int i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < n_;) fn_(ctx_, i);
}

void GatherPool::run(int n, Fn fn, void* ctx) {
  if (workers_.empty() || n <= 1) {
    for (int i = 0; i < n; ++i) fn(ctx, i);
    return;
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    busy_ = workers_.size();
    ++gen_;
  }
  start_cv_.notify_all();
  drain();
  std::unique_lock<std::mutex> lk(mu_);
  done_cv_.wait(lk, [&] { return busy_ == 0; });  // no worker touches fn after this
  fn_ = nullptr;
  ctx_ = nullptr;
}

void GatherPool::work() {
  uint64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lk(mu_);
    start_cv_.wait(lk, [&] { return stop_ || gen_ != seen; });
    if (stop_) return;
    seen = gen_;
    lk.unlock();
    drain();
    lk.lock();
    if (--busy_ == 0) done_cv_.notify_one();
  }
}

}  // namespace topksae::detail
