// The memory plan of the CUDA training step (kernels/train_step.cu): every choice its constructor
// makes from the config, the options and two device limits, every buffer's size, and which
// buffers share memory. Host-only arithmetic, compiled in every build and tested without a GPU
// (tests/test_train_plan.cpp); TrainStep::planned_bytes is plan.bytes().
//
// Memory is reused only here, by giving two meanings the same storage where their lifetimes do
// not overlap within a step (the step names each meaning separately):
//   * `pre` holds h [hrows, d_sae] (one chunk of pre-activations) during the forward, then dense
//     AuxK's G [B, ndc] (dza) in the backward: h is dead once the last chunk's top-k has run.
//   * `arena` holds, on the dense AuxK path, Hc [B, ndc] (the dead latents' pre-activations) until
//     AuxK's top-k has read it, then Zd [B, ndc] (AuxK's codes) in the same place; the six
//     per-entry arrays of the backward follow (aux_cols_elems() further in). Other paths: only the
//     entry arrays, from 0.
//   * `aux_rows` [aux_cap, d_in] holds W_dec[dead] until dW_dec[dead] = Zd^T @ ga is written over
//     it (after G = ga @ W_dec[dead]^T read it), then dW_enc[:, dead]^T (after grad_dec read
//     dW_dec[dead]). In the fused gradient mode both dead blocks are read again by the Adam pass,
//     so dW_enc[:, dead]^T gets its own `aux_rows2` [aux_cap, d_in] instead.
//
// Gradients (cuda::GradStorage): stored, `grad` [P] beside `param`, `m`, `v` [P] (16 bytes per
// parameter); fused, no `grad` but `gbias` [n + d] (db_enc, db_dec) and `aux_rows2` (12 bytes per
// parameter plus those). Automatic: stored unless its bytes (CUB temporaries left out) plus
// kPlanHeadroomBytes exceed DeviceLimits::memory_bytes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "topksae/ops_cuda.h"
#include "topksae/train.h"
#include "topksae/train_cuda.h"

namespace topksae::train_detail {

// What the plan needs to know about the GPU.
struct DeviceLimits {
  int64_t smem_optin_bytes = 0;  // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int64_t l2_bytes = 0;          // the L2 cache size (the dz slab width)
  int64_t memory_bytes = 0;      // the device's total memory (0: unknown; automatic storage stays stored)
};

// What the automatic gradient storage leaves free beside the plan: the CUDA context, cuBLAS's
// workspace, the CUB temporaries (only CUB can size them) and the caller's input batches.
constexpr int64_t kPlanHeadroomBytes = int64_t(1) << 30;

enum class AuxPath { none, dense, gather };

// One step's AuxK path and shapes, from the host's bound on its dead count.
struct StepShape {
  AuxPath path = AuxPath::none;
  int64_t ndc = 0;  // dense: the compacted dead columns (the bound rounded up to 32, <= aux_cap)
  int64_t kc = 0;   // dense: AuxK's top-k width over them, min(kcap, ndc)
  int64_t kT = 0;   // gather: the T entries per row in the entry lists (kcap); else 0
  // The six per-entry arrays of the backward (w, dh, keys, keys2, vals, vals2): `per` elements
  // each, consecutive from element `offset` of the arena.
  int64_t entries_offset = 0, entries_per = 0;
};

struct TrainPlan {
  cuda::Precision prec = cuda::Precision::fp32;
  int64_t d = 0, n = 0, k = 0;  // d_in, d_sae, k
  int64_t half_d = 0, kcap = 0;  // d_in / 2 and AuxK's largest k, min(d_in / 2, d_sae)
  int64_t Bmax = 0;              // the most rows a step takes
  int64_t E = 0;                 // Bmax * (k + kcap): the longest entry list
  // The flat parameter layout [W_enc | b_enc | W_dec | b_dec] (params, grads, both moments).
  int64_t oWenc = 0, oBenc = 0, oWdec = 0, oBdec = 0, P = 0;
  int64_t hrows = 0;       // rows per chunk of the encoder GEMM + top-k
  int64_t aux_cap = 0;     // dense AuxK's capacity in latents (0: the gather path only)
  bool gather_possible = false;  // a step may take the gather path (the bound can exceed aux_cap)
  int slab_tpt = 0;        // dz_partial's threads per row (0: the whole-row dz for S entries too)
  int64_t slabs = 0;       // its column slabs, ceil(d / (4 * slab_tpt))
  int sort_bits = 1;       // the radix sort's key bits (keys in [0, n])
  bool fused = false;      // GradStorage::fused: no dense gradient stored (see the top of this file)

  // Element counts (bytes for the byte-sized ones) of the storages; 0 means not allocated.
  int64_t w16_elems = 0, u16_elems = 0;  // bf16 only
  int64_t pre_elems = 0;                 // h, then G (see the top of this file)
  int64_t arena_elems = 0;               // Hc, then Zd; the entry arrays
  int64_t part_elems = 0;                // dz_partial's partial dots [slabs, Bmax*k]
  int64_t aux_rows_elems = 0;            // W_dec[dead], then dW_dec[dead], then dW_enc[:, dead]^T (stored)
  int64_t grad_elems = 0;                // stored: the gradients [P]
  int64_t gbias_elems = 0;               // fused: db_enc [n] then db_dec [d]
  int64_t aux_rows2_elems = 0;           // fused, dense AuxK: dW_enc[:, dead]^T [aux_cap, d]

  int64_t aux_cols_elems() const { return Bmax * aux_cap; }  // the arena's Hc / Zd part
  // The element counts the radix sort may run on (for its temporary storage).
  std::vector<int64_t> sort_counts() const;
  // The AuxK path and shapes of a step whose dead count is at most nd_bound.
  StepShape shape(int64_t nd_bound) const;
  // Bytes of every device buffer the step allocates, given the CUB temporary sizes (the only
  // sizes the host cannot compute): what TrainStep::device_bytes() reports.
  size_t bytes(size_t sort_tmp_bytes, size_t scan_tmp_bytes, size_t metrics_bytes) const;
};

// Validates cfg and opts (Error / InvalidArgument naming the field) and resolves the automatic
// choices. Throws for shapes the kernels cannot take (shared memory, int32 entry indices).
TrainPlan plan_train_step(const TrainConfig& cfg, const cuda::TrainStepOptions& opts, const DeviceLimits& lim);

}  // namespace topksae::train_detail
