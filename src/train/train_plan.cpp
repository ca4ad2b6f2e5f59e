// TrainPlan: the CUDA training step's choices and buffer sizes (train_plan.h). Host-only.
#include "train/train_plan.h"

#include <algorithm>

#include "common/launch_shape.h"  // widest_slab_threads (the gather decode uses it too)
#include "topksae/error.h"

namespace topksae::train_detail {

TrainPlan plan_train_step(const TrainConfig& cfg_in, const cuda::TrainStepOptions& opts, const DeviceLimits& lim) {
  TrainConfig cfg = cfg_in;
  cfg.validate();
  // The kernels implement the 6.13.1 math only; selecting on h * ||W_dec[j]|| would need the
  // decoder norms in the top-k keys and the decode coefficients. Refuse rather than differ.
  TOPKSAE_CHECK(!cfg.rescale_acts_by_decoder_norm,
                "TrainStep (CUDA): rescale_acts_by_decoder_norm is not implemented on the GPU; train it on the CPU");
  TrainPlan p;
  p.prec = opts.precision;
  p.d = cfg.d_in;
  p.n = cfg.d_sae;
  p.k = cfg.k;
  const int64_t d = p.d, n = p.n, k = p.k;
  p.half_d = d / 2;
  p.kcap = std::min(p.half_d, n);
  p.Bmax = opts.max_batch > 0 ? opts.max_batch : cfg.batch_size;
  TOPKSAE_CHECK(p.Bmax >= 1, "TrainStep: batch size must be >= 1");
  TOPKSAE_CHECK(opts.encode_rows >= -1, "TrainStep: encode_rows=", opts.encode_rows,
                " must be -1 (whole batch), 0 (auto) or a row count");
  const int64_t Bmax = p.Bmax;
  p.hrows = cuda::encode_chunk_rows(n, Bmax, opts.encode_rows);
  p.E = Bmax * (k + p.kcap);
  TOPKSAE_CHECK(p.E < (int64_t(1) << 31), "TrainStep: batch*(k + d_in/2) = ", p.E, " must be < 2^31");
  TOPKSAE_CHECK(p.kcap <= cuda::kMaxTopK, "TrainStep: AuxK k = d_in/2 = ", p.kcap, " exceeds the GPU top-k maximum ",
                cuda::kMaxTopK);
  TOPKSAE_CHECK(opts.aux_dense_cap >= -1,
                "TrainStep: aux_dense_cap must be -1 (auto), 0 (gather only) or a latent count");
  // The dense buffers [Bmax, cap] and [cap, d] are indexed by cuBLAS with int: < 2^31 elements.
  const int64_t int_cap = std::min(((int64_t(1) << 31) - 1) / Bmax, ((int64_t(1) << 31) - 1) / d);
  if (p.kcap == 0) {
    p.aux_cap = 0;
  } else if (opts.aux_dense_cap < 0) {
    p.aux_cap = std::max<int64_t>(n / 8, 4096);
    p.aux_cap = std::min(n, (p.aux_cap + 31) / 32 * 32);
    p.aux_cap = std::min(p.aux_cap, int_cap / 32 * 32);
  } else {
    p.aux_cap = std::min(opts.aux_dense_cap, n);
    TOPKSAE_CHECK(p.aux_cap <= int_cap, "TrainStep: aux_dense_cap=", opts.aux_dense_cap,
                  " makes the dense AuxK buffers (batch x cap, cap x d_in) exceed 2^31 elements; at most ", int_cap,
                  " here");
  }
  // The whole-row dz kernel stages g_b and ga_b ([2, d_in] floats) in shared memory.
  TOPKSAE_CHECK(int64_t(2) * d * 4 <= lim.smem_optin_bytes, "TrainStep: d_in=", d, " needs ", 8 * d,
                " bytes of shared memory per block; this GPU allows ", lim.smem_optin_bytes);
  p.oWenc = 0;
  p.oBenc = d * n;
  p.oWdec = p.oBenc + n;
  p.oBdec = p.oWdec + n * d;
  p.P = p.oBdec + d;
  while ((int64_t(1) << p.sort_bits) <= n) ++p.sort_bits;  // keys in [0, n]
  // The swept dz for the main top-k's entries needs float4 rows: d % 4 == 0 and W_dec's offset
  // in the flat parameters (n * (d + 1) floats) a multiple of 4.
  const int st = opts.slab_threads;
  TOPKSAE_CHECK(st == 0 || st == -1 || st == 16 || st == 32 || st == 64 || st == 128, "TrainStep: slab_threads=", st,
                " must be 0 (auto), -1 (off), 16, 32, 64 or 128");
  const bool vec_ok = d % 4 == 0 && p.oWdec % 4 == 0;
  if (st > 0) {
    TOPKSAE_CHECK(vec_ok, "TrainStep: slab_threads needs d_in % 4 == 0 and d_sae % 4 == 0 (float4 rows); d_in=", d,
                  ", d_sae=", n);
    p.slab_tpt = st;
  } else if (st == 0 && vec_ok) {
    // The widest slab whose rows fit in a quarter of L2, 16..128 threads: on the H200 (bench/
    // results/H200-2026-11-27-run3.md) 16 threads took 0.397 ms at 2304x65536 against 0.435 ms
    // for 32, whereas the decode prefers 32 (gather_threads_per_token).
    p.slab_tpt = cuda::detail::widest_slab_threads(std::min(n, Bmax * k), lim.l2_bytes / 4, 128);
  }
  p.slabs = p.slab_tpt > 0 ? (d + 4 * p.slab_tpt - 1) / (4 * p.slab_tpt) : 0;

  if (p.prec == cuda::Precision::bf16) {
    p.w16_elems = d * n;
    p.u16_elems = Bmax * d;
  }
  p.pre_elems = std::max(p.hrows * n, Bmax * p.aux_cap);
  // The gather path is reachable only when the bound can exceed the dense capacity.
  p.gather_possible = p.aux_cap < n && p.kcap > 0;
  p.arena_elems = p.aux_cols_elems() + 6 * Bmax * k;
  if (p.gather_possible) p.arena_elems = std::max(p.arena_elems, 6 * p.E);
  p.part_elems = p.slab_tpt > 0 ? p.slabs * Bmax * k : 0;
  p.aux_rows_elems = p.aux_cap * d;
  // Gradients last: the automatic choice weighs the whole stored plan.
  const auto set_fused = [&p](bool fused) {
    p.fused = fused;
    p.grad_elems = fused ? 0 : p.P;
    p.gbias_elems = fused ? p.n + p.d : 0;
    p.aux_rows2_elems = fused ? p.aux_rows_elems : 0;
  };
  set_fused(opts.grad_storage == cuda::GradStorage::fused);
  if (opts.grad_storage == cuda::GradStorage::automatic && lim.memory_bytes > 0 &&
      p.bytes(0, 0, 0) + size_t(kPlanHeadroomBytes) > size_t(lim.memory_bytes))
    set_fused(true);
  return p;
}

std::vector<int64_t> TrainPlan::sort_counts() const {
  if (gather_possible) return {Bmax * k, E};
  return {Bmax * k};
}

StepShape TrainPlan::shape(int64_t nd_bound) const {
  StepShape s;
  nd_bound = kcap > 0 ? std::min(nd_bound, n) : 0;
  s.path = nd_bound <= 0 ? AuxPath::none : (nd_bound <= aux_cap ? AuxPath::dense : AuxPath::gather);
  if (s.path == AuxPath::dense) {
    s.ndc = std::min(aux_cap, (nd_bound + 31) / 32 * 32);  // padded to 32 for the GEMMs
    s.kc = std::min(kcap, s.ndc);
    s.entries_offset = aux_cols_elems();
  }
  s.kT = s.path == AuxPath::gather ? kcap : 0;  // the entry lists hold T entries on the gather path only
  s.entries_per = Bmax * (k + s.kT);
  return s;
}

size_t TrainPlan::bytes(size_t sort_tmp_bytes, size_t scan_tmp_bytes, size_t metrics_bytes) const {
  const size_t f = 4;
  size_t b = 3 * size_t(P) * f;  // params, both moments
  b += size_t(grad_elems + gbias_elems) * f;     // the gradients (stored), or the biases' (fused)
  b += size_t(w16_elems) * 2 + size_t(u16_elems) * 2;
  b += size_t(Bmax * d) * f;                     // u
  b += size_t(pre_elems) * f;                    // h / G
  b += size_t(Bmax * k) * (4 + f + f);           // idxS, hS, zS
  b += size_t(Bmax * kcap) * (4 + f);            // idxT, hT
  b += 4 * size_t(Bmax * d) * f;                 // xhat, ehat, g, ga
  b += size_t(d) * 8 + size_t(Bmax) * 4 * 8;     // mu, stats
  b += size_t(arena_elems) * f;
  b += size_t(n + 1) * 4;                        // start
  b += size_t(part_elems) * f;
  b += sort_tmp_bytes;
  b += size_t(n) * (1 + 1 + 8 + 8 + 4);          // dead, fired, since, act, dead32
  if (aux_cap > 0) {
    b += size_t(n) * (4 + 4);                    // pos, pos_of
    b += size_t(aux_cap) * (4 + 4);              // dead_list, dbe
    b += size_t(aux_rows_elems + aux_rows2_elems) * f;
    b += scan_tmp_bytes;
  }
  b += metrics_bytes;
  return b;
}

}  // namespace topksae::train_detail
