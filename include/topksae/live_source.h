// Activations streamed live into the trainer (the Python binding's Trainer.step / fit): a producer
// thread pushes rows as a model produces them, the trainer's thread reads fixed-size batches. The
// queue is bounded, so a producer faster than the steps waits instead of growing memory.
//
// LiveSource is the raw queue (rows in push order). LiveStream is what the Trainer reads: the queue
// itself (shuffle "none"), or sae_lens's mixing buffer over it (shuffle "buffer": ShuffleBuffer,
// the same class and seeds as `topksae train --shuffle buffer`: fill to buffer_rows, shuffle,
// serve half, keep the rest; at the end of the stream the rest in order, whole batches only).
//
// Resume: a live stream cannot be re-read, so its position is only the count of rows taken. Rows
// that sat in the mixing buffer or the queue when a checkpoint was written are not in it; a
// resumed run trains on what the producer streams next.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "topksae/device.h"
#include "topksae/error.h"
#include "topksae/file_source.h"

namespace topksae {
namespace detail {
class DeviceRows;  // src/data/device_rows.h
}

class LiveSource : public IndexedSource {
 public:
  // Thrown by next() after abort(): the consumer is to stop (the Trainer then keeps a consistent,
  // checkpointable state).
  class Aborted : public Error {
   public:
    using Error::Error;
  };

  // capacity_rows: how many rows the queue holds before push() waits (>= 1). store: where the
  // rows taken by next_ids() wait to be read (the mixing buffer's rows): Device::cuda keeps them on
  // the current GPU (src/data/device_rows.h), read_ids_device() then serves them device to device.
  // store_rows: rows the device store is made for besides the queue (the mixing buffer's); it grows
  // when that is too little.
  LiveSource(int64_t d_in, int64_t capacity_rows, Device store = Device::cpu, int64_t store_rows = 0);
  ~LiveSource() override;

  // ---- producer side (any thread but the consumer's) ----
  // Appends rows [n, d_in]. Waits while the queue is full; `tick` runs about every 50 ms while
  // waiting (the binding checks for Ctrl-C there; an exception from it propagates, nothing queued
  // after that point). Returns false (rows dropped) once the consumer has finished or aborted.
  bool push(const float* rows, int64_t n, const std::function<void()>& tick = {});
  // The same for rows [n, d_in] in device memory of the store's GPU (a Device::cuda store only):
  // copied device to device into the store, after the work queued so far on `producer` (nullptr:
  // the caller has ordered it before store_stream(), as DLPack's __dlpack__(stream=) does). `hold`
  // keeps the producer's memory alive until the copy has run (released on a later call, or at the
  // end). Does not wait for the GPU. Rows on the device are not checked for NaN / Inf.
  bool push_device(const float* rows, int64_t n, Stream producer, std::shared_ptr<void> hold,
                   const std::function<void()>& tick = {});
  int store_device() const;     // the CUDA ordinal of a Device::cuda store, else -1
  Stream store_stream() const;  // the stream its copies in run on (nullptr without one)
  // End of stream: next() hands out what is queued, then returns fewer rows than asked.
  void finish();
  // next() throws Aborted from now on (also wakes a consumer that waits for rows).
  void abort();
  // The consumer says it has stopped for good (training done, failed or aborted): push() drops.
  void consumer_done();
  // Waits until the consumer has taken every row it can (it waits for more rows than are queued)
  // or has stopped; `tick` as in push().
  void wait_idle(const std::function<void()>& tick = {});
  // Waits until consumer_done(); `tick` as in push().
  void wait_consumer_done(const std::function<void()>& tick = {});
  bool is_consumer_done() const;

