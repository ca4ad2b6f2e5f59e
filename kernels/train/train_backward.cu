// The sparse backward on the device (shared/spec/MATH.md, "Backward"): every product touches only
// the k (+ k_aux on the gather path) selected latents per token.
//   * per-entry scalars (w = z or za, dh) by row dot products with W_dec rows (dz_rows: one warp
//     per entry over whole rows; dz_slabs: column slabs of W_dec swept like the gather decode),
//   * the entries regrouped by latent with a stable radix sort (deterministic sums, no atomics on
//     the gradients), then dW_dec rows (a warp per latent) and dW_enc columns + db_enc (a tile of
//     32 latents per block, written coalesced in the [d_in, d_sae] layout),
//   * db_dec = sum_b g_b + sum_b ga_b - a * W_enc @ db_enc  (sum_b du_b = W_enc @ db_enc).
// Dense AuxK's dead rows / columns come from its GEMMs (train_step.cu) and are added through
// pos_of. The fused gradient mode runs grad_dec's and grad_enc's kernels twice instead of storing
// dW_dec and dW_enc: a norm pass, then an Adam pass (GradMode below). CPU twin:
// src/cpu/train_backward.cpp. Over 400 lines: the five kernels share the entry
// layout (entry_row) and the sort's output, and read best together.
#include <cuda_bf16.h>

#include <cub/device/device_radix_sort.cuh>

#include "common/reduce.cuh"
#include "cuda_internal.h"
#include "train/adam_one.cuh"
#include "train/train_ops.h"

