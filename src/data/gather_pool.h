// A few threads that copy one batch's rows at once (PrefetchSource's gather): run(n, fn, ctx)
// calls fn(ctx, 0) .. fn(ctx, n-1) spread over the workers and the calling thread and returns when
// all are done. The threads live as long as the pool, so a batch costs two wake-ups, no thread
// start and no allocation (a plain function and a context pointer, not a std::function). fn must
// not throw (the caller catches inside it).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace topksae::detail {

class GatherPool {
 public:
  // threads: all threads that copy, the caller included (threads - 1 workers are started); <= 0
  // picks min(hardware threads, 8): more does not help a memory-bound copy.
  explicit GatherPool(int threads);
  ~GatherPool();
  GatherPool(const GatherPool&) = delete;
  GatherPool& operator=(const GatherPool&) = delete;
  int threads() const { return int(workers_.size()) + 1; }
  using Fn = void (*)(void* ctx, int i);
  void run(int n, Fn fn, void* ctx);

 private:
  void drain();
  void work();
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
  int n_ = 0;
  std::atomic<int> next_{0};
  size_t busy_ = 0;   // workers still inside the current generation
  uint64_t gen_ = 0;  // bumped by each run()
  bool stop_ = false;
};

}  // namespace topksae::detail
