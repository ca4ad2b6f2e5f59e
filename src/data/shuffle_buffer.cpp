// sae_lens's mixing buffer with resumable state (include/topksae/shuffle_buffer.h).
#include "topksae/shuffle_buffer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>

#include "topksae/error.h"

namespace topksae {

namespace {
// Uniform integer in [0, n) from one 64-bit draw (multiply-high; the bias is < n / 2^64).
uint64_t below(std::mt19937_64& rng, uint64_t n) { return uint64_t((unsigned __int128)rng() * n >> 64); }
}  // namespace

ShuffleBuffer::ShuffleBuffer(std::unique_ptr<IndexedSource> inner, int64_t buffer_rows, int64_t batch_rows,
                             uint64_t seed)
    : inner_(std::move(inner)), buffer_rows_(buffer_rows), batch_rows_(batch_rows), seed_(seed) {
  TOPKSAE_CHECK(batch_rows_ >= 1, "shuffle buffer: batch size must be >= 1, got ", batch_rows_);
  TOPKSAE_CHECK(buffer_rows_ >= batch_rows_, "shuffle buffer: buffer size (", buffer_rows_,
                " rows) must be greater than or equal to batch size (", batch_rows_, ")");
}

void ShuffleBuffer::refill() {
  State& s = st_;
  s.serving.clear();
  s.serve_pos = 0;
  int64_t n = int64_t(s.stored.size());
  while (!s.inner_done && n < buffer_rows_) {
    s.stored.resize(size_t(n + batch_rows_));
    const int64_t got = inner_->next_ids(s.stored.data() + n, batch_rows_);
    n += got;
    s.stored.resize(size_t(n));
    if (got < batch_rows_) s.inner_done = true;
  }
  if (n >= buffer_rows_) {
    // Fisher-Yates over the ids, seeded per refill so a resumed run shuffles identically (the
    // same draws, in the same order, as when the buffer held the rows themselves).
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + uint64_t(s.refills));
    for (int64_t i = n - 1; i > 0; --i) {
      const int64_t j = int64_t(below(rng, uint64_t(i + 1)));
      std::swap(s.stored[size_t(i)], s.stored[size_t(j)]);
    }
    ++s.refills;
    const int64_t serve = std::max<int64_t>(1, n / (2 * batch_rows_)) * batch_rows_;
    s.serving.assign(s.stored.begin(), s.stored.begin() + serve);
    s.stored.erase(s.stored.begin(), s.stored.begin() + serve);
  } else {
    // The source ran dry: hand out what is left, in order, in whole batches.
    const int64_t serve = n / batch_rows_ * batch_rows_;
    s.serving.assign(s.stored.begin(), s.stored.begin() + serve);
    s.stored.clear();
  }
}

int64_t ShuffleBuffer::next_ids(int64_t* ids, int64_t rows) {
  undo_.valid = true;
  undo_.refilled = false;
  undo_.serve_pos = st_.serve_pos;
  int64_t written = 0;
  while (written < rows) {
    if (st_.serve_pos == st_.serving.size()) {
      if (st_.inner_done && st_.stored.empty()) break;
      if (!undo_.refilled) {
        undo_.state = st_;
        undo_.state.serve_pos = undo_.serve_pos;  // where this call started in that serving set
        undo_.inner_position = inner_->position();
        undo_.refilled = true;
      }
      try {
        refill();
      } catch (...) {
        undo_next_ids();  // strong guarantee: as before the call
        throw;
      }
      if (st_.serving.empty()) break;
    }
    const int64_t m = std::min<int64_t>(rows - written, int64_t(st_.serving.size() - st_.serve_pos));
    std::copy_n(st_.serving.data() + st_.serve_pos, m, ids + written);
    st_.serve_pos += size_t(m);
    written += m;
  }
  return written;
}

void ShuffleBuffer::undo_next_ids() {
  if (!undo_.valid) return;
  if (undo_.refilled) {
    // The first refill of the undone call happened at a serving boundary; state held then.
    st_ = std::move(undo_.state);
    inner_->seek(undo_.inner_position);
  } else {
    st_.serve_pos = undo_.serve_pos;
  }
  undo_.valid = false;
}

std::string ShuffleBuffer::position() const {
  nlohmann::json j;
  j["source"] = "shuffle";
  j["inner"] = nlohmann::json::parse(inner_->position());
  j["refills"] = st_.refills;
  j["inner_done"] = st_.inner_done;
  j["buffer_rows"] = buffer_rows_;
  j["batch_rows"] = batch_rows_;
  j["seed"] = seed_;
  j["stored"] = st_.stored;
  j["serving"] = std::vector<int64_t>(st_.serving.begin() + std::ptrdiff_t(st_.serve_pos), st_.serving.end());
  return j.dump();
}

void ShuffleBuffer::seek(const std::string& position) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(position);
  } catch (const std::exception& e) {
    TOPKSAE_FAIL("data position is not valid JSON: ", e.what());
  }
  TOPKSAE_CHECK(j.is_object() && j.value("source", "") == "shuffle", "data position was not taken with --shuffle buffer");
  TOPKSAE_CHECK(j.value("buffer_rows", int64_t(-1)) == buffer_rows_ && j.value("batch_rows", int64_t(-1)) == batch_rows_ &&
                    j.value("seed", uint64_t(0)) == seed_,
                "the checkpoint's shuffle buffer (", j.value("buffer_rows", int64_t(-1)), " rows, batch ",
                j.value("batch_rows", int64_t(-1)), ", seed ", j.value("seed", uint64_t(0)), ") differs from this run's (",
                buffer_rows_, " rows, batch ", batch_rows_, ", seed ", seed_, ")");
  State st;
  st.refills = j.value("refills", int64_t(0));
  st.inner_done = j.value("inner_done", false);
  st.stored = j.at("stored").get<std::vector<int64_t>>();
  st.serving = j.at("serving").get<std::vector<int64_t>>();
  for (const auto* v : {&st.stored, &st.serving})
    for (int64_t id : *v) TOPKSAE_CHECK(id >= 0, "data position holds a negative row id ", id);
  inner_->seek(j.at("inner").dump());
  st_ = std::move(st);
  undo_.valid = false;
}

std::string ShuffleBuffer::describe() const {
  return concat(inner_->describe(), ", shuffled through a ", buffer_rows_, "-row mixing buffer");
}

}  // namespace topksae