namespace topksae::cuda::train {

namespace {
using detail::block_sum;
using detail::warp_sum;
constexpr int kThreads = 256;

// What grad_dec_kernel / grad_enc_kernel do with each gradient value they sum: store it (and add
// its square to the norm), only add its square (the fused mode's first pass), or apply clip +
// Adam to it in place (its second pass, after clip_factor; no norm). Template arguments, so the
// store instance is the kernel it was before the fused mode existed.
enum GradMode : int { kStore, kNorm, kAdam };

// Adam on element o of a block of the flat arrays; returns the new parameter.
__device__ __forceinline__ float adam_at(const AdamBlock& blk, int64_t o, float g, const AdamCoef& a) {
  float p = blk.p[o], m = blk.m[o], v = blk.v[o];
  adam_one(p, m, v, g, a);
  blk.p[o] = p;
  blk.m[o] = m;
  blk.v[o] = v;
  return p;
}

// Entry p: S entries p = b*k + i (i < k); T entries p = B*k + b*kcap + i (i < k_aux).
// w[p] = z (S) or za (T): the dW_dec coefficient; dh[p] = dz*[h>0] (S) or dza (T).
// One block per row; g_b and ga_b staged in shared memory; one warp per entry dot product.
__global__ void dz_kernel(const float* __restrict__ W_dec, const float* __restrict__ g, const float* __restrict__ ga,
                          const int32_t* __restrict__ idxS, const float* __restrict__ hS, const int32_t* __restrict__ idxT,
                          const float* __restrict__ hT, int64_t B, int64_t d, int64_t k, int64_t kcap,
                          const StepControl* __restrict__ C, float* __restrict__ w, float* __restrict__ dh) {
  extern __shared__ float sh[];  // [2 * d]
  const int64_t b = blockIdx.x;
  const int k_aux = kcap > 0 ? C->k_aux : 0;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    sh[c] = g[b * d + c];
    sh[d + c] = k_aux > 0 ? ga[b * d + c] : 0.f;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int64_t total = k + k_aux;
  for (int64_t e = warp; e < total; e += nwarps) {
    const bool isS = e < k;
    const int64_t i = isS ? e : e - k;
    const int32_t j = isS ? idxS[b * k + i] : idxT[b * kcap + i];
    const float* src = isS ? sh : sh + d;
    const float* row = W_dec + int64_t(j) * d;
    float acc = 0.f;
    for (int64_t c = lane; c < d; c += 32) acc += src[c] * row[c];
    acc = warp_sum(acc);
    if (lane == 0) {
      if (isS) {
        const float h = hS[b * k + i];
        const int64_t p = b * k + i;
        w[p] = h < 0.f ? 0.f : h;
        dh[p] = h > 0.f ? acc : 0.f;  // ReLU grad is 0 at 0 (torch)
      } else {
        const int64_t p = B * k + b * kcap + i;
        w[p] = hT[b * kcap + i];
        dh[p] = acc;
      }
    }
  }
}

// The main top-k's half of dz_kernel swept like gather_decode (decode.cu): a block holds
// TOK = kSlabThreads / TPT rows x a slab of TPT * 4 columns, token groups fastest in the grid, so
// the slab of W_dec stays in L2 while every row reads its k rows of it. part [slabs, B*k] gets each
// slab's partial dot product g_b . W_dec[j] (summed over slabs in a fixed order by
// dz_finish_kernel: deterministic). Needs d % 4 == 0 and 16-byte aligned W_dec and g.
constexpr int kSlabThreads = 128;
template <int TPT>
__global__ void __launch_bounds__(kSlabThreads) dz_partial_kernel(const float* __restrict__ W_dec,
                                                                   const float* __restrict__ g,
                                                                   const int32_t* __restrict__ idxS, int64_t B,
                                                                   int64_t d, int64_t k, float* __restrict__ part) {
  constexpr int TOK = kSlabThreads / TPT;
  static_assert(32 % TPT == 0 || TPT % 32 == 0, "a token's threads tile warps");
  const int lt = threadIdx.x / TPT, lane = threadIdx.x % TPT;
  const int64_t b = int64_t(blockIdx.x) * TOK + lt;
  const int64_t c = (int64_t(blockIdx.y) * TPT + lane) * 4;
  // No barriers below: rows past B and columns past d just contribute zeros to the shuffles.
  float4 gv = make_float4(0.f, 0.f, 0.f, 0.f);
  if (b < B && c < d) gv = *reinterpret_cast<const float4*>(g + b * d + c);
  const int64_t E = B * k;
  for (int64_t i = 0; i < k; ++i) {
    float acc = 0.f;
    if (b < B && c < d) {
      const int32_t j = idxS[b * k + i];
      const float4 w = *reinterpret_cast<const float4*>(W_dec + int64_t(j) * d + c);
      acc = gv.x * w.x + gv.y * w.y + gv.z * w.z + gv.w * w.w;
    }
    if constexpr (TPT >= 32) {
      acc = warp_sum(acc);  // TPT/32 warps per token: combine them through shared memory
      __shared__ float wsum[kSlabThreads / 32];
      __syncthreads();  // wsum of the previous i has been read
      if ((threadIdx.x & 31) == 0) wsum[threadIdx.x >> 5] = acc;
      __syncthreads();
      if (lane == 0 && b < B) {
        float t = 0.f;
        for (int w = 0; w < TPT / 32; ++w) t += wsum[(threadIdx.x >> 5) + w];
        part[int64_t(blockIdx.y) * E + b * k + i] = t;
      }
    } else {
      acc = warp_sum<TPT>(acc);
      if (lane == 0 && b < B) part[int64_t(blockIdx.y) * E + b * k + i] = acc;
    }
  }
}

// dz = sum over slabs of part (in slab order); w = relu(h), dh = dz * [h > 0] for the S entries.
__global__ void dz_finish_kernel(const float* __restrict__ part, int64_t slabs, const float* __restrict__ hS, int64_t E,
                                 float* __restrict__ w, float* __restrict__ dh) {
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < E; p += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    for (int64_t sl = 0; sl < slabs; ++sl) acc += part[sl * E + p];
    const float h = hS[p];
    w[p] = h < 0.f ? 0.f : h;
    dh[p] = h > 0.f ? acc : 0.f;  // ReLU grad is 0 at 0 (torch)
  }
}

template <int TPT>
void launch_dz_partial(cudaStream_t st, const float* W_dec, const float* g, const int32_t* idxS, int64_t B, int64_t d,
                       int64_t k, int64_t slabs, float* part) {
  constexpr int TOK = kSlabThreads / TPT;
  const dim3 grid{unsigned((B + TOK - 1) / TOK), unsigned(slabs), 1u};
  dz_partial_kernel<TPT><<<grid, kSlabThreads, 0, st>>>(W_dec, g, idxS, B, d, k, part);
  CUDA_CHECK_LAUNCH();
}

// Sort keys: the latent of each entry, or n (sorts last, ignored) for T slots past k_aux.
__global__ void keys_kernel(const int32_t* __restrict__ idxS, const int32_t* __restrict__ idxT, int64_t B, int64_t k,
                            int64_t kcap, int64_t n, const StepControl* __restrict__ C, int32_t* __restrict__ keys,
                            int32_t* __restrict__ vals) {
  const int64_t E = B * (k + kcap);
  const int k_aux = kcap > 0 ? C->k_aux : 0;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < E; p += int64_t(gridDim.x) * blockDim.x) {
    int32_t key;
    if (p < B * k) {
      key = idxS[p];
    } else {
      const int64_t q = p - B * k;
      key = (q % kcap) < k_aux ? idxT[q] : int32_t(n);
    }
    keys[p] = key;
    vals[p] = int32_t(p);
  }
}

