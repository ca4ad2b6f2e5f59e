// The final SAE of a sharded run: rank 0 writes one sae_lens directory while every other rank
// sends its shard a block at a time, with cpu::final_sae's folds (the scaling factor, then
// rescale_acts_by_decoder_norm's per-latent norm) applied to each block as it is sent, in the
// same float operations, so the file equals the single-process one for the same weights.
// W_dec [d_sae, d_in] is row-sharded: each rank's rows are appended in rank order. W_enc
// [d_in, d_sae] is column-sharded: rank 0 assembles blocks of whole rows from every rank's
// columns. Nothing holds more than one block beside its own shard (blocks of at most ~64 MiB).
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "dist/sharded_files.h"
#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/safetensors.h"

namespace fs = std::filesystem;

namespace topksae::dist {

namespace {
constexpr int64_t kBlockFloats = int64_t(1) << 24;

// The shard's per-latent fold factors of rescale_acts_by_decoder_norm (cpu::final_sae): the norm
// of each W_dec row after the scaling fold; empty when not rescaling.
std::vector<float> fold_norms(const TrainConfig& cfg, const ShardRange& r, const TrainState& st, float s) {
  std::vector<float> norm;
  if (!cfg.rescale_acts_by_decoder_norm) return norm;
  const int64_t d = cfg.d_in;
  norm.resize(size_t(r.size()));
  for (int64_t j = 0; j < r.size(); ++j) {
    float s2 = 0;
    for (int64_t i = 0; i < d; ++i) {
      float w = st.params.W_dec[size_t(j * d + i)];
      if (st.scaling_factor) w /= s;
      s2 += w * w;
    }
    norm[size_t(j)] = std::sqrt(s2);
  }
  return norm;
}
}  // namespace

void save_sharded_final(Collectives& comm, const fs::path& dir, const TrainConfig& cfg, const ShardRange& r,
                        const TrainState& st, SaeDirExtras extras) {
  comm.set_phase("the final save", st.step);
  const int R = comm.size();
  const int64_t d = cfg.d_in, n = cfg.d_sae, m = r.size();
  const bool scale = st.scaling_factor.has_value();
  const float s = scale ? float(*st.scaling_factor) : 1.f;
  const std::vector<float> norm = fold_norms(cfg, r, st, s);
  auto ranges = [&](int q) { return shard_range(n, q, R); };
  // This rank's shard, folded, a block at a time. Each block goes to rank 0 (or is used there).
  std::vector<float> blk;
  auto enc_block = [&](int64_t i0, int64_t i1) {  // W_enc[i0:i1, shard] [i1-i0, m]
    blk.resize(size_t((i1 - i0) * m));
    for (int64_t i = i0; i < i1; ++i)
      for (int64_t j = 0; j < m; ++j) {
        float w = st.params.W_enc[size_t(i * m + j)];
        if (scale) w *= s;
        if (!norm.empty()) w *= norm[size_t(j)];
        blk[size_t((i - i0) * m + j)] = w;
      }
  };
  auto dec_block = [&](int64_t j0, int64_t j1) {  // W_dec[shard rows j0:j1] [j1-j0, d]
    blk.resize(size_t((j1 - j0) * d));
    for (int64_t j = j0; j < j1; ++j)
      for (int64_t i = 0; i < d; ++i) {
        float w = st.params.W_dec[size_t(j * d + i)];
        if (scale) w /= s;
        if (!norm.empty()) w /= norm[size_t(j)];
        blk[size_t((j - j0) * d + i)] = w;
      }
  };
  std::vector<float> benc(st.params.b_enc);  // [m]
  if (!norm.empty())
    for (int64_t j = 0; j < m; ++j) benc[size_t(j)] *= norm[size_t(j)];
  const std::vector<float> sparsity = log_feature_sparsity(st.stats);  // [m]
  const int64_t enc_rows = std::max<int64_t>(1, std::min<int64_t>(d, kBlockFloats / n));
  const int64_t dec_rows = std::max<int64_t>(1, kBlockFloats / d);

  if (r.rank != 0) {
    for (int64_t i0 = 0; i0 < d; i0 += enc_rows) {
      enc_block(i0, std::min(d, i0 + enc_rows));
      comm.send(blk.data(), blk.size() * sizeof(float), 0);
    }
    for (int64_t j0 = 0; j0 < m; j0 += dec_rows) {
      dec_block(j0, std::min(m, j0 + dec_rows));
      comm.send(blk.data(), blk.size() * sizeof(float), 0);
    }
    comm.send(benc.data(), benc.size() * sizeof(float), 0);
    comm.send(sparsity.data(), sparsity.size() * sizeof(float), 0);
  } else {
    SaeConfig c = cfg.sae_config();
    c.normalize = Normalize::none;  // the scaling factor is folded in
    c.validate();
    TOPKSAE_CHECK(c.dtype == DType::f32, "save_sharded_final: only f32 weights are written");
    std::error_code ec;
    fs::create_directories(dir, ec);
    TOPKSAE_CHECK(!ec || fs::is_directory(dir), dir.string(), ": cannot create directory: ", ec.message());
    // The order of save_sae_dir's SafetensorsWriter: the stream writer's file is byte-identical.
    SafetensorsStreamWriter w(dir / kSaeWeightsFile);
    const size_t t_enc = w.declare("W_enc", c.dtype, {n});
    const size_t t_dec = w.declare("W_dec", c.dtype, {d});
    const size_t t_benc = w.declare("b_enc", c.dtype);
    const size_t t_bdec = w.declare("b_dec", c.dtype);
    std::vector<float> rows, piece;
    for (int64_t i0 = 0; i0 < d; i0 += enc_rows) {
      const int64_t i1 = std::min(d, i0 + enc_rows);
      rows.resize(size_t((i1 - i0) * n));
      for (int q = 0; q < R; ++q) {
        const ShardRange rq = ranges(q);
        if (q == 0) {
          enc_block(i0, i1);
          piece = blk;
        } else {
          piece.resize(size_t((i1 - i0) * rq.size()));
          comm.recv(piece.data(), piece.size() * sizeof(float), q);
        }
        for (int64_t i = i0; i < i1; ++i)
          std::copy(piece.begin() + (i - i0) * rq.size(), piece.begin() + (i - i0 + 1) * rq.size(),
                    rows.begin() + (i - i0) * n + rq.lo);
      }
      w.append_f32(t_enc, rows.data(), i1 - i0);
    }
    std::vector<float> all_benc(static_cast<size_t>(n)), all_sparsity(static_cast<size_t>(n));
    for (int q = 0; q < R; ++q) {
      const ShardRange rq = ranges(q);
      for (int64_t j0 = 0; j0 < rq.size(); j0 += dec_rows) {
        const int64_t j1 = std::min(rq.size(), j0 + dec_rows);
        if (q == 0) {
          dec_block(j0, j1);
        } else {
          blk.resize(size_t((j1 - j0) * d));
          comm.recv(blk.data(), blk.size() * sizeof(float), q);
        }
        w.append_f32(t_dec, blk.data(), j1 - j0);
      }
      if (q == 0) {
        std::copy(benc.begin(), benc.end(), all_benc.begin());
        std::copy(sparsity.begin(), sparsity.end(), all_sparsity.begin());
      } else {
        comm.recv(all_benc.data() + rq.lo, size_t(rq.size()) * sizeof(float), q);
        comm.recv(all_sparsity.data() + rq.lo, size_t(rq.size()) * sizeof(float), q);
      }
    }
    std::vector<float> bdec(st.params.b_dec);
    if (scale)
      for (float& v : bdec) v /= s;
    w.append_f32(t_benc, all_benc.data(), n);
    w.append_f32(t_bdec, bdec.data(), d);
    w.finish();
    extras.sparsity = std::move(all_sparsity);
    extras.scaling_factor.reset();
    write_file_atomic(dir / kSaeCfgFile, sae_cfg_json(c, extras));
    SafetensorsWriter sp;
    sp.add_f32("sparsity", {n}, extras.sparsity->data());
    sp.write(dir / kSaeSparsityFile);
    if (!extras.training_json.empty())
      write_file_atomic(dir / kActivationScalerFile, "{\"scaling_factor\":null}\n");
    else
      fs::remove(dir / kActivationScalerFile, ec);
  }
  comm.barrier();  // the directory is complete when any rank returns
}

}  // namespace topksae::dist
