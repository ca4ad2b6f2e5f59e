// The prefetch thread (include/topksae/prefetch.h).
#include "topksae/prefetch.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

#include "data/gather_pool.h"
#include "topksae/error.h"
#include "topksae/file_source.h"

namespace topksae {

PrefetchSource::PrefetchSource(std::unique_ptr<ActivationSource> inner, int64_t batch_rows, int depth,
                               int gather_threads)
    : inner_(std::move(inner)), d_in_(inner_->d_in()), batch_rows_(batch_rows), depth_(size_t(std::max(depth, 1))) {
  TOPKSAE_CHECK(batch_rows_ >= 1, "prefetch: batch size must be >= 1, got ", batch_rows_);
  describe_ = inner_->describe();
  gather_ = dynamic_cast<GatherSource*>(inner_.get());
  if (gather_) {
    pool_ = std::make_unique<detail::GatherPool>(gather_threads);
    ids_.resize(size_t(batch_rows_));
  } else {
    pos_ = inner_->position();
  }
}

PrefetchSource::~PrefetchSource() { stop(); }

int64_t PrefetchSource::next_gathered(float* out, int64_t rows) {
  if (ids_.size() < size_t(rows)) ids_.resize(size_t(rows));
  const int64_t n = gather_->next_ids(ids_.data(), rows);
  // Chunks of whole rows, a few per thread so that a thread slowed by page faults does not hold
  // up the batch; tiny batches are copied by the caller alone.
  const int64_t per = std::max<int64_t>(16, n / (4 * pool_->threads()) + 1);
  const int chunks = int((n + per - 1) / per);
  errors_.assign(size_t(chunks), nullptr);
  struct Job {
    PrefetchSource* self;
    float* out;
    int64_t n, per;
  } job{this, out, n, per};
  pool_->run(chunks, [](void* ctx, int c) {
    const Job& j = *static_cast<const Job*>(ctx);
    const int64_t r0 = c * j.per, m = std::min(j.per, j.n - r0);
    try {
      j.self->gather_->read_ids(j.self->ids_.data() + r0, m, j.out + r0 * j.self->d_in_);
    } catch (...) {
      j.self->errors_[size_t(c)] = std::current_exception();
    }
  }, &job);
  for (const std::exception_ptr& e : errors_)
    if (e) {  // the first bad row in batch order, whichever thread met it first
      gather_->undo_next_ids();
      std::rethrow_exception(e);
    }
  return n;
}

void PrefetchSource::start() {
  stop_ = false;
  producer_finished_ = false;
  started_ = true;
  thread_ = std::thread([this] { produce(); });
}

void PrefetchSource::stop() {
  if (!started_) return;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  started_ = false;
  queue_.clear();
}

void PrefetchSource::produce() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || queue_.size() < depth_; });
      if (stop_) return;
    }
    Batch b;
    try {
      b.pos_before = inner_->position();
      b.rows.resize(size_t(batch_rows_ * d_in_));
      b.n = inner_->next(b.rows.data(), batch_rows_);
      b.pos_after = inner_->position();
      b.end = b.n < batch_rows_;
    } catch (...) {
      b.error = std::current_exception();
      b.end = true;
    }
    bool end = b.end;
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(std::move(b));
      if (end) producer_finished_ = true;
    }
    cv_.notify_all();
    if (end) return;
  }
}

int64_t PrefetchSource::next(float* out, int64_t rows) {
  if (gather_) return next_gathered(out, rows);
  if (!started_ && !drained_) start();
  int64_t written = 0;
  while (written < rows) {
    if (!have_cur_) {
      if (drained_) break;
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return !queue_.empty(); });
      cur_ = std::move(queue_.front());
      queue_.pop_front();
      lk.unlock();
      cv_.notify_all();
      if (cur_.error) {
        drained_ = true;
        std::rethrow_exception(cur_.error);
      }
      have_cur_ = true;
      cur_off_ = 0;
      if (cur_.end) drained_ = true;
    }
    int64_t m = std::min(rows - written, cur_.n - cur_off_);
    std::memcpy(out + written * d_in_, cur_.rows.data() + cur_off_ * d_in_, size_t(m * d_in_) * sizeof(float));
    written += m;
    cur_off_ += m;
    if (cur_off_ == cur_.n) {
      pos_ = cur_.pos_after;
      have_cur_ = false;
      cur_off_ = 0;
    }
  }
  return written;
}

std::string PrefetchSource::position() const {
  if (gather_) return concat("{\"source\":\"prefetch\",\"skip\":0,\"inner\":", inner_->position(), "}");
  // Built by concatenation: the trainer asks after every step and the inner position can be large
  // (a shuffle buffer's ids), so it is not parsed and re-serialised here.
  return concat("{\"source\":\"prefetch\",\"skip\":", have_cur_ ? cur_off_ : 0,
                ",\"inner\":", have_cur_ ? cur_.pos_before : pos_, "}");
}

void PrefetchSource::seek(const std::string& position) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(position);
  } catch (const std::exception& e) {
    TOPKSAE_FAIL("data position is not valid JSON: ", e.what());
  }
  TOPKSAE_CHECK(j.is_object() && j.value("source", "") == "prefetch" && j.contains("inner"),
                "data position ", position.substr(0, 200), " was not taken by this kind of source");
  stop();
  have_cur_ = false;
  cur_off_ = 0;
  drained_ = false;
  inner_->seek(j["inner"].dump());
  int64_t skip = j.value("skip", int64_t(0));
  TOPKSAE_CHECK(skip >= 0 && skip <= batch_rows_, "data position skips ", skip, " rows, more than a batch");
  if (gather_) {
    // The ids of the rows taken are the first `skip` of the stream from there (the ids a source
    // hands out do not depend on how the requests are cut).
    if (ids_.size() < size_t(skip)) ids_.resize(size_t(skip));
    TOPKSAE_CHECK(gather_->next_ids(ids_.data(), skip) == skip, "data position skips ", skip,
                  " rows past the end of the data");
    return;
  }
  if (skip > 0) {
    // Re-read the partly taken batch and keep its untaken rows as the current batch.
    cur_ = Batch{};
    cur_.pos_before = inner_->position();
    cur_.rows.resize(size_t(batch_rows_ * d_in_));
    cur_.n = inner_->next(cur_.rows.data(), batch_rows_);
    cur_.pos_after = inner_->position();
    cur_.end = cur_.n < batch_rows_;
    TOPKSAE_CHECK(cur_.n >= skip, "data position skips ", skip, " rows of a batch that has only ", cur_.n);
    have_cur_ = true;
    cur_off_ = skip;
    drained_ = cur_.end;
  }
  pos_ = have_cur_ ? cur_.pos_before : inner_->position();
}

std::string PrefetchSource::describe() const { return describe_; }

}  // namespace topksae