// start[j] = first sorted position with key >= j, for j in [0, n].
__global__ void offsets_kernel(const int32_t* __restrict__ keys, int64_t E, int64_t n, int32_t* __restrict__ start) {
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < E; q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t kq = keys[q];
    const int64_t kp = q == 0 ? -1 : keys[q - 1];
    for (int64_t j = kp + 1; j <= kq; ++j) start[j] = int32_t(q);
    if (q == E - 1)
      for (int64_t j = kq + 1; j <= n; ++j) start[j] = int32_t(E);
  }
}

// The token row of entry p: S entries are [B, k] row-major, T entries (gather path) [B, kcap]
// after them. 32-bit division: p < E < 2^31 (the entry lists are indexed by int32).
__device__ __forceinline__ int32_t entry_row(int32_t p, int32_t Bk, int32_t k, int32_t kcap) {
  return p < Bk ? p / k : (p - Bk) / kcap;
}

// dW_dec[j] = sum over j's entries of w[p] * (g or ga)[row(p)], plus (dense AuxK) row pos_of[j] of
// dWd_dead [ndc, d] for a dead latent. One warp per latent. The warp loads 32 of its entries at a
// time into registers (lane t: entry t's row, weight and source) and broadcasts them with
// shuffles, so the loop over entries issues only the g/ga row loads, kDecCols independent
// coalesced ones per entry (L2-resident rows: B x d_in floats). Adds the squared norm to M->sumsq
// (kStore, kNorm; kNorm skips a latent with no entries and no dead row: its row is 0).
constexpr int kDecCols = 8;  // column groups of 32 per pass: 256 columns
template <int kMode>
__global__ void grad_dec_kernel(const int32_t* __restrict__ start, const int32_t* __restrict__ order,
                                const float* __restrict__ w, const float* __restrict__ g, const float* __restrict__ ga,
                                int64_t B, int64_t d, int64_t n, int64_t k, int64_t kcap,
                                const int32_t* __restrict__ pos_of, const float* __restrict__ dWd_dead,
                                float* __restrict__ dW_dec, AdamBlock blk, DevMetrics* M) {
  const int lane = threadIdx.x & 31;
  const int64_t j = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int32_t Bk = int32_t(B * k);
  AdamCoef a{};
  if constexpr (kMode == kAdam) a = adam_coef(blk.a, blk.C);
  float sq = 0.f;
  if (j < n) {  // uniform over the warp
    const int32_t q0 = start[j], q1 = start[j + 1];
    const int64_t r = pos_of != nullptr ? pos_of[j] : -1;
    const float* extra = r >= 0 ? dWd_dead + r * d : nullptr;
    const bool zero_row = kMode == kNorm && q0 == q1 && extra == nullptr;  // adds nothing to the norm
    for (int64_t c0 = 0; !zero_row && c0 < d; c0 += 32 * kDecCols) {
      float acc[kDecCols];
#pragma unroll
      for (int t = 0; t < kDecCols; ++t) acc[t] = 0.f;
      for (int32_t qb = q0; qb < q1; qb += 32) {
        // This lane's entry of the chunk: the source row's offset and the weight (0 past the end).
        const int32_t q = qb + lane;
        int64_t off = 0;
        float cw = 0.f;
        bool isS = true;
        if (q < q1) {
          const int32_t p = order[q];
          isS = p < Bk;
          off = int64_t(entry_row(p, Bk, int32_t(k), int32_t(kcap))) * d;
          cw = w[p];
        }
        const int m = min(32, int(q1 - qb));
        for (int e = 0; e < m; ++e) {
          const int64_t oe = __shfl_sync(0xffffffffu, off, e);
          const float we = __shfl_sync(0xffffffffu, cw, e);
          const bool se = __shfl_sync(0xffffffffu, int(isS), e) != 0;
          const float* src = (se ? g : ga) + oe;
#pragma unroll
          for (int t = 0; t < kDecCols; ++t) {
            const int64_t c = c0 + lane + 32 * t;
            if (c < d) acc[t] += we * src[c];
          }
        }
      }
#pragma unroll
      for (int t = 0; t < kDecCols; ++t) {
        const int64_t c = c0 + lane + 32 * t;
        if (c < d) {
          const float v = extra != nullptr ? acc[t] + extra[c] : acc[t];
          if constexpr (kMode == kAdam) {
            adam_at(blk, j * d + c, v, a);
          } else {
            if constexpr (kMode == kStore) __stcs(&dW_dec[j * d + c], v);  // evict-first: keeps g / ga (read per entry) in L2
            sq += v * v;
          }
        }
      }
    }
  }
  if constexpr (kMode != kAdam) {
    const double s = block_sum(double(sq));
    if (threadIdx.x == 0) atomicAdd(&M->sumsq, s);
  }
}

