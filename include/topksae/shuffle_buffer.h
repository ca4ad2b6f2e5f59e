// sae_lens's mixing buffer (training/mixing_buffer.py) over an IndexedSource: pull chunks of
// batch_rows until the storage holds >= buffer_rows rows, shuffle the storage, hand out its first
// max(1, n // (2*batch_rows)) * batch_rows rows as batches and keep the rest to mix with the next
// refill. When the source runs dry the rest is handed out in order, in whole batches (a partial
// batch is dropped), as sae_lens does. The shuffle is a Fisher-Yates over our own mapping of
// std::mt19937_64 seeded by (seed, refill number), so it is the same on every platform.
//
// The buffer holds row ids, not rows: the shuffle permutes 8-byte ids instead of whole rows, and
// the bytes of a row are copied once, when it is served (read_ids: from the memory-mapped shard
// straight into the caller's batch, which may be a pinned staging buffer, by several threads in
// PrefetchSource). The ids and their order are exactly those of a buffer of rows; the rows that
// enter the buffer are advised to the kernel (FileDataset::will_need) so that the page cache holds
// them by the time they are served. Without skip_nonfinite a row holding NaN/Inf is refused when
// it is served (before any step uses it), not when it enters the buffer.
//
// Exact resume: position() records the inner source's position and the ids of the rows held in
// the storage and serving buffers; seek() restores them (no data is read).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "topksae/file_source.h"

namespace topksae {

class ShuffleBuffer : public GatherSource {
 public:
  // buffer_rows >= batch_rows >= 1 (Error otherwise, as sae_lens raises).
  ShuffleBuffer(std::unique_ptr<IndexedSource> inner, int64_t buffer_rows, int64_t batch_rows, uint64_t seed);
  int64_t d_in() const override { return inner_->d_in(); }
  int64_t next_ids(int64_t* ids, int64_t rows) override;
  void undo_next_ids() override;
  void read_ids(const int64_t* ids, int64_t n, float* out) const override { inner_->read_ids(ids, n, out); }
  // {"source":"shuffle","inner":<inner position>,"refills":R,"inner_done":b,"stored":[ids],"serving":[ids]}
  // Built only when asked (a checkpoint), never per batch: it holds up to buffer_rows ids.
  std::string position() const override;
  void seek(const std::string& position) override;
  std::string describe() const override;
  IndexedSource& inner() { return *inner_; }

 private:
  struct State {
    std::vector<int64_t> stored;   // [n_stored] ids kept to mix with the next refill
    std::vector<int64_t> serving;  // [n_serving] ids being handed out
    size_t serve_pos = 0;          // entries of serving already handed out
    int64_t refills = 0;
    bool inner_done = false;
  };
  void refill();
  std::unique_ptr<IndexedSource> inner_;
  int64_t buffer_rows_, batch_rows_;
  uint64_t seed_;
  State st_;
  // What undo_next_ids() restores: the serving position, or after a refill the whole state and
  // the inner source's position (copied once per refill, not per batch).
  struct Undo {
    bool valid = false, refilled = false;
    size_t serve_pos = 0;
    State state;
    std::string inner_position;
  } undo_;
};

}  // namespace topksae
