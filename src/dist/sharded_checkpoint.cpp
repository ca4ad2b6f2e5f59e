// Sharded checkpoints (format in sharded_files.h): one part file per rank, a manifest written by
// rank 0 once every part of the step is on disk.
#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dist/sharded_files.h"
#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "train/checkpoint_io.h"

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace topksae::dist {

namespace {

constexpr char kPartMagic[16] = {'T', 'O', 'P', 'K', 'S', 'A', 'E', '-', 'S', 'H', 'A', 'R', 'D', '-', 'P', '1'};

std::string part_name(int rank, int ranks) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "rank-%05d-of-%05d.part", rank, ranks);
  return buf;
}
std::string step_dir(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step-%09lld", static_cast<long long>(step));
  return buf;
}

using ckpt_io::fnv1a;

std::string part_bytes(const TrainConfig& cfg, const ShardRange& r, const TrainState& st) {
  json h;
  h["format"] = "topksae sharded checkpoint part";
  h["version"] = 1;
  h["rank"] = r.rank;
  h["ranks"] = r.ranks;
  h["lo"] = r.lo;
  h["hi"] = r.hi;
  ckpt_io::put_counters(h, st);
  h["config"] = json::parse(train_config_to_json(cfg));
  const std::string hj = h.dump();
  std::string out(kPartMagic, sizeof kPartMagic);
  ckpt_io::put_u64(out, hj.size());
  out += hj;
  for (const Params<float>* p : {&st.params, &st.adam_m, &st.adam_v}) ckpt_io::put_params(out, *p);
  ckpt_io::put_stats(out, st.stats);
  ckpt_io::put_u64(out, fnv1a(out.data(), out.size()));
  return out;
}

json read_manifest(const fs::path& dir) {
  const fs::path mp = dir / kShardedManifest;
  TOPKSAE_CHECK(fs::exists(mp), dir.string(), " is not a sharded checkpoint (no ", kShardedManifest, ")");
  json j;
  try {
    j = json::parse(read_small_file(mp));
    TOPKSAE_CHECK(j.at("format").get<std::string>() == "topksae sharded checkpoint", mp.string(),
                  ": not a topksae sharded checkpoint");
    TOPKSAE_CHECK(j.at("version").get<int>() == 1, mp.string(), ": unsupported version");
    j.at("ranks").get<int>();
    j.at("step").get<int64_t>();
    j.at("parts_dir").get<std::string>();
  } catch (const json::exception& e) {
    TOPKSAE_FAIL(mp.string(), ": bad manifest: ", e.what());
  }
  return j;
}

// Loads and checks this rank's part.
TrainState load_part(const fs::path& dir, const json& man, const ShardRange& r, TrainConfig* cfg_out) {
  const int64_t step = man.at("step").get<int64_t>();
  const fs::path path = dir / man.at("parts_dir").get<std::string>() / part_name(r.rank, r.ranks);
  TOPKSAE_CHECK(fs::exists(path), "checkpoint part ", path.string(), " (rank ", r.rank, " of ", r.ranks,
                ") is missing: the checkpoint set in ", dir.string(), " is incomplete");
  const std::string s = ckpt_io::read_all(path, SIZE_MAX);
  TOPKSAE_CHECK(s.size() >= sizeof kPartMagic + 16 && std::memcmp(s.data(), kPartMagic, sizeof kPartMagic) == 0,
                path.string(), " is not a topksae checkpoint part");
  uint64_t stored, hlen;
  std::memcpy(&stored, s.data() + s.size() - 8, 8);
  TOPKSAE_CHECK(stored == fnv1a(s.data(), s.size() - 8), path.string(), ": checksum mismatch (corrupt file)");
  std::memcpy(&hlen, s.data() + sizeof kPartMagic, 8);
  TOPKSAE_CHECK(sizeof kPartMagic + 8 + hlen <= s.size() - 8, path.string(), ": truncated header");
  const json h = json::parse(s.substr(sizeof kPartMagic + 8, hlen));
  TrainConfig cfg = train_config_from_json(h.at("config").dump());
  TOPKSAE_CHECK(h.at("step").get<int64_t>() == step, "checkpoint part ", path.string(), " is from step ",
                h.at("step").get<int64_t>(), ", but the checkpoint set in ", dir.string(), " is at step ", step);
  TOPKSAE_CHECK(h.at("rank").get<int>() == r.rank && h.at("ranks").get<int>() == r.ranks &&
                    h.at("lo").get<int64_t>() == r.lo && h.at("hi").get<int64_t>() == r.hi,
                path.string(), " holds latents [", h.at("lo").get<int64_t>(), ", ", h.at("hi").get<int64_t>(),
                ") of rank ", h.at("rank").get<int>(), "; rank ", r.rank, " expected [", r.lo, ", ", r.hi, ")");
  TrainState st;
  ckpt_io::get_counters(h, &st);
  const size_t d = size_t(cfg.d_in), m = size_t(r.size());
  const size_t expect = sizeof kPartMagic + 8 + hlen + 3 * (2 * d * m + m + d) * 4 + 2 * m * 8 + 8;
  TOPKSAE_CHECK(s.size() == expect, path.string(), " is ", s.size(), " bytes; expected ", expect);
  ckpt_io::Reader rd{s, sizeof kPartMagic + 8 + hlen, path};
  for (Params<float>* p : {&st.params, &st.adam_m, &st.adam_v}) rd.params(p, d, m);
  rd.stats(&st.stats, m);
  if (cfg_out) *cfg_out = cfg;
  return st;
}