// dW_enc[:, j] = sum over j's entries of dh[p] * u[row(p)], db_enc[j] = sum dh[p], plus (dense
// AuxK) row pos_of[j] of dWe_dead [ndc, d] (the transpose of dW_enc's dead columns) and entry
// pos_of[j] of dbe_dead [ndc] for a dead latent. A block of (32, 8) threads owns 32 latents, whose
// entries are one contiguous range of the sorted order: staged once in shared memory (row, dh)
// when they fit (kEncStage), else read from global memory in each pass. Warp y handles latents y,
// y+8, y+16, y+24, kEncCols column groups of 32 per pass (independent coalesced loads of u's
// L2-resident rows); the results pass through a shared tile so the [d_in, d_sae] writes are
// coalesced along j. kNorm writes db_enc and the norm only (and skips dW_enc's columns of a block
// with no entries and no dead latent: they are 0); kAdam updates W_enc's block only (b_enc's
// update runs on the db_enc kNorm wrote: adam_range).
constexpr int kEncCols = 4;      // column groups of 32 per pass: 128 columns
constexpr int kEncStage = 2048;  // entries of a block's 32 latents staged in shared memory
template <int kMode>
__global__ void __launch_bounds__(256) grad_enc_kernel(const int32_t* __restrict__ start, const int32_t* __restrict__ order,
                                const float* __restrict__ dh, const float* __restrict__ u, int64_t B, int64_t d, int64_t n,
                                int64_t k, int64_t kcap, const int32_t* __restrict__ pos_of,
                                const float* __restrict__ dWe_dead, const float* __restrict__ dbe_dead,
                                float* __restrict__ dW_enc, float* __restrict__ db_enc, AdamBlock blk, DevMetrics* M) {
  __shared__ float tile[32][32 * kEncCols + 1];  // [latent][column of the pass]
  __shared__ int32_t s_row[kEncStage];
  __shared__ float s_dh[kEncStage];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 32 + tx;
  const int64_t j0 = int64_t(blockIdx.x) * 32;
  const int64_t jn = min(n, j0 + 32);
  const int32_t Bk = int32_t(B * k);
  const int32_t qa = start[j0], qz = start[jn];
  const bool staged = qz - qa <= kEncStage;  // uniform over the block
  if (staged)
    for (int32_t q = qa + tid; q < qz; q += 256) {
      const int32_t p = order[q];
      s_row[q - qa] = entry_row(p, Bk, int32_t(k), int32_t(kcap));
      s_dh[q - qa] = dh[p];
    }
  __syncthreads();
  AdamCoef a{};
  if constexpr (kMode == kAdam) a = adam_coef(blk.a, blk.C);
  float sq = 0.f;
  // db_enc (lanes stride over the entries, then a warp sum)
  for (int l = ty; kMode != kAdam && l < 32; l += 8) {
    const int64_t j = j0 + l;
    if (j >= n) break;
    float acc = 0.f;
    for (int32_t q = start[j] + tx; q < start[j + 1]; q += 32) acc += staged ? s_dh[q - qa] : dh[order[q]];
    acc = warp_sum(acc);
    if (tx == 0) {
      const int32_t r = pos_of != nullptr ? pos_of[j] : -1;
      if (r >= 0) acc += dbe_dead[r];
      db_enc[j] = acc;
      sq += acc * acc;
    }
  }
  bool zero_cols = false;  // kNorm: no entries and no dead latent among the 32 (uniform)
  if constexpr (kMode == kNorm) {
    zero_cols = qa == qz;
    if (pos_of != nullptr)
      for (int64_t j = j0; zero_cols && j < jn; ++j) zero_cols = pos_of[j] < 0;
  }
  for (int64_t i0 = 0; !zero_cols && i0 < d; i0 += 32 * kEncCols) {
    for (int l = ty; l < 32; l += 8) {
      const int64_t j = j0 + l;
      float acc[kEncCols];
#pragma unroll
      for (int t = 0; t < kEncCols; ++t) acc[t] = 0.f;
      if (j < n) {
        const int32_t q1 = start[j + 1];
        for (int32_t q = start[j]; q < q1; ++q) {
          int32_t row;
          float v;
          if (staged) {
            row = s_row[q - qa];
            v = s_dh[q - qa];
          } else {
            const int32_t p = order[q];
            row = entry_row(p, Bk, int32_t(k), int32_t(kcap));
            v = dh[p];
          }
          const float* ur = u + int64_t(row) * d + i0 + tx;
#pragma unroll
          for (int t = 0; t < kEncCols; ++t)
            if (i0 + tx + 32 * t < d) acc[t] += v * ur[32 * t];
        }
        const int64_t r = pos_of != nullptr ? pos_of[j] : -1;
        if (r >= 0)
#pragma unroll
          for (int t = 0; t < kEncCols; ++t)
            if (i0 + tx + 32 * t < d) acc[t] += dWe_dead[r * d + i0 + tx + 32 * t];  // coalesced along tx
      }
#pragma unroll
      for (int t = 0; t < kEncCols; ++t) tile[l][tx + 32 * t] = acc[t];
    }
    __syncthreads();
    // Rows i0 .. i0 + 32*kEncCols of dW_enc, 32 latents each: warp y writes rows y, y+8, ...
    for (int rr = ty; rr < 32 * kEncCols; rr += 8) {
      const int64_t i = i0 + rr;
      const int64_t j = j0 + tx;
      if (i < d && j < n) {
        const float v = tile[tx][rr];
        if constexpr (kMode == kAdam) {
          const float p = adam_at(blk, i * n + j, v, a);
          if (blk.w16 != nullptr) reinterpret_cast<__nv_bfloat16*>(blk.w16)[i * n + j] = __float2bfloat16_rn(p);
        } else {
          if constexpr (kMode == kStore) __stcs(&dW_enc[i * n + j], v);  // evict-first: keeps u (read per entry) in L2
          sq += v * v;
        }
      }
    }
    __syncthreads();
  }
  if constexpr (kMode != kAdam) {
    const double s = detail::block_sum_32xrows<8>(double(sq));
    if (tx == 0 && ty == 0) atomicAdd(&M->sumsq, s);
  }
}

}  // namespace

