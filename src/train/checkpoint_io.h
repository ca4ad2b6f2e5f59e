// The byte-level pieces that the two training-checkpoint formats share: the single-process
// trainer_state.bin/.json (src/train/checkpoint.cpp) and a sharded run's part files
// (src/dist/sharded_checkpoint.cpp) lay out the same Params, counters and checksum the same way,
// through these, so a change to the state reaches both.
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>

#include "topksae/error.h"
#include "topksae/train.h"

namespace topksae::ckpt_io {

// FNV-1a 64 of the bytes: the checksum that ends a .bin / .part file.
uint64_t fnv1a(const char* p, size_t n);

// The whole file; Error naming it when it cannot be read or is larger than max_bytes.
std::string read_all(const std::filesystem::path& path, size_t max_bytes);

template <typename V>
void put(std::string& out, const V& v) {
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(v[0]));
}
inline void put_u64(std::string& out, uint64_t v) { out.append(reinterpret_cast<const char*>(&v), 8); }
// W_enc, b_enc, W_dec, b_dec, raw little-endian.
inline void put_params(std::string& out, const Params<float>& p) {
  put(out, p.W_enc);
  put(out, p.b_enc);
  put(out, p.W_dec);
  put(out, p.b_dec);
}
// since_fired, then act_freq (int64 each).
inline void put_stats(std::string& out, const SparsityStats& s) {
  put(out, s.since_fired);
  put(out, s.act_freq);
}

// Reads sequentially from a file's bytes with bounds checks.
struct Reader {
  const std::string& s;
  size_t pos;
  const std::filesystem::path& path;
  template <typename V>
  void get(V& v, size_t n) {
    const size_t bytes = n * sizeof(v[0]);
    TOPKSAE_CHECK(pos + bytes <= s.size(), path.string(), ": truncated (need ", bytes, " bytes at offset ", pos, ")");
    v.resize(n);
    std::memcpy(v.data(), s.data() + pos, bytes);
    pos += bytes;
  }
  uint64_t u64() {
    TOPKSAE_CHECK(pos + 8 <= s.size(), path.string(), ": truncated");
    uint64_t v;
    std::memcpy(&v, s.data() + pos, 8);
    pos += 8;
    return v;
  }
  // n latents of d_in d: put_params's layout.
  void params(Params<float>* p, size_t d, size_t n) {
    get(p->W_enc, d * n);
    get(p->b_enc, n);
    get(p->W_dec, n * d);
    get(p->b_dec, d);
  }
  void stats(SparsityStats* st, size_t n) {
    get(st->since_fired, n);
    get(st->act_freq, n);
  }
};

// The trainer state's counters as JSON keys: step, n_training_samples, n_frac_active,
// scaling_factor (null when none), data_position. J: nlohmann::json or ordered_json.
template <typename J>
void put_counters(J& j, const TrainState& st) {
  j["step"] = st.step;
  j["n_training_samples"] = st.n_training_samples;
  j["n_frac_active"] = st.stats.n_frac_active;
  j["scaling_factor"] = st.scaling_factor ? J(*st.scaling_factor) : J();
  j["data_position"] = st.data_position;
}
// put_counters's keys into st; nlohmann's exception when one is missing or of the wrong type.
template <typename J>
void get_counters(const J& j, TrainState* st) {
  st->step = j.at("step").template get<int64_t>();
  st->n_training_samples = j.at("n_training_samples").template get<int64_t>();
  st->stats.n_frac_active = j.at("n_frac_active").template get<int64_t>();
  if (!j.at("scaling_factor").is_null()) st->scaling_factor = j.at("scaling_factor").template get<double>();
  st->data_position = j.at("data_position").template get<std::string>();
}

}  // namespace topksae::ckpt_io