  // ---- consumer side ----
  int64_t d_in() const override { return d_in_; }
  // Waits until `rows` rows are queued (or finish(): then what is left, possibly fewer).
  int64_t next(float* out, int64_t rows) override;
  // Row ids are the count of rows taken before them (0, 1, ...), continuing after seek().
  int64_t next_indexed(float* out, int64_t* ids, int64_t rows) override;
  // The mixing buffer's side (ShuffleBuffer chooses ids, then reads them): next_ids() takes rows
  // off the queue into a store keyed by id, read_ids() copies them out and frees their slots (a
  // live row is read once). So the store holds at most the buffer's rows. Unknown or already read
  // ids throw Error.
  int64_t next_ids(int64_t* ids, int64_t rows) override;
  void read_ids(const int64_t* ids, int64_t n, float* out) const override;
  // read_ids into device memory out [n, d_in], queued on `stream` (never waits for the GPU). Only
  // with a Device::cuda store; read_ids() then copies through the GPU and waits.
  void read_ids_device(const int64_t* ids, int64_t n, float* out, Stream stream);
  Device store() const { return dev_rows_ ? Device::cuda : Device::cpu; }
  // Rows handed out are gone from the stream: throws Error. (It is only called after a batch had
  // a NaN / Inf row, and push() refuses those up front.)
  void undo_next_ids() override;
  // {"source":"live","rows_taken":N}
  std::string position() const override;
  // Takes rows_taken from a position of a live source; the queue is left as it is.
  void seek(const std::string& position) override;
  std::string describe() const override;
  int64_t rows_taken() const;

 private:
  bool push_rows(const float* rows, int64_t n, bool on_device, Stream producer, std::shared_ptr<void> hold,
                 const std::function<void()>& tick);
  int64_t queued() const;  // rows pushed and not taken (mu_ held)
  // Takes up to `rows` queued rows (waits for them): into out, or into the id store when out is null.
  int64_t take(float* out, int64_t* ids, int64_t rows);
  // The id store behind next_ids / read_ids (guarded by mu_; read_ids is const for the interface).
  mutable std::vector<float> held_;                  // [slots, d_in]
  mutable std::vector<int64_t> free_slots_;
  mutable std::unordered_map<int64_t, int64_t> slot_of_;  // row id -> slot of held_
  // With a Device::cuda store, instead of held_ and queue_: every pushed row goes straight into it;
  // ids [taken_, taken_ + pending_) are pushed and not taken yet.
  std::unique_ptr<detail::DeviceRows> dev_rows_;
  int64_t pending_ = 0;
  const int64_t d_in_, capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<float> queue_;  // [queued, d_in], rows from head_ on are pending
  size_t head_ = 0;           // rows of queue_ already taken
  int64_t taken_ = 0;
  int64_t want_ = 0;          // rows the consumer waits for (0: it is not waiting)
  bool finished_ = false, aborted_ = false, consumer_done_ = false;
};

// What the Trainer reads from a live stream (see the top of this file).
class ShuffleBuffer;
class LiveStream : public ActivationSource {
 public:
  // shuffle: "buffer" (buffer_batches * batch_rows rows of mixing, seeded by seed) or "none".
  // store: where the mixing buffer's rows live (LiveSource); Device::cuda needs shuffle "buffer".
  LiveStream(int64_t d_in, const std::string& shuffle, int64_t buffer_batches, int64_t batch_rows, uint64_t seed,
             int64_t queue_rows, Device store = Device::cpu);
  ~LiveStream() override;
  LiveSource& queue() { return *live_; }
  int64_t d_in() const override { return live_->d_in(); }
  int64_t next(float* out, int64_t rows) override;
  // next() into device memory out [rows, d_in], queued on `stream`: the mixing buffer's draws on
  // the host, the rows gathered on the GPU (a Device::cuda store only).
  int64_t next_device(float* out, int64_t rows, Stream stream) override;
  bool serves_device() const override { return live_->store() == Device::cuda; }
  // The live source's position, plus "shuffle"; cheap (no row ids, unlike ShuffleBuffer's).
  std::string position() const override;
  // Accepts a live position (see the top of this file for what is not restored).
  void seek(const std::string& position) override;
  std::string describe() const override;

 private:
  LiveSource* live_;                      // owned by mixer_ when shuffling, else by own_
  std::unique_ptr<LiveSource> own_;
  std::unique_ptr<ShuffleBuffer> mixer_;
  std::vector<int64_t> ids_;  // [rows] of next_device
  std::string shuffle_;
};

}  // namespace topksae