EntryArrays carve_entries(float* base, int64_t per) {
  EntryArrays e;
  e.w = base;
  e.dh = base + per;
  e.keys = reinterpret_cast<int32_t*>(base + 2 * per);
  e.keys2 = reinterpret_cast<int32_t*>(base + 3 * per);
  e.vals = reinterpret_cast<int32_t*>(base + 4 * per);
  e.vals2 = reinterpret_cast<int32_t*>(base + 5 * per);
  return e;
}

void dz_rows(cudaStream_t st, const float* W_dec, const float* g, const float* ga, const int32_t* idxS,
             const float* hS, const int32_t* idxT, const float* hT, int64_t B, int64_t d, int64_t k, int64_t kT,
             const StepControl* C, const EntryArrays& ea) {
  const size_t smem = size_t(2 * d) * 4;
  if (smem > 48 * 1024)
    CUDA_CHECK(cudaFuncSetAttribute(dz_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  dz_kernel<<<unsigned(B), kThreads, smem, st>>>(W_dec, g, ga, idxS, hS, idxT, hT, B, d, k, kT, C, ea.w, ea.dh);
  CUDA_CHECK_LAUNCH();
}

void dz_slabs(cudaStream_t st, int tpt, const float* W_dec, const float* g, const int32_t* idxS, const float* hS,
              int64_t B, int64_t d, int64_t k, int64_t slabs, float* part, const EntryArrays& ea) {
  switch (tpt) {
    case 16: launch_dz_partial<16>(st, W_dec, g, idxS, B, d, k, slabs, part); break;
    case 32: launch_dz_partial<32>(st, W_dec, g, idxS, B, d, k, slabs, part); break;
    case 64: launch_dz_partial<64>(st, W_dec, g, idxS, B, d, k, slabs, part); break;
    case 128: launch_dz_partial<128>(st, W_dec, g, idxS, B, d, k, slabs, part); break;
    default: TOPKSAE_CHECK(false, "dz_slabs: threads per row ", tpt, " must be 16, 32, 64 or 128");
  }
  dz_finish_kernel<<<detail::grid_for(B * k, kThreads), kThreads, 0, st>>>(part, slabs, hS, B * k, ea.w, ea.dh);
  CUDA_CHECK_LAUNCH();
}

size_t sort_entries_tmp_bytes(int64_t count, int sort_bits) {
  cub::DoubleBuffer<int32_t> dk(nullptr, nullptr), dv(nullptr, nullptr);
  size_t t = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, t, dk, dv, count, 0, sort_bits, cudaStream_t(0)));
  return t;
}

