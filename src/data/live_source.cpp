// A bounded queue of rows between a producer (Python) and the trainer's thread, and the mixing
// buffer over it (include/topksae/live_source.h).
#include "topksae/live_source.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "data/device_rows.h"
#include "topksae/shuffle_buffer.h"

namespace topksae {

namespace {
constexpr auto kTick = std::chrono::milliseconds(50);
}

LiveSource::LiveSource(int64_t d_in, int64_t capacity_rows, Device store, int64_t store_rows)
    : d_in_(d_in), capacity_(capacity_rows) {
  TOPKSAE_CHECK(d_in_ >= 1, "live stream: d_in must be >= 1, got ", d_in_);
  TOPKSAE_CHECK(capacity_ >= 1, "live stream: queue capacity must be >= 1 row, got ", capacity_);
  if (store == Device::cuda) dev_rows_ = detail::DeviceRows::make(d_in_, capacity_ + std::max<int64_t>(store_rows, 0));
}

LiveSource::~LiveSource() = default;

bool LiveSource::push(const float* rows, int64_t n, const std::function<void()>& tick) {
  return push_rows(rows, n, false, nullptr, {}, tick);
}

bool LiveSource::push_device(const float* rows, int64_t n, Stream producer, std::shared_ptr<void> hold,
                             const std::function<void()>& tick) {
  TOPKSAE_CHECK(dev_rows_ != nullptr, "live stream: rows in device memory need the mixing buffer on the device");
  return push_rows(rows, n, true, producer, std::move(hold), tick);
}

int64_t LiveSource::queued() const {
  return dev_rows_ ? pending_ : int64_t(queue_.size() / size_t(d_in_) - head_);
}

bool LiveSource::push_rows(const float* rows, int64_t n, bool on_device, Stream producer, std::shared_ptr<void> hold,
                           const std::function<void()>& tick) {
  std::unique_lock<std::mutex> lk(mu_);
  TOPKSAE_CHECK(!finished_, "live stream: rows pushed after the end of the stream");
  // Wait for room: the queue may overshoot capacity by one push, so any push size makes progress.
  while (!consumer_done_ && !aborted_ && queued() >= capacity_) {
    cv_.wait_for(lk, kTick);
    if (tick) {
      lk.unlock();
      tick();
      lk.lock();
    }
  }
  if (consumer_done_ || aborted_) return false;
  if (dev_rows_) {
    // Straight into the device store under the ids they will have when taken (push order).
    std::vector<int64_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = taken_ + pending_ + i;
    dev_rows_->put(ids.data(), rows, n, on_device, producer, std::move(hold));
    pending_ += n;
    cv_.notify_all();
    return true;
  }
  if (head_ > 0 && head_ * 2 >= queue_.size() / size_t(d_in_)) {  // drop the taken rows now and then
    queue_.erase(queue_.begin(), queue_.begin() + std::ptrdiff_t(head_ * size_t(d_in_)));
    head_ = 0;
  }
  queue_.insert(queue_.end(), rows, rows + n * d_in_);
  cv_.notify_all();
  return true;
}

void LiveSource::finish() {
  std::lock_guard<std::mutex> lk(mu_);
  finished_ = true;
  cv_.notify_all();
}

void LiveSource::abort() {
  std::lock_guard<std::mutex> lk(mu_);
  aborted_ = true;
  cv_.notify_all();
}

void LiveSource::consumer_done() {
  std::lock_guard<std::mutex> lk(mu_);
  consumer_done_ = true;
  cv_.notify_all();
}

bool LiveSource::is_consumer_done() const {
  std::lock_guard<std::mutex> lk(mu_);
  return consumer_done_;
}

void LiveSource::wait_idle(const std::function<void()>& tick) {
  std::unique_lock<std::mutex> lk(mu_);
  while (!consumer_done_ && !(want_ > 0 && want_ > queued())) {
    cv_.wait_for(lk, kTick);
    if (tick) {
      lk.unlock();
      tick();
      lk.lock();
    }
  }
}

void LiveSource::wait_consumer_done(const std::function<void()>& tick) {
  std::unique_lock<std::mutex> lk(mu_);
  while (!consumer_done_) {
    cv_.wait_for(lk, kTick);
    if (tick) {
      lk.unlock();
      tick();
      lk.lock();
    }
  }
}

int64_t LiveSource::take(float* out, int64_t* ids, int64_t rows) {
  std::unique_lock<std::mutex> lk(mu_);
  while (!aborted_ && !finished_ && queued() < rows) {
    want_ = rows;
    cv_.notify_all();  // wait_idle: the consumer now waits for rows that are not there
    cv_.wait(lk);
  }
  want_ = 0;
  if (aborted_) throw Aborted("live stream: stopped (interrupted)");
  const int64_t n = std::min(rows, queued());
  if (dev_rows_) {  // the rows are in the device store already, under ids taken_ ...
    if (out) {
      std::vector<int64_t> tmp(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) tmp[size_t(i)] = taken_ + i;
      dev_rows_->take_to_host(tmp.data(), n, out);
    }
    pending_ -= n;
  } else {
    const float* src = queue_.data() + head_ * size_t(d_in_);
    if (out) {
      std::memcpy(out, src, size_t(n * d_in_) * sizeof(float));
    } else {  // into the id store, one slot per row
      for (int64_t i = 0; i < n; ++i) {
        int64_t slot;
        if (!free_slots_.empty()) {
          slot = free_slots_.back();
          free_slots_.pop_back();
        } else {
          slot = int64_t(held_.size() / size_t(d_in_));
          held_.resize(held_.size() + size_t(d_in_));
        }
        std::memcpy(held_.data() + size_t(slot) * size_t(d_in_), src + size_t(i) * size_t(d_in_),
                    size_t(d_in_) * sizeof(float));
        slot_of_[taken_ + i] = slot;
      }
    }
    head_ += size_t(n);
  }
  if (ids)
    for (int64_t i = 0; i < n; ++i) ids[i] = taken_ + i;
  taken_ += n;
  cv_.notify_all();  // room for the producer
  return n;
}

int64_t LiveSource::next(float* out, int64_t rows) { return take(out, nullptr, rows); }
int64_t LiveSource::next_indexed(float* out, int64_t* ids, int64_t rows) { return take(out, ids, rows); }

int64_t LiveSource::next_ids(int64_t* ids, int64_t rows) { return take(nullptr, ids, rows); }

void LiveSource::read_ids(const int64_t* ids, int64_t n, float* out) const {
  std::lock_guard<std::mutex> lk(mu_);
  if (dev_rows_) {
    dev_rows_->take_to_host(ids, n, out);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    auto it = slot_of_.find(ids[i]);
    TOPKSAE_CHECK(it != slot_of_.end(), "live stream: row ", ids[i],
                  " is not held (taken rows are read once; a live run resumes without the rows that were in "
                  "its mixing buffer)");
    std::memcpy(out + size_t(i) * size_t(d_in_), held_.data() + size_t(it->second) * size_t(d_in_),
                size_t(d_in_) * sizeof(float));
    free_slots_.push_back(it->second);
    slot_of_.erase(it);
  }
}

int LiveSource::store_device() const { return dev_rows_ ? dev_rows_->device() : -1; }
Stream LiveSource::store_stream() const { return dev_rows_ ? dev_rows_->stream() : nullptr; }

void LiveSource::read_ids_device(const int64_t* ids, int64_t n, float* out, Stream stream) {
  std::lock_guard<std::mutex> lk(mu_);
  TOPKSAE_CHECK(dev_rows_ != nullptr, "live stream: read_ids_device needs the mixing buffer on the device");
  dev_rows_->take(ids, n, out, stream);
}

void LiveSource::undo_next_ids() {
  TOPKSAE_FAIL("live stream: rows handed out cannot be put back (push() refuses NaN / Inf rows up front)");
}

std::string LiveSource::position() const {
  std::lock_guard<std::mutex> lk(mu_);
  return nlohmann::json{{"source", "live"}, {"rows_taken", taken_}}.dump();
}

void LiveSource::seek(const std::string& position) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(position);
  } catch (const std::exception& e) {
    TOPKSAE_FAIL("data position is not valid JSON: ", e.what());
  }
  TOPKSAE_CHECK(j.is_object() && j.value("source", "") == "live",
                "the checkpoint was not written by a live-stream run (its data position is ", position, ")");
  std::lock_guard<std::mutex> lk(mu_);
  taken_ = j.value("rows_taken", int64_t(0));
}