// Latents [lo, hi) of one state into another, each laid out as the rank range it holds (W_enc
// columns, b_enc, W_dec rows and their Adam moments; the counters), d = d_in.
void copy_latents(const TrainState& from, const ShardRange& fr, TrainState* to, const ShardRange& tr, int64_t lo,
                  int64_t hi, int64_t d) {
  const int64_t mf = fr.size(), mt = tr.size(), w = hi - lo, jf = lo - fr.lo, jt = lo - tr.lo;
  const Params<float>* src[3] = {&from.params, &from.adam_m, &from.adam_v};
  Params<float>* dst[3] = {&to->params, &to->adam_m, &to->adam_v};
  for (int t = 0; t < 3; ++t) {
    for (int64_t i = 0; i < d; ++i)
      std::copy_n(src[t]->W_enc.begin() + i * mf + jf, w, dst[t]->W_enc.begin() + i * mt + jt);
    std::copy_n(src[t]->b_enc.begin() + jf, w, dst[t]->b_enc.begin() + jt);
    std::copy_n(src[t]->W_dec.begin() + jf * d, w * d, dst[t]->W_dec.begin() + jt * d);
  }
  std::copy_n(from.stats.since_fired.begin() + jf, w, to->stats.since_fired.begin() + jt);
  std::copy_n(from.stats.act_freq.begin() + jf, w, to->stats.act_freq.begin() + jt);
}

// Rank r's part of a set written by old_ranks ranks (resharding): its latents gathered from the
// old parts that hold them, read one at a time (each whole, checked as on a same-R resume); b_dec,
// its moments and the counters from the first of them (they are replicated: equal in every part).
TrainState load_resharded(const fs::path& dir, const json& man, int old_ranks, const ShardRange& r,
                          TrainConfig* cfg_out) {
  const int64_t n = man.at("d_sae").get<int64_t>();
  TOPKSAE_CHECK(r.hi <= n, "checkpoint ", dir.string(), " holds ", n, " latents; rank ", r.rank, " expected [", r.lo,
                ", ", r.hi, ")");
  TrainState st;
  TrainConfig cfg;
  bool first = true;
  for (int q = 0; q < old_ranks; ++q) {
    const ShardRange oq = shard_range(n, q, old_ranks);
    const int64_t lo = std::max(oq.lo, r.lo), hi = std::min(oq.hi, r.hi);
    if (lo >= hi) continue;
    TrainConfig c;
    TrainState old = load_part(dir, man, oq, &c);
    const int64_t d = c.d_in, m = r.size();
    if (first) {
      first = false;
      cfg = c;
      st = old;  // counters, data position, b_dec and its moments; the per-latent arrays resized below
      for (Params<float>* p : {&st.params, &st.adam_m, &st.adam_v}) {
        p->W_enc.assign(size_t(d * m), 0.f);
        p->b_enc.assign(size_t(m), 0.f);
        p->W_dec.assign(size_t(m * d), 0.f);
      }
      st.stats.since_fired.assign(size_t(m), 0);
      st.stats.act_freq.assign(size_t(m), 0);
    }
    TOPKSAE_CHECK(c.d_in == cfg.d_in && c.d_sae == n, "checkpoint part of rank ", q, " in ", dir.string(),
                  " has another shape (d_in ", c.d_in, ", d_sae ", c.d_sae, ") than the set (d_in ", cfg.d_in,
                  ", d_sae ", n, ")");
    copy_latents(old, oq, &st, r, lo, hi, d);
  }
  TOPKSAE_CHECK(!first, "checkpoint ", dir.string(), ": no part holds latents [", r.lo, ", ", r.hi, ")");
  if (cfg_out) *cfg_out = cfg;
  return st;
}

}  // namespace