const int32_t* sort_entries(cudaStream_t st, const int32_t* idxS, const int32_t* idxT, int64_t B, int64_t k,
                            int64_t kT, int64_t n, int sort_bits, const StepControl* C, void* tmp, size_t tmp_bytes,
                            const EntryArrays& ea, int32_t* start) {
  const int64_t E = B * (k + kT);
  keys_kernel<<<detail::grid_for(E, kThreads), kThreads, 0, st>>>(idxS, idxT, B, k, kT, n, C, ea.keys, ea.vals);
  CUDA_CHECK_LAUNCH();
  cub::DoubleBuffer<int32_t> dk(ea.keys, ea.keys2), dv(ea.vals, ea.vals2);
  size_t t = tmp_bytes;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp, t, dk, dv, E, 0, sort_bits, st));
  offsets_kernel<<<detail::grid_for(E, kThreads), kThreads, 0, st>>>(dk.Current(), E, n, start);
  CUDA_CHECK_LAUNCH();
  return dv.Current();
}

void grad_dec(cudaStream_t st, const int32_t* start, const int32_t* order, const float* w, const float* g,
              const float* ga, int64_t B, int64_t d, int64_t n, int64_t k, int64_t kT, const int32_t* pos_of,
              const float* dWd_dead, float* dW_dec, DevMetrics* M) {
  grad_dec_kernel<kStore><<<detail::grid_for(n * 32, kThreads, INT32_MAX), kThreads, 0, st>>>(
      start, order, w, g, ga, B, d, n, k, kT, pos_of, dWd_dead, dW_dec, AdamBlock{}, M);
  CUDA_CHECK_LAUNCH();
}

