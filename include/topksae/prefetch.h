// A prefetch thread in front of any ActivationSource: it reads batches of batch_rows ahead into a
// bounded queue, so reading (mmap page faults, dtype conversion, shuffling) overlaps the training
// step instead of stalling it. Errors raised while reading are re-thrown by next() in order, after
// the batches read before them.
//
// position() is the position of what the CONSUMER has taken, not of what the thread has read
// ahead: {"source":"prefetch","inner":<inner position before the current batch>,"skip":rows of it
// already taken}. seek() stops the thread, seeks the inner source, skips, and restarts.
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

class PrefetchSource : public ActivationSource {
 public:
  // depth: batches kept ready (>= 1).
  PrefetchSource(std::unique_ptr<ActivationSource> inner, int64_t batch_rows, int depth = 4);
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