bool is_sharded_checkpoint(const fs::path& dir) { return fs::exists(dir / kShardedManifest); }

void save_sharded_checkpoint(Collectives& comm, const fs::path& dir, const TrainConfig& cfg, const ShardRange& r,
                             const TrainState& st) {
  comm.set_phase("a checkpoint", st.step);
  const std::string sd = step_dir(st.step);
  std::string err;
  try {
    std::error_code ec;
    fs::create_directories(dir / sd, ec);
    TOPKSAE_CHECK(!ec || fs::is_directory(dir / sd), "cannot create ", (dir / sd).string(), ": ", ec.message());
    write_file_atomic(dir / sd / part_name(r.rank, r.ranks), part_bytes(cfg, r, st));
  } catch (const std::exception& e) {
    err = e.what();
  }
  all_ok(comm, err, "writing the checkpoint part");
  if (r.rank == 0) {
    try {
      json man;
      man["format"] = "topksae sharded checkpoint";
      man["version"] = 1;
      man["ranks"] = r.ranks;
      man["step"] = st.step;
      man["d_in"] = cfg.d_in;
      man["d_sae"] = cfg.d_sae;
      man["parts_dir"] = sd;
      json parts = json::array();
      for (int q = 0; q < r.ranks; ++q) parts.push_back(part_name(q, r.ranks));
      man["parts"] = parts;
      write_file_atomic(dir / kShardedManifest, man.dump(2) + "\n");
      // The set is complete: older steps' parts go.
      for (const auto& e : fs::directory_iterator(dir))
        if (e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0 && e.path().filename() != sd)
          fs::remove_all(e.path());
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  all_ok(comm, err, "writing the checkpoint manifest");
  comm.set_phase("training", st.step);
}

TrainState load_sharded_checkpoint(Collectives& comm, const fs::path& dir, const ShardRange& r, TrainConfig* cfg) {
  comm.set_phase("the checkpoint load", -1);
  std::string err;
  TrainState st;
  try {
    const json man = read_manifest(dir);
    const int ranks = man.at("ranks").get<int>();
    if (r.rank == 0)  // name every missing part once, not only this rank's
      for (int q = 0; q < ranks; ++q) {
        const fs::path p = dir / man.at("parts_dir").get<std::string>() / part_name(q, ranks);
        TOPKSAE_CHECK(fs::exists(p), "checkpoint part ", p.string(), " (rank ", q, " of ", ranks,
                      ") is missing: the checkpoint set in ", dir.string(), " is incomplete");
      }
    // Another R: resharded. The state is the saved one, bit for bit, only split differently; the
    // steps after it are the new R's (equal to the old R's up to float summation order).
    st = ranks == r.ranks ? load_part(dir, man, r, cfg) : load_resharded(dir, man, ranks, r, cfg);
  } catch (const std::exception& e) {
    err = e.what();
  }
  all_ok(comm, err, "loading the checkpoint");
  return st;
}

std::string describe_sharded_checkpoint(const fs::path& dir) {
  const json man = read_manifest(dir);
  const int ranks = man.at("ranks").get<int>();
  std::ostringstream o;
  o << dir.string() << ": sharded training checkpoint (latent-sharded over " << ranks << " ranks), step "
    << man.at("step").get<int64_t>() << ", d_in " << man.value("d_in", int64_t(0)) << ", d_sae "
    << man.value("d_sae", int64_t(0)) << "\n";
  int missing = 0;
  for (int q = 0; q < ranks; ++q) {
    const fs::path p = dir / man.at("parts_dir").get<std::string>() / part_name(q, ranks);
    const bool ok = fs::exists(p);
    missing += !ok;
    o << "  " << (dir.filename() / man.at("parts_dir").get<std::string>() / part_name(q, ranks)).string() << ": "
      << (ok ? concat(fs::file_size(p), " bytes") : std::string("MISSING")) << "\n";
  }
  o << (missing ? concat(missing, " part(s) missing: this set cannot be resumed")
                : concat("resume with: mpirun -np ", ranks, " topksae train --resume <out> (another number of ranks "
                         "from 2 reshards it)"))
    << "\n";
  return o.str();
}

}  // namespace topksae::dist