void grad_dec_fused(cudaStream_t st, FusedPass pass, const int32_t* start, const int32_t* order, const float* w,
                    const float* g, const float* ga, int64_t B, int64_t d, int64_t n, int64_t k, int64_t kT,
                    const int32_t* pos_of, const float* dWd_dead, const AdamBlock& blk, DevMetrics* M) {
  const unsigned grid = detail::grid_for(n * 32, kThreads, INT32_MAX);
  if (pass == FusedPass::norm)
    grad_dec_kernel<kNorm><<<grid, kThreads, 0, st>>>(start, order, w, g, ga, B, d, n, k, kT, pos_of, dWd_dead,
                                                      nullptr, AdamBlock{}, M);
  else
    grad_dec_kernel<kAdam><<<grid, kThreads, 0, st>>>(start, order, w, g, ga, B, d, n, k, kT, pos_of, dWd_dead,
                                                      nullptr, blk, M);
  CUDA_CHECK_LAUNCH();
}

void grad_enc(cudaStream_t st, const int32_t* start, const int32_t* order, const float* dh, const float* u, int64_t B,
              int64_t d, int64_t n, int64_t k, int64_t kT, const int32_t* pos_of, const float* dWe_dead,
              const float* dbe_dead, float* dW_enc, float* db_enc, DevMetrics* M) {
  grad_enc_kernel<kStore><<<unsigned((n + 31) / 32), dim3{32u, 8u, 1u}, 0, st>>>(
      start, order, dh, u, B, d, n, k, kT, pos_of, dWe_dead, dbe_dead, dW_enc, db_enc, AdamBlock{}, M);
  CUDA_CHECK_LAUNCH();
}

void grad_enc_fused(cudaStream_t st, FusedPass pass, const int32_t* start, const int32_t* order, const float* dh,
                    const float* u, int64_t B, int64_t d, int64_t n, int64_t k, int64_t kT, const int32_t* pos_of,
                    const float* dWe_dead, const float* dbe_dead, float* db_enc, const AdamBlock& blk, DevMetrics* M) {
  const dim3 grid{unsigned((n + 31) / 32), 1u, 1u}, block{32u, 8u, 1u};
  if (pass == FusedPass::norm)
    grad_enc_kernel<kNorm><<<grid, block, 0, st>>>(start, order, dh, u, B, d, n, k, kT, pos_of, dWe_dead, dbe_dead,
                                                   nullptr, db_enc, AdamBlock{}, M);
  else
    grad_enc_kernel<kAdam><<<grid, block, 0, st>>>(start, order, dh, u, B, d, n, k, kT, pos_of, dWe_dead, dbe_dead,
                                                   nullptr, nullptr, blk, M);
  CUDA_CHECK_LAUNCH();
}

void grad_bias_dec(Context& ctx, const float* g, const float* ga, int64_t B, int64_t d, bool apply_b_dec,
                   const float* W_enc, const float* db_enc, int64_t n, float* db_dec) {
  column_sums(detail::stream(ctx), g, ga, B, d, 1.0, nullptr, db_dec);
  if (apply_b_dec) {
    const float alpha = -1.f, beta = 1.f;
    CUBLAS_CHECK(cublasSgemv(detail::cublas(ctx), CUBLAS_OP_T, int(n), int(d), &alpha, W_enc, int(n), db_enc, 1, &beta,
                             db_dec, 1));
  }
}

}  // namespace topksae::cuda::train
