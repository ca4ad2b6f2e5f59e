// sae_lens's mixing buffer (training/mixing_buffer.py) over an IndexedSource: pull chunks of
// batch_rows until the storage holds >= buffer_rows rows, shuffle the storage, hand out its first
// max(1, n // (2*batch_rows)) * batch_rows rows as batches and keep the rest to mix with the next
// refill. When the source runs dry the rest is handed out in order, in whole batches (a partial
// batch is dropped), as sae_lens does. The shuffle is a Fisher-Yates over our own mapping of
// std::mt19937_64 seeded by (seed, refill number), so it is the same on every platform.
//
// Exact resume: position() records the inner source's position and the ids of the rows held in
// the storage and serving buffers; seek() reads those rows back by id.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "topksae/file_source.h"

namespace topksae {

class ShuffleBuffer : public ActivationSource {
 public:
  // buffer_rows >= batch_rows >= 1 (Error otherwise, as sae_lens raises).
  ShuffleBuffer(std::unique_ptr<IndexedSource> inner, int64_t buffer_rows, int64_t batch_rows, uint64_t seed);
  int64_t d_in() const override { return inner_->d_in(); }
  int64_t next(float* out, int64_t rows) override;
  // {"source":"shuffle","inner":<inner position>,"refills":R,"inner_done":b,"stored":[ids],"serving":[ids]}
  std::string position() const override;
  void seek(const std::string& position) override;
  std::string describe() const override;
  IndexedSource& inner() { return *inner_; }

 private:
  void refill();
  std::unique_ptr<IndexedSource> inner_;
  int64_t buffer_rows_, batch_rows_;
  uint64_t seed_;
  int64_t refills_ = 0;
  bool inner_done_ = false;
  std::vector<float> stored_;           // [n_stored, d_in]
  std::vector<int64_t> stored_ids_;     // [n_stored]
  std::vector<float> serving_;          // [n_serving, d_in]
  std::vector<int64_t> serving_ids_;    // [n_serving]
  size_t serve_pos_ = 0;                // rows of serving_ already handed out
};

}  // namespace topksae
