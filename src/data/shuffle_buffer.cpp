// sae_lens's mixing buffer with resumable state (include/topksae/shuffle_buffer.h).
#include "topksae/shuffle_buffer.h"

#include <algorithm>
#include <cstring>
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
  const int64_t d = inner_->d_in();
  serving_.clear();
  serving_ids_.clear();
  serve_pos_ = 0;
  int64_t n = int64_t(stored_ids_.size());
  while (!inner_done_ && n < buffer_rows_) {
    stored_.resize(size_t((n + batch_rows_) * d));
    stored_ids_.resize(size_t(n + batch_rows_));
    int64_t got = inner_->next_indexed(stored_.data() + n * d, stored_ids_.data() + n, batch_rows_);
    n += got;
    stored_.resize(size_t(n * d));
    stored_ids_.resize(size_t(n));
    if (got < batch_rows_) inner_done_ = true;
  }
  if (n >= buffer_rows_) {
    // Fisher-Yates over rows, seeded per refill so a resumed run shuffles identically.
    std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + uint64_t(refills_));
    std::vector<float> tmp(static_cast<size_t>(d));
    for (int64_t i = n - 1; i > 0; --i) {
      int64_t j = int64_t(below(rng, uint64_t(i + 1)));
      if (j == i) continue;
      std::swap(stored_ids_[size_t(i)], stored_ids_[size_t(j)]);
      std::swap_ranges(stored_.begin() + i * d, stored_.begin() + (i + 1) * d, stored_.begin() + j * d);
    }
    ++refills_;
    int64_t serve = std::max<int64_t>(1, n / (2 * batch_rows_)) * batch_rows_;
    serving_.assign(stored_.begin(), stored_.begin() + serve * d);
    serving_ids_.assign(stored_ids_.begin(), stored_ids_.begin() + serve);
    stored_.erase(stored_.begin(), stored_.begin() + serve * d);
    stored_ids_.erase(stored_ids_.begin(), stored_ids_.begin() + serve);
  } else {
    // The source ran dry: hand out what is left, in order, in whole batches.
    int64_t serve = n / batch_rows_ * batch_rows_;
    serving_.assign(stored_.begin(), stored_.begin() + serve * d);
    serving_ids_.assign(stored_ids_.begin(), stored_ids_.begin() + serve);
    stored_.clear();
    stored_ids_.clear();
  }
}

int64_t ShuffleBuffer::next(float* out, int64_t rows) {
  const int64_t d = inner_->d_in();
  int64_t written = 0;
  while (written < rows) {
    if (serve_pos_ == serving_ids_.size()) {
      if (inner_done_ && stored_ids_.empty()) break;
      refill();
      if (serving_ids_.empty()) break;
    }
    int64_t m = std::min<int64_t>(rows - written, int64_t(serving_ids_.size() - serve_pos_));
    std::memcpy(out + written * d, serving_.data() + serve_pos_ * size_t(d), size_t(m * d) * sizeof(float));
    serve_pos_ += size_t(m);
    written += m;
  }
  return written;
}

std::string ShuffleBuffer::position() const {
  nlohmann::json j;
  j["source"] = "shuffle";
  j["inner"] = nlohmann::json::parse(inner_->position());
  j["refills"] = refills_;
  j["inner_done"] = inner_done_;
  j["buffer_rows"] = buffer_rows_;
  j["batch_rows"] = batch_rows_;
  j["seed"] = seed_;
  j["stored"] = stored_ids_;
  j["serving"] = std::vector<int64_t>(serving_ids_.begin() + std::ptrdiff_t(serve_pos_), serving_ids_.end());
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
  inner_->seek(j.at("inner").dump());
  refills_ = j.value("refills", int64_t(0));
  inner_done_ = j.value("inner_done", false);
  const int64_t d = inner_->d_in();
  stored_ids_ = j.at("stored").get<std::vector<int64_t>>();
  stored_.resize(stored_ids_.size() * size_t(d));
  inner_->read_ids(stored_ids_.data(), int64_t(stored_ids_.size()), stored_.data());
  serving_ids_ = j.at("serving").get<std::vector<int64_t>>();
  serving_.resize(serving_ids_.size() * size_t(d));
  inner_->read_ids(serving_ids_.data(), int64_t(serving_ids_.size()), serving_.data());
  serve_pos_ = 0;
}

std::string ShuffleBuffer::describe() const {
  return concat(inner_->describe(), ", shuffled through a ", buffer_rows_, "-row mixing buffer");
}

}  // namespace topksae
