// Host-only launch-shape arithmetic shared by kernels and by host planning code (no CUDA headers:
// src/train/train_plan.cpp includes it in every build).
#pragma once
#include <cstdint>

namespace topksae::cuda::detail {

// Column-slab sweeps of W_dec rows (gather decode, the train step's dz): the most threads per
// row, from max_threads halving down to 16, whose slab of `rows` rows (threads * 4 floats each)
// fits in budget_bytes.
inline int widest_slab_threads(int64_t rows, int64_t budget_bytes, int max_threads) {
  int tpt = max_threads;
  while (tpt > 16 && rows * int64_t(tpt) * 16 > budget_bytes) tpt /= 2;
  return tpt;
}

}  // namespace topksae::cuda::detail