std::string LiveSource::describe() const { return "live stream (d_in " + std::to_string(d_in_) + ")"; }

int64_t LiveSource::rows_taken() const {
  std::lock_guard<std::mutex> lk(mu_);
  return taken_;
}

// ---- LiveStream ---------------------------------------------------------------------------------

LiveStream::LiveStream(int64_t d_in, const std::string& shuffle, int64_t buffer_batches, int64_t batch_rows,
                       uint64_t seed, int64_t queue_rows, Device store)
    : shuffle_(shuffle) {
  TOPKSAE_CHECK(shuffle == "buffer" || shuffle == "none", "shuffle must be 'buffer' or 'none', got '", shuffle, "'");
  // The device store holds the queue, the mixing buffer and a batch over (ShuffleBuffer's refill
  // may overshoot by one), plus one push beyond the queue's capacity.
  auto live = std::make_unique<LiveSource>(d_in, queue_rows, store,
                                           shuffle == "buffer" ? (buffer_batches + 2) * batch_rows : batch_rows);
  live_ = live.get();
  if (shuffle == "buffer") {
    TOPKSAE_CHECK(buffer_batches >= 1, "buffer_batches must be >= 1, got ", buffer_batches);
    mixer_ = std::make_unique<ShuffleBuffer>(std::move(live), buffer_batches * batch_rows, batch_rows, seed);
  } else {
    own_ = std::move(live);
  }
}

LiveStream::~LiveStream() = default;

int64_t LiveStream::next(float* out, int64_t rows) { return mixer_ ? mixer_->next(out, rows) : live_->next(out, rows); }

int64_t LiveStream::next_device(float* out, int64_t rows, Stream stream) {
  TOPKSAE_CHECK(live_->store() == Device::cuda, "live stream: next_device needs the mixing buffer on the device");
  ids_.resize(size_t(rows));
  // The same draws as next() on a host store (GatherSource::next: next_ids, then read_ids).
  const int64_t got = mixer_ ? mixer_->next_ids(ids_.data(), rows) : live_->next_ids(ids_.data(), rows);
  live_->read_ids_device(ids_.data(), got, out, stream);
  return got;
}

std::string LiveStream::position() const {
  nlohmann::json j = nlohmann::json::parse(live_->position());
  j["shuffle"] = shuffle_;
  return j.dump();
}

void LiveStream::seek(const std::string& position) { live_->seek(position); }

std::string LiveStream::describe() const {
  return live_->describe() + (mixer_ ? " through the mixing buffer" : " in order");
}

}  // namespace topksae
