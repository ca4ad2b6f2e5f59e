// The files of a latent-sharded run.
//
// A sharded checkpoint is a directory:
//   sharded.json                      {"format": "topksae sharded checkpoint", "ranks": R, "step": S,
//                                      "d_in", "d_sae", "parts_dir": "step-<S>", "parts": [names]}
//   step-<S>/rank-<r>-of-<R>.part     rank r's part: its latents' weights, Adam moments and
//                                      counters, b_dec and its moments, the step, the data position
// Each rank writes its part through a temp file + rename; once every rank has, rank 0 writes
// sharded.json (temp + rename) and only then removes the parts of older steps, so a crash at any
// point leaves the previous complete set resumable. Loading refuses, naming the file, a missing
// part or a part of another step. A set written by another number of ranks is resharded: each
// rank reads the old parts that hold its latents (one at a time) and copies them into its range.
//
// The final SAE is one ordinary sae_lens directory that rank 0 writes while the other ranks send
// it their shards one block at a time (no rank ever holds the whole model).
#pragma once
#include <filesystem>
#include <string>

#include "dist/collectives.h"
#include "dist/shard.h"
#include "topksae/sae_dir.h"
#include "topksae/train.h"

namespace topksae::dist {

inline constexpr const char* kShardedManifest = "sharded.json";

// True when dir holds a sharded checkpoint (its sharded.json).
bool is_sharded_checkpoint(const std::filesystem::path& dir);

// Collective. Throws Error on every rank if any rank failed to write its part.
void save_sharded_checkpoint(Collectives& comm, const std::filesystem::path& dir, const TrainConfig& cfg,
                             const ShardRange& r, const TrainState& st);

// Collective. This rank's part of the state (resharded when r.ranks differs from the set's);
// *cfg the run's (whole-model) config. Throws Error on every rank if any part is missing or wrong.
TrainState load_sharded_checkpoint(Collectives& comm, const std::filesystem::path& dir, const ShardRange& r,
                                   TrainConfig* cfg);

// A summary of a sharded checkpoint for `topksae info` (no weights read): ranks, step, shapes,
// and which parts are present.
std::string describe_sharded_checkpoint(const std::filesystem::path& dir);

// Collective. The final SAE of the run (cpu::final_sae's folds applied shard by shard) and its
// sparsity.safetensors, written by rank 0 into dir.
void save_sharded_final(Collectives& comm, const std::filesystem::path& dir, const TrainConfig& cfg,
                        const ShardRange& r, const TrainState& st, SaeDirExtras extras);

}  // namespace topksae::dist
