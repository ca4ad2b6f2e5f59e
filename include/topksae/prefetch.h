// The stage between a source and the trainer's batch buffer, in one of two modes.
//
// Over a GatherSource (the files, shuffled or not: the default pipeline) it copies each batch
// once, straight into the caller's buffer (on the GPU the pinned staging buffer), with several
// threads: the inner source picks the row ids (cheap bookkeeping, on the calling thread), then
// the gather threads copy the rows out of the memory-mapped shards. What runs ahead of the
// consumer is the page cache: the inner source asks the kernel to read the rows it has planned
// (madvise WILLNEED), and on the GPU the host fills the next staging buffer while the GPU runs the
// step before. So there is no queue of copied batches (it would cost one more copy of every byte)
// and the position is that of the consumer, built only when asked. A row holding NaN/Inf fails the
// batch that holds it, and the source is put back before that batch (GatherSource::undo_next_ids).
//
// Over any other source (the synthetic one) a thread reads batches of batch_rows ahead into a
// bounded queue, so producing overlaps the training step. Errors raised while reading are
// re-thrown by next() in order, after the batches read before them. position() is the position of
// what the CONSUMER has taken: {"source":"prefetch","inner":<inner position before the current
// batch>,"skip":rows of it already taken}. seek() stops the thread, seeks the inner source, skips,
// and restarts. (The gather mode writes the same form, with skip 0.)
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "topksae/data.h"

namespace topksae {

class GatherSource;
namespace detail {
class GatherPool;
}

class PrefetchSource : public ActivationSource {
 public:
  // depth: batches kept ready (>= 1; the queue mode). gather_threads: threads that copy a batch
  // in the gather mode, the caller included (0: min(hardware threads, 8)).
  PrefetchSource(std::unique_ptr<ActivationSource> inner, int64_t batch_rows, int depth = 4, int gather_threads = 0);
  ~PrefetchSource() override;
  int64_t d_in() const override { return d_in_; }
  int64_t next(float* out, int64_t rows) override;
  std::string position() const override;
  void seek(const std::string& position) override;
  std::string describe() const override;
  // The inner source; touch it only while no thread runs (before the first next() or after seek()).
  ActivationSource& inner() { return *inner_; }

 private:
  struct Batch {
    std::vector<float> rows;  // [n, d_in]
    int64_t n = 0;
    std::string pos_before, pos_after;
    std::exception_ptr error;
    bool end = false;         // the inner source ran dry with this batch
  };
  void start();
  void stop();
  void produce();
  int64_t next_gathered(float* out, int64_t rows);
  // The gather mode (gather_ != nullptr: inner_ is a GatherSource).
  GatherSource* gather_ = nullptr;
  std::unique_ptr<detail::GatherPool> pool_;
  std::vector<int64_t> ids_;                  // [rows] the batch's ids, reused
  std::vector<std::exception_ptr> errors_;    // [chunks] reused
  std::unique_ptr<ActivationSource> inner_;
  int64_t d_in_, batch_rows_;
  size_t depth_;
  std::string describe_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool stop_ = false, started_ = false, producer_finished_ = false;
  // Consumer side (only the consumer thread touches these).
  Batch cur_;
  bool have_cur_ = false;
  int64_t cur_off_ = 0;
  std::string pos_;        // inner position after everything taken so far (when cur_off_ == 0)
  bool drained_ = false;   // a batch with end = true was taken
};

}  // namespace topksae
