// The CUDA twin of cpu::train_step (shared/spec/MATH.md, "Training forward", "Backward",
// "Optimiser step", "Dead latents"). One dense GEMM (u @ W_enc, run in chunks of rows with the
// selections on each chunk's h, so h never holds the whole batch: TrainStepOptions::encode_rows);
// everything after it touches only the k (+k_aux) selected latents per token:
//   * per-entry scalars (w = z or za, dh) by row dot products with W_dec rows,
//   * the entries regrouped by latent with a stable radix sort (deterministic sums, no atomics on
//     the gradients), then dW_dec rows (warp per latent) and dW_enc columns + db_enc (a tile of
//     32 latents per block, written coalesced in the [d_in, d_sae] layout),
//   * db_dec = sum_b g_b + sum_b ga_b - a * W_enc @ db_enc  (sum_b du_b = W_enc @ db_enc).
// AuxK (k_aux = d_in/2 latents among the dead, per token) runs one of two ways, picked per step:
//   * dense (the default): the dead latents are compacted into a [B, nd] sub-problem (nd = a host
//     bound on the dead count, DeadBound in src/train/dead_bound.h) and its four products (the aux
//     decode, dza, dW_dec and dW_enc of the dead rows/columns) are cuBLAS GEMMs; the top-k over the
//     dead runs on the compacted [B, nd] pre-activations instead of the full h;
//   * gather: the T entries join the sorted entry lists like the main top-k's, used when the bound
//     exceeds the dense capacity (many dead latents) or when the capacity is 0.
// Dead count, AuxK's k and scale, the clip factor and the metrics stay on the device; the host
// never waits inside a step (only, at most, for the step kLag+1 back, to bound the dead count).
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>
#include <cuda_bf16.h>

#include <cmath>
#include <deque>
#include <optional>

#include "cuda_internal.h"
#include "topksae/train_cuda.h"
#include "train/dead_bound.h"

namespace topksae::cuda {

namespace {

// Everything a step computes on the device for its metrics; zeroed at the start of each step,
// copied to pinned memory at its end.
struct DevMetrics {
  double mse_sum, aux_sum, tv_sum, nnz;  // sums over rows
  double sumsq;                          // squared norm of all four gradients
  double grad_norm;
  double log10_sparsity_sum;
  unsigned long long n_dead_before, dead_after, since_sum, below5, below6;
  unsigned long long near_dead;  // #{since > window - DeadBound::kLag} after this step's update
  double aux_scale;
  int32_t k_aux;
  int32_t aux_overflow;  // the dead count exceeded the host's bound (a bug): the host throws
  float clip;
};

constexpr int kThreads = 256;

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_sumf(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Block-wide sum (blockDim.x a multiple of 32, <= 1024); the result is valid in thread 0.
__device__ double block_sum(double v) {
  __shared__ double part[32];
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();  // part[] may still be read by a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  double s = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < int(blockDim.x >> 5); ++w) s += part[w];
  return s;
}

// ---- bookkeeping ----------------------------------------------------------------------------
__global__ void sparsity_kernel(const long long* __restrict__ act_freq, int64_t n, double n_frac, DevMetrics* M) {
  double lsum = 0;
  unsigned long long b5 = 0, b6 = 0;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    // float32 as sae_lens (and the CPU twin): act_freq / n_frac_active, then log10(x + 1e-10).
    const float dens = n_frac > 0 ? float(act_freq[j]) / float(n_frac) : NAN;
    lsum += double(log10f(dens + 1e-10f));
    b5 += dens < 1e-5f;
    b6 += dens < 1e-6f;
  }
  const double s = block_sum(lsum);
  const double c5 = block_sum(double(b5));
  const double c6 = block_sum(double(b6));
  if (threadIdx.x == 0) {
    atomicAdd(&M->log10_sparsity_sum, s);
    atomicAdd(&M->below5, (unsigned long long)c5);
    atomicAdd(&M->below6, (unsigned long long)c6);
  }
}

// dead [n] as bytes (the top-k mask) and as int32 (the compaction's scan input).
__global__ void dead_kernel(const long long* __restrict__ since, int64_t n, long long window, uint8_t* __restrict__ dead,
                            int32_t* __restrict__ dead32, DevMetrics* M) {
  unsigned long long c = 0;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    const bool d = since[j] > window;
    dead[j] = d;
    dead32[j] = d;
    c += d;
  }
  const double s = block_sum(double(c));
  if (threadIdx.x == 0 && s > 0) atomicAdd(&M->n_dead_before, (unsigned long long)s);
}

// AuxK's size and scale from the dead count, on the device (MATH.md: k_aux = d_in // 2,
// scale = min(n_dead / k_aux, 1), k_aux = min(k_aux, n_dead)). `bound` is the host's bound on
// n_dead that sized this step's AuxK buffers; exceeding it is flagged (and never overruns them).
__global__ void aux_params_kernel(int64_t half_d, long long bound, DevMetrics* M) {
  const unsigned long long nd = M->n_dead_before;
  if ((long long)nd > bound) M->aux_overflow = 1;
  if (half_d <= 0 || nd == 0) {
    M->k_aux = 0;
    M->aux_scale = 0.0;
    return;
  }
  M->k_aux = int32_t(nd < (unsigned long long)half_d ? nd : half_d);
  const double s = double(nd) / double(half_d);
  M->aux_scale = s < 1.0 ? s : 1.0;
}

__global__ void prep_kernel(const float* __restrict__ x, float s, const float* __restrict__ b_dec, int64_t total, int64_t d,
                            float* __restrict__ u) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const float xs = s * x[i];
    u[i] = b_dec ? xs - b_dec[i % d] : xs;
  }
}

__global__ void relu_kernel(const float* __restrict__ h, float* __restrict__ z, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = h[i];
    z[i] = v < 0.f ? 0.f : v;
  }
}

// out[c] = post * sum_b (A[b,c] + A2[b,c]) for c < d; double accumulation, deterministic (a fixed
// summation order). A block of (kColsumCols, kColsumRows) threads covers kColsumCols columns: a
// warp reads 4 rows x 32 bytes (whole sectors), and d / 8 blocks keep every SM busy at d_in 2304
// (32-column blocks gave only 72). Writes the double and/or float result.
constexpr int kColsumCols = 8, kColsumRows = 128;
__global__ void __launch_bounds__(kColsumCols * kColsumRows)
    colsum_kernel(const float* __restrict__ A, const float* __restrict__ A2, int64_t B, int64_t d, double post,
                  double* __restrict__ outd, float* __restrict__ outf) {
  __shared__ double part[kColsumRows][kColsumCols + 1];
  const int64_t c = int64_t(blockIdx.x) * kColsumCols + threadIdx.x;
  double s = 0;
  if (c < d)
    for (int64_t b = threadIdx.y; b < B; b += kColsumRows) {
      s += A[b * d + c];
      if (A2) s += A2[b * d + c];
    }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  // Tree over the row groups, the same order every time.
  for (int h = kColsumRows / 2; h > 0; h >>= 1) {
    if (int(threadIdx.y) < h) part[threadIdx.y][threadIdx.x] += part[threadIdx.y + h][threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.y == 0 && c < d) {
    const double t = part[0][threadIdx.x] * post;
    if (outd) outd[c] = t;
    if (outf) outf[c] = float(t);
  }
}
void launch_colsum(cudaStream_t st, const float* A, const float* A2, int64_t B, int64_t d, double post, double* outd,
                   float* outf) {
  const dim3 grid{unsigned((d + kColsumCols - 1) / kColsumCols), 1u, 1u}, block{kColsumCols, kColsumRows, 1u};
  colsum_kernel<<<grid, block, 0, st>>>(A, A2, B, d, post, outd, outf);
  CUDA_CHECK_LAUNCH();
}

// Per row: the MSE residual and its gradient g, the AuxK residual and its gradient ga, and the
// row sums the metrics need. stats[b] = {||xhat-xs||^2, ||ehat-r||^2, ||xs-mu||^2, nnz(z_b)}.
__global__ void loss_rows_kernel(const float* __restrict__ x, float s, const float* __restrict__ xhat,
                                 const float* __restrict__ ehat, const double* __restrict__ mu, const float* __restrict__ z,
                                 int64_t B, int64_t d, int64_t k, double aux_coef, const DevMetrics* __restrict__ M,
                                 float* __restrict__ g, float* __restrict__ ga, double* __restrict__ stats) {
  const int64_t b = blockIdx.x;
  const float gcoef = float(2.0 / double(B));
  const float gacoef = ehat ? float(2.0 * aux_coef * M->aux_scale / double(B)) : 0.f;
  double mse = 0, aux = 0, tv = 0;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const int64_t i = b * d + c;
    const float xs = s * x[i];
    const float diff = xhat[i] - xs;
    mse += double(diff) * diff;
    g[i] = gcoef * diff;
    const double t = double(xs) - mu[c];
    tv += t * t;
    if (ehat) {
      const float e = ehat[i] - (xs - xhat[i]);  // ehat - r, r = stopgrad(xs - xhat)
      aux += double(e) * e;
      ga[i] = gacoef * e;
    } else {
      ga[i] = 0.f;
    }
  }
  double nz = 0;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x) nz += z[b * k + i] != 0.f;
  mse = block_sum(mse);
  aux = block_sum(aux);
  tv = block_sum(tv);
  nz = block_sum(nz);
  if (threadIdx.x == 0) {
    stats[b * 4 + 0] = mse;
    stats[b * 4 + 1] = aux;
    stats[b * 4 + 2] = tv;
    stats[b * 4 + 3] = nz;
  }
}

__global__ void reduce_rows_kernel(const double* __restrict__ stats, int64_t B, DevMetrics* M) {
  double a[4] = {0, 0, 0, 0};
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x)
    for (int q = 0; q < 4; ++q) a[q] += stats[b * 4 + q];
  for (int q = 0; q < 4; ++q) a[q] = block_sum(a[q]);
  if (threadIdx.x == 0) {
    M->mse_sum = a[0];
    M->aux_sum = a[1];
    M->tv_sum = a[2];
    M->nnz = a[3];
  }
}

__global__ void fire_kernel(const int32_t* __restrict__ idx, const float* __restrict__ z, int64_t total,
                            uint8_t* __restrict__ fired, unsigned long long* __restrict__ act_freq) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    if (z[i] != 0.f) {
      const int32_t j = idx[i];
      fired[j] = 1;
      atomicAdd(&act_freq[j], 1ull);
    }
}

__global__ void since_kernel(long long* __restrict__ since, uint8_t* __restrict__ fired, int64_t n, long long window,
                             DevMetrics* M) {
  double dead = 0, sum = 0, near = 0;
  const long long near_window = window - train_detail::DeadBound::kLag;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    const long long v = fired[j] ? 0 : since[j] + 1;
    since[j] = v;
    fired[j] = 0;
    dead += v > window;
    near += v > near_window;
    sum += double(v);
  }
  dead = block_sum(dead);
  sum = block_sum(sum);
  near = block_sum(near);
  if (threadIdx.x == 0) {
    atomicAdd(&M->dead_after, (unsigned long long)dead);
    atomicAdd(&M->since_sum, (unsigned long long)sum);
    atomicAdd(&M->near_dead, (unsigned long long)near);
  }
}

// ---- AuxK as a dense sub-problem over the dead latents -----------------------------------------
// pos [n] is the exclusive scan of dead32. dead_list [ndc] = the dead latents in index order
// (pre-filled with -1: the padding), pos_of [n] = a latent's compact position or -1.
__global__ void compact_dead_kernel(const int32_t* __restrict__ dead32, const int32_t* __restrict__ pos, int64_t n,
                                    int64_t ndc, int32_t* __restrict__ dead_list, int32_t* __restrict__ pos_of,
                                    DevMetrics* M) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    int32_t r = -1;
    if (dead32[j]) {
      if (pos[j] < ndc) {
        r = pos[j];
        dead_list[r] = int32_t(j);
      } else {
        M->aux_overflow = 1;  // never write past the buffers; the host reports it
      }
    }
    pos_of[j] = r;
  }
}

// Hc [B, ndc] = h[b, dead_list[r]] + b_enc[dead_list[r]] (the same float add as the fused top-k),
// -inf in the padding (never selected: k_aux <= n_dead, and index order breaks ties at -inf).
__global__ void gather_dead_cols_kernel(const float* __restrict__ h, const float* __restrict__ b_enc,
                                        const int32_t* __restrict__ dead_list, int64_t B, int64_t n, int64_t ndc,
                                        float* __restrict__ Hc) {
  const int64_t total = B * ndc;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / ndc, r = i - b * ndc;
    const int32_t j = dead_list[r];
    Hc[i] = j >= 0 ? h[b * n + j] + b_enc[j] : -INFINITY;
  }
}

// Zd [B, ndc] (zeroed before): Zd[b, rT[b, i]] = hT[b, i] for the row's first k_aux picks.
__global__ void scatter_aux_kernel(const int32_t* __restrict__ rT, const float* __restrict__ hT, int64_t B, int64_t kc,
                                   int64_t ndc, const DevMetrics* __restrict__ M, float* __restrict__ Zd) {
  const int64_t k_aux = M->k_aux;  // rows hold kc picks; i < kc below keeps a wrong k_aux in bounds
  const int64_t total = B * kc;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < total; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = p / kc, i = p - b * kc;
    if (i < k_aux) Zd[b * ndc + rT[p]] = hT[p];
  }
}

// X [ndc, d] = W_dec[dead_list[r]], zero rows for the padding.
__global__ void gather_dead_rows_kernel(const float* __restrict__ W_dec, const int32_t* __restrict__ dead_list,
                                        int64_t ndc, int64_t d, float* __restrict__ X) {
  const int64_t total = ndc * d;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / d, c = i - r * d;
    const int32_t j = dead_list[r];
    X[i] = j >= 0 ? W_dec[int64_t(j) * d + c] : 0.f;
  }
}

// G [B, ndc] holds ga @ W_dec[dead]^T; keep only the row's selected AuxK entries (dza: the
// gradient reaches hidden_pre only through the scatter of the top-k_aux), zero the rest.
// One block per row; the kept values pass through shared memory [kc].
__global__ void mask_aux_grad_kernel(const int32_t* __restrict__ rT, int64_t kc, int64_t ndc,
                                     const DevMetrics* __restrict__ M, float* __restrict__ G) {
  extern __shared__ float keep[];
  const int64_t b = blockIdx.x;
  // k_aux <= kc unless the host's bound was wrong (aux_overflow, reported by the host): never
  // index past keep[] or the row's kc picks even then.
  const int64_t k_aux = M->k_aux < kc ? int64_t(M->k_aux) : kc;
  float* row = G + b * ndc;
  const int32_t* r = rT + b * kc;
  for (int64_t i = threadIdx.x; i < k_aux; i += blockDim.x) keep[i] = row[r[i]];
  __syncthreads();
  for (int64_t c = threadIdx.x; c < ndc; c += blockDim.x) row[c] = 0.f;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < k_aux; i += blockDim.x) row[r[i]] = keep[i];
}

// ---- backward -----------------------------------------------------------------------------------
// Entry p: S entries p = b*k + i (i < k); T entries p = B*k + b*kcap + i (i < k_aux).
// w[p] = z (S) or za (T): the dW_dec coefficient; dh[p] = dz*[h>0] (S) or dza (T).
// One block per row; g_b and ga_b staged in shared memory; one warp per entry dot product.
__global__ void dz_kernel(const float* __restrict__ W_dec, const float* __restrict__ g, const float* __restrict__ ga,
                          const int32_t* __restrict__ idxS, const float* __restrict__ hS, const int32_t* __restrict__ idxT,
                          const float* __restrict__ hT, int64_t B, int64_t d, int64_t k, int64_t kcap,
                          const DevMetrics* __restrict__ M, float* __restrict__ w, float* __restrict__ dh) {
  extern __shared__ float sh[];  // [2 * d]
  const int64_t b = blockIdx.x;
  const int k_aux = kcap > 0 ? M->k_aux : 0;
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
    acc = warp_sumf(acc);
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
      acc = warp_sumf(acc);  // TPT/32 warps per token: combine them through shared memory
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
#pragma unroll
      for (int o = TPT / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
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
                            int64_t kcap, int64_t n, const DevMetrics* __restrict__ M, int32_t* __restrict__ keys,
                            int32_t* __restrict__ vals) {
  const int64_t E = B * (k + kcap);
  const int k_aux = kcap > 0 ? M->k_aux : 0;
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
// coalesced ones per entry (L2-resident rows: B x d_in floats). Adds the squared norm to M->sumsq.
constexpr int kDecCols = 8;  // column groups of 32 per pass: 256 columns
__global__ void grad_dec_kernel(const int32_t* __restrict__ start, const int32_t* __restrict__ order,
                                const float* __restrict__ w, const float* __restrict__ g, const float* __restrict__ ga,
                                int64_t B, int64_t d, int64_t n, int64_t k, int64_t kcap,
                                const int32_t* __restrict__ pos_of, const float* __restrict__ dWd_dead,
                                float* __restrict__ dW_dec, DevMetrics* M) {
  const int lane = threadIdx.x & 31;
  const int64_t j = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int32_t Bk = int32_t(B * k);
  float sq = 0.f;
  if (j < n) {  // uniform over the warp
    const int32_t q0 = start[j], q1 = start[j + 1];
    const int64_t r = pos_of != nullptr ? pos_of[j] : -1;
    const float* extra = r >= 0 ? dWd_dead + r * d : nullptr;
    for (int64_t c0 = 0; c0 < d; c0 += 32 * kDecCols) {
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
          __stcs(&dW_dec[j * d + c], v);  // evict-first: keeps g / ga (read per entry) in L2
          sq += v * v;
        }
      }
    }
  }
  const double s = block_sum(double(sq));
  if (threadIdx.x == 0) atomicAdd(&M->sumsq, s);
}

// dW_enc[:, j] = sum over j's entries of dh[p] * u[row(p)], db_enc[j] = sum dh[p], plus (dense
// AuxK) row pos_of[j] of dWe_dead [ndc, d] (the transpose of dW_enc's dead columns) and entry
// pos_of[j] of dbe_dead [ndc] for a dead latent. A block of (32, 8) threads owns 32 latents, whose
// entries are one contiguous range of the sorted order: staged once in shared memory (row, dh)
// when they fit (kEncStage), else read from global memory in each pass. Warp y handles latents y,
// y+8, y+16, y+24, kEncCols column groups of 32 per pass (independent coalesced loads of u's
// L2-resident rows); the results pass through a shared tile so the [d_in, d_sae] writes are
// coalesced along j.
constexpr int kEncCols = 4;      // column groups of 32 per pass: 128 columns
constexpr int kEncStage = 2048;  // entries of a block's 32 latents staged in shared memory
__global__ void __launch_bounds__(256) grad_enc_kernel(const int32_t* __restrict__ start, const int32_t* __restrict__ order,
                                const float* __restrict__ dh, const float* __restrict__ u, int64_t B, int64_t d, int64_t n,
                                int64_t k, int64_t kcap, const int32_t* __restrict__ pos_of,
                                const float* __restrict__ dWe_dead, const float* __restrict__ dbe_dead,
                                float* __restrict__ dW_enc, float* __restrict__ db_enc, DevMetrics* M) {
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
  float sq = 0.f;
  // db_enc (lanes stride over the entries, then a warp sum)
  for (int l = ty; l < 32; l += 8) {
    const int64_t j = j0 + l;
    if (j >= n) break;
    float acc = 0.f;
    for (int32_t q = start[j] + tx; q < start[j + 1]; q += 32) acc += staged ? s_dh[q - qa] : dh[order[q]];
    acc = warp_sumf(acc);
    if (tx == 0) {
      const int32_t r = pos_of != nullptr ? pos_of[j] : -1;
      if (r >= 0) acc += dbe_dead[r];
      db_enc[j] = acc;
      sq += acc * acc;
    }
  }
  for (int64_t i0 = 0; i0 < d; i0 += 32 * kEncCols) {
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
        __stcs(&dW_enc[i * n + j], v);  // evict-first: keeps u (read per entry) in L2
        sq += v * v;
      }
    }
    __syncthreads();
  }
  // block_sum needs a 1-D view of the block: flatten (tx, ty).
  double s = double(sq);
  s = warp_sum(s);
  __shared__ double part[8];
  if (tx == 0) part[ty] = s;
  __syncthreads();
  if (tx == 0 && ty == 0) {
    double t = 0;
    for (int r = 0; r < 8; ++r) t += part[r];
    atomicAdd(&M->sumsq, t);
  }
}

__global__ void sumsq_kernel(const float* __restrict__ a, int64_t n, DevMetrics* M) {
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    s += double(a[i]) * a[i];
  s = block_sum(s);
  if (threadIdx.x == 0) atomicAdd(&M->sumsq, s);
}

// torch clip_grad_norm_(max_norm=1): c = min(1, 1 / (N + 1e-6)).
__global__ void clip_kernel(DevMetrics* M) {
  const double N = sqrt(M->sumsq);
  M->grad_norm = N;
  const double c = kClipMaxNorm / (N + kClipEps);
  M->clip = float(c < 1.0 ? c : 1.0);
}

// torch.optim.Adam over the flat [W_enc | b_enc | W_dec | b_dec] arrays, the clip factor applied
// to the gradient first; refreshes the bf16 copy of W_enc (the first n_w16 entries) when given.
struct AdamCoef {
  float c, b1, b2, one_b1, one_b2, step_size, bc2_sqrt, eps;
};
// One parameter's update (the CPU twin's formula, operation for operation); returns the new value.
__device__ __forceinline__ float adam_one(float& p, float& m, float& v, float g, const AdamCoef& a) {
  const float gi = g * a.c;
  m = a.b1 * m + a.one_b1 * gi;
  v = a.b2 * v + a.one_b2 * (gi * gi);
  p = p - a.step_size * (m / (sqrtf(v) / a.bc2_sqrt + a.eps));
  return p;
}
// Adam is bandwidth-bound (28 bytes per parameter): float4 accesses for the first P/4*4
// parameters (the four arrays come from cudaMalloc, 16-byte aligned), then the tail one by one.
__global__ void adam_kernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                            const float* __restrict__ grad, int64_t P, const DevMetrics* __restrict__ M, float b1, float b2,
                            float one_b1, float one_b2, float step_size, float bc2_sqrt, float eps,
                            __nv_bfloat16* __restrict__ w16, int64_t n_w16) {
  const AdamCoef a{M->clip, b1, b2, one_b1, one_b2, step_size, bc2_sqrt, eps};
  const int64_t P4 = P / 4;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t t0 = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i4 = t0; i4 < P4; i4 += stride) {
    float4 pp = reinterpret_cast<float4*>(p)[i4], mm = reinterpret_cast<float4*>(m)[i4];
    float4 vv = reinterpret_cast<float4*>(v)[i4];
    const float4 gg = reinterpret_cast<const float4*>(grad)[i4];
    const float r0 = adam_one(pp.x, mm.x, vv.x, gg.x, a), r1 = adam_one(pp.y, mm.y, vv.y, gg.y, a);
    const float r2 = adam_one(pp.z, mm.z, vv.z, gg.z, a), r3 = adam_one(pp.w, mm.w, vv.w, gg.w, a);
    reinterpret_cast<float4*>(p)[i4] = pp;
    reinterpret_cast<float4*>(m)[i4] = mm;
    reinterpret_cast<float4*>(v)[i4] = vv;
    if (w16 != nullptr) {
      const int64_t i = 4 * i4;
      const float r[4] = {r0, r1, r2, r3};
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (i + e < n_w16) w16[i + e] = __float2bfloat16_rn(r[e]);
    }
  }
  for (int64_t i = 4 * P4 + t0; i < P; i += stride) {
    const float r = adam_one(p[i], m[i], v[i], grad[i], a);
    if (w16 != nullptr && i < n_w16) w16[i] = __float2bfloat16_rn(r);
  }
}

template <typename T>
T* as(DeviceBuffer& b) {
  return static_cast<T*>(b.data());
}
// Counts the bytes into *total; allocates them unless plan_only (TrainStep::planned_bytes).
DeviceBuffer alloc(size_t bytes, size_t* total, bool plan_only) {
  *total += bytes;
  if (plan_only) return DeviceBuffer();
  return DeviceBuffer(bytes == 0 ? 16 : bytes);
}
void upload(DeviceBuffer& dst, const void* src, size_t bytes) {
  topksae::detail::copy_bytes(dst.data(), Device::cuda, src, Device::cpu, bytes);
}
void download_bytes(void* dst, const DeviceBuffer& src, size_t bytes, size_t offset = 0) {
  topksae::detail::copy_bytes(dst, Device::cpu, static_cast<const char*>(src.data()) + offset, Device::cuda, bytes);
}

// The per-entry arrays of the backward (w, dh, sort keys and values, double-buffered), `per`
// entries each, carved from the arena.
struct EntryArrays {
  float* w;
  float* dh;
  int32_t *keys, *keys2, *vals, *vals2;
};
EntryArrays carve(float* base, int64_t per) {
  EntryArrays e;
  e.w = base;
  e.dh = base + per;
  e.keys = reinterpret_cast<int32_t*>(base + 2 * per);
  e.keys2 = reinterpret_cast<int32_t*>(base + 3 * per);
  e.vals = reinterpret_cast<int32_t*>(base + 4 * per);
  e.vals2 = reinterpret_cast<int32_t*>(base + 5 * per);
  return e;
}

enum class AuxPath { none, dense, gather };
}  // namespace

struct TrainStep::Impl {
  Context& ctx;
  TrainConfig cfg;
  Precision prec;
  int64_t d, n, k, kcap, half_d, Bmax, P;
  int64_t hrows = 0;    // rows per chunk of the forward's encoder GEMM + top-k (h holds one chunk)
  int64_t oWenc, oBenc, oWdec, oBdec;
  int64_t aux_cap = 0;  // dense AuxK capacity in latents (0: the gather path only)
  int slab_tpt = 0;     // dz_partial_kernel's threads per row (0: dz_kernel for the S entries too)
  int64_t slabs = 0;    // its column slabs: ceil(d / (4 * slab_tpt))
  double scaling = 1.0;
  std::optional<double> scaling_factor;  // as given (download returns it unchanged)
  int64_t step = 0, n_training_samples = 0, n_frac_active = 0;
  std::string data_position;
  size_t bytes = 0;
  int sort_bits = 1;
  train_detail::DeadBound bound;
  AuxPathCounts path_counts;

  DeviceBuffer param, grad, m, v, w16;      // [P] (w16: bf16 [d*n])
  DeviceBuffer u, u16, h;                   // [B,d], bf16 [B,d], [hrows,n] (dense AuxK: G [B,ndc] after top-k)
  DeviceBuffer idxS, hS, zS, idxT, hT;      // [B,k], [B,kcap] (dense AuxK: idxT holds compact positions)
  DeviceBuffer xhat, ehat, g, ga;           // [B,d]
  DeviceBuffer mu, stats;                   // double [d], double [B,4]
  // The arena: dense AuxK: [Hc / Zd: Bmax*aux_cap][6 entry arrays of Bmax*k];
  //            gather AuxK: [6 entry arrays of Bmax*(k+kcap)]; no AuxK: [6 entry arrays of Bmax*k].
  DeviceBuffer arena;
  DeviceBuffer start;                       // int32 [n+1]
  DeviceBuffer sort_tmp, scan_tmp;
  size_t sort_tmp_bytes = 0, scan_tmp_bytes = 0;
  DeviceBuffer dead, fired, since, act;     // [n]
  DeviceBuffer dead32, pos, pos_of;         // int32 [n]
  DeviceBuffer dead_list, dbe, X;           // int32 [aux_cap], f32 [aux_cap], f32 [aux_cap, d]
  DeviceBuffer part;                        // f32 [slabs, Bmax*k]: dz_partial_kernel's partial dots
  DeviceBuffer dm;                          // DevMetrics

  struct Pending {
    StepMetrics meta;
    int64_t B;
    cudaEvent_t ev;
    int slot;
  };
  HostBuffer ring;  // pinned DevMetrics [kMetricsRing]
  std::deque<Pending> pending;
  std::vector<StepMetrics> ready;  // finished early (ring full, or the dead-count bound needed them)
  std::vector<cudaEvent_t> events;
  int next_slot = 0;

  // st == nullptr: plan only (count the bytes every buffer would take, allocate and upload nothing).
  Impl(Context& c, const TrainConfig& cf, const TrainState* st, const TrainStepOptions& opts)
      : ctx(c), cfg(cf), prec(opts.precision),
        bound(st ? st->stats.since_fired : std::vector<int64_t>{}, cf.dead_feature_window, st ? st->step : 0) {
    const bool plan_only = st == nullptr;
    const int64_t max_batch = opts.max_batch, aux_dense_cap = opts.aux_dense_cap;
    const int slab_threads_arg = opts.slab_threads;
    cfg.validate();
    // The kernels below implement the 6.13.1 math only; selecting on h * ||W_dec[j]|| would need
    // the decoder norms in the top-k keys and the decode coefficients. Refuse rather than differ.
    TOPKSAE_CHECK(!cfg.rescale_acts_by_decoder_norm,
                  "TrainStep (CUDA): rescale_acts_by_decoder_norm is not implemented on the GPU; train it on the CPU");
    d = cfg.d_in;
    n = cfg.d_sae;
    k = cfg.k;
    half_d = d / 2;
    kcap = half_d < n ? half_d : n;
    Bmax = max_batch > 0 ? max_batch : cfg.batch_size;
    TOPKSAE_CHECK(Bmax >= 1, "TrainStep: batch size must be >= 1");
    TOPKSAE_CHECK(opts.encode_rows >= -1, "TrainStep: encode_rows=", opts.encode_rows,
                  " must be -1 (whole batch), 0 (auto) or a row count");
    hrows = encode_chunk_rows(n, Bmax, opts.encode_rows);
    const int64_t E = Bmax * (k + kcap);
    TOPKSAE_CHECK(E < (int64_t(1) << 31), "TrainStep: batch*(k + d_in/2) = ", E, " must be < 2^31");
    TOPKSAE_CHECK(kcap <= kMaxTopK, "TrainStep: AuxK k = d_in/2 = ", kcap, " exceeds the GPU top-k maximum ", kMaxTopK);
    TOPKSAE_CHECK(aux_dense_cap >= -1, "TrainStep: aux_dense_cap must be -1 (auto), 0 (gather only) or a latent count");
    // The dense buffers [Bmax, cap] and [cap, d] are indexed by cuBLAS with int: < 2^31 elements.
    const int64_t int_cap = std::min(((int64_t(1) << 31) - 1) / Bmax, ((int64_t(1) << 31) - 1) / d);
    if (kcap == 0) {
      aux_cap = 0;
    } else if (aux_dense_cap < 0) {
      aux_cap = std::max<int64_t>(n / 8, 4096);
      aux_cap = std::min(n, (aux_cap + 31) / 32 * 32);
      aux_cap = std::min(aux_cap, int_cap / 32 * 32);
    } else {
      aux_cap = std::min(aux_dense_cap, n);
      TOPKSAE_CHECK(aux_cap <= int_cap, "TrainStep: aux_dense_cap=", aux_dense_cap, " makes the dense AuxK buffers "
                    "(batch x cap, cap x d_in) exceed 2^31 elements; at most ", int_cap, " here");
    }
    {
      // dz_kernel stages g_b and ga_b ([2, d_in] floats) in shared memory.
      int dev = 0, optin = 0;
      CUDA_CHECK(cudaGetDevice(&dev));
      CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
      TOPKSAE_CHECK(int64_t(2) * d * 4 <= int64_t(optin), "TrainStep: d_in=", d, " needs ", 8 * d,
                    " bytes of shared memory per block; this GPU allows ", optin);
    }
    oWenc = 0;
    oBenc = d * n;
    oWdec = oBenc + n;
    oBdec = oWdec + n * d;
    P = oBdec + d;
    if (st) {
      scaling_factor = st->scaling_factor;
      scaling = st->scaling_factor ? *st->scaling_factor : 1.0;
      step = st->step;
      n_training_samples = st->n_training_samples;
      n_frac_active = st->stats.n_frac_active;
      data_position = st->data_position;
    }
    while ((int64_t(1) << sort_bits) <= n) ++sort_bits;  // keys in [0, n]
    // The swept dz for the main top-k's entries needs float4 rows: d % 4 == 0 and W_dec's offset
    // in the flat parameters (n * (d + 1) floats) a multiple of 4.
    TOPKSAE_CHECK(slab_threads_arg == 0 || slab_threads_arg == -1 || slab_threads_arg == 16 || slab_threads_arg == 32 ||
                      slab_threads_arg == 64 || slab_threads_arg == 128,
                  "TrainStep: slab_threads=", slab_threads_arg, " must be 0 (auto), -1 (off), 16, 32, 64 or 128");
    const bool vec_ok = d % 4 == 0 && oWdec % 4 == 0;
    if (slab_threads_arg > 0) {
      TOPKSAE_CHECK(vec_ok, "TrainStep: slab_threads needs d_in % 4 == 0 and d_sae % 4 == 0 (float4 rows); d_in=", d,
                    ", d_sae=", n);
      slab_tpt = slab_threads_arg;
    } else if (slab_threads_arg == 0 && vec_ok) {
      // The widest slab whose rows fit in a quarter of L2, 16..128 threads: on the H200 (bench/
      // results/H200-2026-11-27-run3.md) 16 threads took 0.397 ms at 2304x65536 against 0.435 ms
      // for 32, whereas the decode prefers 32 (gather_threads_per_token).
      slab_tpt = detail::widest_slab_threads(std::min(n, Bmax * k), int64_t(ctx.l2_bytes()) / 4, 128);
    }
    slabs = slab_tpt > 0 ? (d + 4 * slab_tpt - 1) / (4 * slab_tpt) : 0;

    const size_t f = 4;
    param = alloc(size_t(P) * f, &bytes, plan_only);
    grad = alloc(size_t(P) * f, &bytes, plan_only);
    m = alloc(size_t(P) * f, &bytes, plan_only);
    v = alloc(size_t(P) * f, &bytes, plan_only);
    if (prec == Precision::bf16) {
      w16 = alloc(size_t(d * n) * 2, &bytes, plan_only);
      u16 = alloc(size_t(Bmax * d) * 2, &bytes, plan_only);
    }
    u = alloc(size_t(Bmax * d) * f, &bytes, plan_only);
    // h holds one chunk of pre-activations, and later dense AuxK's G [B, ndc <= aux_cap].
    h = alloc(size_t(std::max(hrows * n, Bmax * aux_cap)) * f, &bytes, plan_only);
    idxS = alloc(size_t(Bmax * k) * 4, &bytes, plan_only);
    hS = alloc(size_t(Bmax * k) * f, &bytes, plan_only);
    zS = alloc(size_t(Bmax * k) * f, &bytes, plan_only);
    idxT = alloc(size_t(Bmax * kcap) * 4, &bytes, plan_only);
    hT = alloc(size_t(Bmax * kcap) * f, &bytes, plan_only);
    xhat = alloc(size_t(Bmax * d) * f, &bytes, plan_only);
    ehat = alloc(size_t(Bmax * d) * f, &bytes, plan_only);
    g = alloc(size_t(Bmax * d) * f, &bytes, plan_only);
    ga = alloc(size_t(Bmax * d) * f, &bytes, plan_only);
    mu = alloc(size_t(d) * 8, &bytes, plan_only);
    stats = alloc(size_t(Bmax) * 4 * 8, &bytes, plan_only);
    // The gather path is reachable only when the bound can exceed the dense capacity.
    const bool gather_possible = aux_cap < n && kcap > 0;
    int64_t arena_elems = 6 * Bmax * k;
    if (aux_cap > 0) arena_elems = Bmax * aux_cap + 6 * Bmax * k;
    if (gather_possible) arena_elems = std::max(arena_elems, 6 * E);
    arena = alloc(size_t(arena_elems) * f, &bytes, plan_only);
    start = alloc(size_t(n + 1) * 4, &bytes, plan_only);
    if (slab_tpt > 0) part = alloc(size_t(slabs * Bmax * k) * f, &bytes, plan_only);
    {
      // Temporary storage for the largest sort this object can run (the sizes grow with the count).
      cub::DoubleBuffer<int32_t> dk(nullptr, nullptr), dv(nullptr, nullptr);
      for (int64_t cnt : {Bmax * k, gather_possible ? E : Bmax * k}) {
        size_t t = 0;
        CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, t, dk, dv, cnt, 0, sort_bits, detail::stream(ctx)));
        sort_tmp_bytes = std::max(sort_tmp_bytes, t);
      }
    }
    sort_tmp = alloc(sort_tmp_bytes, &bytes, plan_only);
    dead = alloc(size_t(n), &bytes, plan_only);
    fired = alloc(size_t(n), &bytes, plan_only);
    since = alloc(size_t(n) * 8, &bytes, plan_only);
    act = alloc(size_t(n) * 8, &bytes, plan_only);
    dead32 = alloc(size_t(n) * 4, &bytes, plan_only);
    if (aux_cap > 0) {
      pos = alloc(size_t(n) * 4, &bytes, plan_only);
      pos_of = alloc(size_t(n) * 4, &bytes, plan_only);
      dead_list = alloc(size_t(aux_cap) * 4, &bytes, plan_only);
      dbe = alloc(size_t(aux_cap) * 4, &bytes, plan_only);
      X = alloc(size_t(aux_cap * d) * f, &bytes, plan_only);
      CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, scan_tmp_bytes, as<int32_t>(dead32), as<int32_t>(pos), n,
                                               detail::stream(ctx)));
      scan_tmp = alloc(scan_tmp_bytes, &bytes, plan_only);
    }
    dm = alloc(sizeof(DevMetrics), &bytes, plan_only);
    if (plan_only) return;
    ring = HostBuffer(sizeof(DevMetrics) * kMetricsRing, HostMemory::pinned);
    events.resize(kMetricsRing);
    for (auto& e : events) CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));

    // Upload the state.
    const Params<float>* sets[3] = {&st->params, &st->adam_m, &st->adam_v};
    DeviceBuffer* dst[3] = {&param, &m, &v};
    for (int s = 0; s < 3; ++s) {
      const Params<float>& q = *sets[s];
      TOPKSAE_CHECK(int64_t(q.W_enc.size()) == d * n && int64_t(q.b_enc.size()) == n &&
                        int64_t(q.W_dec.size()) == n * d && int64_t(q.b_dec.size()) == d,
                    "TrainStep: the state's parameter / moment shapes do not match d_in=", d, ", d_sae=", n);
      char* base = static_cast<char*>(dst[s]->data());
      topksae::detail::copy_bytes(base + oWenc * 4, Device::cuda, q.W_enc.data(), Device::cpu, q.W_enc.size() * 4);
      topksae::detail::copy_bytes(base + oBenc * 4, Device::cuda, q.b_enc.data(), Device::cpu, q.b_enc.size() * 4);
      topksae::detail::copy_bytes(base + oWdec * 4, Device::cuda, q.W_dec.data(), Device::cpu, q.W_dec.size() * 4);
      topksae::detail::copy_bytes(base + oBdec * 4, Device::cuda, q.b_dec.data(), Device::cpu, q.b_dec.size() * 4);
    }
    TOPKSAE_CHECK(int64_t(st->stats.since_fired.size()) == n && int64_t(st->stats.act_freq.size()) == n,
                  "TrainStep: the state's sparsity statistics do not have d_sae=", n, " entries");
    upload(since, st->stats.since_fired.data(), size_t(n) * 8);
    upload(act, st->stats.act_freq.data(), size_t(n) * 8);
    CUDA_CHECK(cudaMemsetAsync(fired.data(), 0, size_t(n), detail::stream(ctx)));
    if (prec == Precision::bf16) to_bf16(ctx, as<float>(param) + oWenc, as<uint16_t>(w16), d * n);
    ctx.synchronize();
  }

  ~Impl() {
    (void)cudaStreamSynchronize(detail::stream(ctx));
    for (auto& e : events) (void)cudaEventDestroy(e);
  }

  // h [rows, n] = u[r0 : r0+rows] @ W_enc (bf16: u16, converted by the caller, @ the bf16 copy).
  void gemm_chunk(int64_t r0, int64_t rows) {
    const float* W = as<float>(param) + oWenc;
    float* H = as<float>(h);
    if (prec != Precision::bf16) {
      detail::gemm_rowmajor(ctx, as<float>(u) + r0 * d, W, H, rows, d, n, 0.f, prec);
      return;
    }
    const float alpha = 1.f, beta = 0.f;
    CUBLAS_CHECK(cublasGemmEx(detail::cublas(ctx), CUBLAS_OP_N, CUBLAS_OP_N, int(n), int(rows), int(d), &alpha,
                              w16.data(), CUDA_R_16BF, int(n), as<uint16_t>(u16) + r0 * d, CUDA_R_16BF, int(d), &beta,
                              H, CUDA_R_32F, int(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  // Moves the oldest pending step's metrics to `ready` (waiting for it).
  void retire_oldest() {
    CUDA_CHECK(cudaEventSynchronize(pending.front().ev));
    ready.push_back(finish(pending.front()));
    pending.pop_front();
  }

  void run(const float* x, int64_t B) {
    TOPKSAE_CHECK(B >= 1 && B <= Bmax, "TrainStep::step: batch of ", B, " rows, expected 1..", Bmax);
    cudaStream_t s = detail::stream(ctx);
    auto* M = as<DevMetrics>(dm);
    float* prm = as<float>(param);
    float* grd = as<float>(grad);
    const unsigned gn = detail::grid_for(n, kThreads, 1024);

    // Wait for a free metrics slot (only when the consumer is kMetricsRing steps behind).
    // Its host copy is finished into `ready` first, so nothing is overwritten before collection.
    if (int(pending.size()) >= kMetricsRing) retire_oldest();
    // A host bound on this step's dead count: waits only when the host is more than kLag steps
    // ahead of the device (DeadBound).
    while (!bound.can_bound(step)) {
      TOPKSAE_CHECK(!pending.empty(), "TrainStep: internal error: no step to bound the dead count from");
      retire_oldest();
    }
    const int64_t nd_bound = kcap > 0 ? std::min(bound.bound(step), n) : 0;
    const AuxPath path = nd_bound == 0 ? AuxPath::none : (nd_bound <= aux_cap ? AuxPath::dense : AuxPath::gather);
    // Dense AuxK: the compact width ndc (padded to 32 for the GEMMs) and the top-k width kc.
    const int64_t ndc = path == AuxPath::dense ? std::min(aux_cap, (nd_bound + 31) / 32 * 32) : 0;
    const int64_t kc = path == AuxPath::dense ? std::min(kcap, ndc) : 0;
    // The entry lists hold the T entries only on the gather path.
    const int64_t kT = path == AuxPath::gather ? kcap : 0;
    float* Zd = as<float>(arena);  // dense: Hc, then Zd [B, ndc]
    // Each path carves the entry arrays it needs (the arena was sized for the largest: see above).
    const EntryArrays ea = carve(as<float>(arena) + (path == AuxPath::dense ? Bmax * aux_cap : 0),
                                 path == AuxPath::gather ? Bmax * (k + kcap) : Bmax * k);
    const Precision aux_prec = prec == Precision::fp32 ? Precision::fp32 : Precision::tf32;
    switch (path) {
      case AuxPath::none: ++path_counts.none; break;
      case AuxPath::dense: ++path_counts.dense; break;
      case AuxPath::gather: ++path_counts.gather; break;
    }

    StepMetrics meta;
    meta.step = step;
    CUDA_CHECK(cudaMemsetAsync(M, 0, sizeof(DevMetrics), s));
    // 1. a new feature-sampling window: log the closed window's sparsity, then reset.
    if ((step + 1) % cfg.feature_sampling_window == 0) {
      meta.has_sparsity = true;
      sparsity_kernel<<<gn, kThreads, 0, s>>>(reinterpret_cast<const long long*>(act.data()), n,
                                              double(n_frac_active), M);
      CUDA_CHECK_LAUNCH();
      CUDA_CHECK(cudaMemsetAsync(act.data(), 0, size_t(n) * 8, s));
      n_frac_active = 0;
    }
    // 2. dead mask of the step before, AuxK's size; dense AuxK: the compacted dead list.
    dead_kernel<<<gn, kThreads, 0, s>>>(as<long long>(since), n, cfg.dead_feature_window, as<uint8_t>(dead),
                                        as<int32_t>(dead32), M);
    CUDA_CHECK_LAUNCH();
    aux_params_kernel<<<1, 1, 0, s>>>(half_d, kcap > 0 ? nd_bound : n, M);
    CUDA_CHECK_LAUNCH();
    if (path == AuxPath::dense) {
      size_t tmp = scan_tmp_bytes;
      CUDA_CHECK(cub::DeviceScan::ExclusiveSum(scan_tmp.data(), tmp, as<int32_t>(dead32), as<int32_t>(pos), n, s));
      CUDA_CHECK(cudaMemsetAsync(dead_list.data(), 0xFF, size_t(ndc) * 4, s));  // -1: padding
      compact_dead_kernel<<<gn, kThreads, 0, s>>>(as<int32_t>(dead32), as<int32_t>(pos), n, ndc,
                                                  as<int32_t>(dead_list), as<int32_t>(pos_of), M);
      CUDA_CHECK_LAUNCH();
    }
    // 3. forward: u = s*x - a*b_dec, h = u @ W_enc, S = top-k(h + b_enc), T = top-k over dead.
    prep_kernel<<<detail::grid_for(B * d, kThreads), kThreads, 0, s>>>(
        x, float(scaling), cfg.apply_b_dec_to_input ? prm + oBdec : nullptr, B * d, d, as<float>(u));
    CUDA_CHECK_LAUNCH();
    if (prec == Precision::bf16) to_bf16(ctx, as<float>(u), as<uint16_t>(u16), B * d);
    // The encoder GEMM and every selection on h, one chunk of rows at a time (h holds one chunk).
    TopKOptions o;
    o.bias = prm + oBenc;
    TopKOptions oa;  // the gather path's AuxK over the dead latents
    oa.bias = prm + oBenc;
    oa.mask = as<uint8_t>(dead);
    oa.k_dev = &M->k_aux;
    for (int64_t r0 = 0; r0 < B; r0 += hrows) {
      const int64_t rows = std::min(hrows, B - r0);
      gemm_chunk(r0, rows);
      topk_select(ctx, as<float>(h), rows, n, k, as<int32_t>(idxS) + r0 * k, as<float>(hS) + r0 * k, o);
      if (path == AuxPath::dense) {  // the dead columns (+ b_enc) into rows r0.. of Hc = Zd [B, ndc]
        gather_dead_cols_kernel<<<detail::grid_for(rows * ndc, kThreads), kThreads, 0, s>>>(
            as<float>(h), prm + oBenc, as<int32_t>(dead_list), rows, n, ndc, Zd + r0 * ndc);
        CUDA_CHECK_LAUNCH();
      } else if (path == AuxPath::gather) {
        topk_select(ctx, as<float>(h), rows, n, kcap, as<int32_t>(idxT) + r0 * kcap, as<float>(hT) + r0 * kcap, oa);
      }
    }
    relu_kernel<<<detail::grid_for(B * k, kThreads), kThreads, 0, s>>>(as<float>(hS), as<float>(zS), B * k);
    CUDA_CHECK_LAUNCH();
    gather_decode(ctx, prm + oWdec, prm + oBdec, as<int32_t>(idxS), as<float>(zS), B, k, k, nullptr, d, as<float>(xhat),
                  n);
    if (path == AuxPath::dense) {
      // T over the compacted columns: positions r in [0, ndc) in idxT, values in hT ([B, kc]).
      TopKOptions oc;
      oc.k_dev = &M->k_aux;
      oc.sorted = false;  // scatter_aux_kernel and mask_aux_grad_kernel need only the set
      topk_select(ctx, Zd, B, ndc, kc, as<int32_t>(idxT), as<float>(hT), oc);
      CUDA_CHECK(cudaMemsetAsync(Zd, 0, size_t(B * ndc) * 4, s));
      scatter_aux_kernel<<<detail::grid_for(B * kc, kThreads), kThreads, 0, s>>>(as<int32_t>(idxT), as<float>(hT), B,
                                                                                kc, ndc, M, Zd);
      CUDA_CHECK_LAUNCH();
      gather_dead_rows_kernel<<<detail::grid_for(ndc * d, kThreads), kThreads, 0, s>>>(
          prm + oWdec, as<int32_t>(dead_list), ndc, d, as<float>(X));
      CUDA_CHECK_LAUNCH();
      // ehat [B, d] = b_dec + Zd @ W_dec[dead]
      detail::fill_rows(ctx, as<float>(ehat), prm + oBdec, B, d);
      detail::gemm_rowmajor_ex(ctx, false, false, B, d, ndc, Zd, ndc, as<float>(X), d, 1.f, as<float>(ehat), d, aux_prec);
    } else if (path == AuxPath::gather) {
      gather_decode(ctx, prm + oWdec, prm + oBdec, as<int32_t>(idxT), as<float>(hT), B, kcap, kcap, &M->k_aux, d,
                    as<float>(ehat), n);
    }
    // 4. losses, g and ga, metrics.
    launch_colsum(s, x, nullptr, B, d, scaling / double(B), as<double>(mu), nullptr);
    loss_rows_kernel<<<unsigned(B), kThreads, 0, s>>>(x, float(scaling), as<float>(xhat),
                                                       path != AuxPath::none ? as<float>(ehat) : nullptr,
                                                       as<double>(mu), as<float>(zS), B, d, k,
                                                       cfg.aux_loss_coefficient, M, as<float>(g), as<float>(ga),
                                                       as<double>(stats));
    CUDA_CHECK_LAUNCH();
    reduce_rows_kernel<<<1, 1024, 0, s>>>(as<double>(stats), B, M);
    CUDA_CHECK_LAUNCH();
    // 5. bookkeeping after the forward.
    fire_kernel<<<detail::grid_for(B * k, kThreads), kThreads, 0, s>>>(as<int32_t>(idxS), as<float>(zS), B * k,
                                                                        as<uint8_t>(fired),
                                                                        as<unsigned long long>(act));
    CUDA_CHECK_LAUNCH();
    since_kernel<<<gn, kThreads, 0, s>>>(as<long long>(since), as<uint8_t>(fired), n, cfg.dead_feature_window, M);
    CUDA_CHECK_LAUNCH();
    n_frac_active += B;
    // 6. backward.
    float* G = as<float>(h);  // dense AuxK: [B, ndc], h is no longer needed
    if (path == AuxPath::dense) {
      // G = ga @ W_dec[dead]^T; then X (W_dec[dead], read) becomes dW_dec[dead] = Zd^T @ ga.
      detail::gemm_rowmajor_ex(ctx, false, true, B, ndc, d, as<float>(ga), d, as<float>(X), d, 0.f, G, ndc, aux_prec);
      detail::gemm_rowmajor_ex(ctx, true, false, ndc, d, B, Zd, ndc, as<float>(ga), d, 0.f, as<float>(X), d, aux_prec);
      mask_aux_grad_kernel<<<unsigned(B), kThreads, size_t(kc) * 4, s>>>(as<int32_t>(idxT), kc, ndc, M, G);
      CUDA_CHECK_LAUNCH();
      // db_enc's dead part: column sums of dza.
      launch_colsum(s, G, nullptr, B, ndc, 1.0, nullptr, as<float>(dbe));
    }
    if (slab_tpt > 0 && kT == 0) {
      // The S entries' dz swept over column slabs (the T entries, if any, are GEMMs here).
      switch (slab_tpt) {
        case 16: launch_dz_partial<16>(s, prm + oWdec, as<float>(g), as<int32_t>(idxS), B, d, k, slabs, as<float>(part)); break;
        case 32: launch_dz_partial<32>(s, prm + oWdec, as<float>(g), as<int32_t>(idxS), B, d, k, slabs, as<float>(part)); break;
        case 64: launch_dz_partial<64>(s, prm + oWdec, as<float>(g), as<int32_t>(idxS), B, d, k, slabs, as<float>(part)); break;
        default: launch_dz_partial<128>(s, prm + oWdec, as<float>(g), as<int32_t>(idxS), B, d, k, slabs, as<float>(part)); break;
      }
      dz_finish_kernel<<<detail::grid_for(B * k, kThreads), kThreads, 0, s>>>(as<float>(part), slabs, as<float>(hS),
                                                                              B * k, ea.w, ea.dh);
      CUDA_CHECK_LAUNCH();
    } else {
      const size_t dz_smem = size_t(2 * d) * 4;
      if (dz_smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(dz_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dz_smem)));
      dz_kernel<<<unsigned(B), kThreads, dz_smem, s>>>(prm + oWdec, as<float>(g), as<float>(ga), as<int32_t>(idxS),
                                                       as<float>(hS), as<int32_t>(idxT), as<float>(hT), B, d, k, kT, M,
                                                       ea.w, ea.dh);
      CUDA_CHECK_LAUNCH();
    }
    const int64_t E = B * (k + kT);
    keys_kernel<<<detail::grid_for(E, kThreads), kThreads, 0, s>>>(as<int32_t>(idxS), as<int32_t>(idxT), B, k, kT, n,
                                                                   M, ea.keys, ea.vals);
    CUDA_CHECK_LAUNCH();
    cub::DoubleBuffer<int32_t> dk(ea.keys, ea.keys2), dv(ea.vals, ea.vals2);
    size_t tmp = sort_tmp_bytes;
    CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_tmp.data(), tmp, dk, dv, E, 0, sort_bits, s));
    const int32_t* keys_sorted = dk.Current();
    const int32_t* order = dv.Current();
    offsets_kernel<<<detail::grid_for(E, kThreads), kThreads, 0, s>>>(keys_sorted, E, n, as<int32_t>(start));
    CUDA_CHECK_LAUNCH();
    const int32_t* pos_of_or_null = path == AuxPath::dense ? as<int32_t>(pos_of) : nullptr;
    grad_dec_kernel<<<detail::grid_for(n * 32, kThreads, INT32_MAX), kThreads, 0, s>>>(
        as<int32_t>(start), order, ea.w, as<float>(g), as<float>(ga), B, d, n, k, kT, pos_of_or_null, as<float>(X),
        grd + oWdec, M);
    CUDA_CHECK_LAUNCH();
    if (path == AuxPath::dense)  // X: dW_enc[:, dead]^T = dza^T @ u, [ndc, d] (dW_dec[dead] was consumed above)
      detail::gemm_rowmajor_ex(ctx, true, false, ndc, d, B, G, ndc, as<float>(u), d, 0.f, as<float>(X), d, aux_prec);
    grad_enc_kernel<<<unsigned((n + 31) / 32), dim3{32u, 8u, 1u}, 0, s>>>(
        as<int32_t>(start), order, ea.dh, as<float>(u), B, d, n, k, kT, pos_of_or_null, as<float>(X), as<float>(dbe),
        grd + oWenc, grd + oBenc, M);
    CUDA_CHECK_LAUNCH();
    // db_dec = sum_b g_b + sum_b ga_b - a * W_enc @ db_enc
    launch_colsum(s, as<float>(g), as<float>(ga), B, d, 1.0, nullptr, grd + oBdec);
    if (cfg.apply_b_dec_to_input) {
      const float alpha = -1.f, beta = 1.f;
      CUBLAS_CHECK(cublasSgemv(detail::cublas(ctx), CUBLAS_OP_T, int(n), int(d), &alpha, prm + oWenc, int(n),
                               grd + oBenc, 1, &beta, grd + oBdec, 1));
    }
    sumsq_kernel<<<1, 1024, 0, s>>>(grd + oBdec, d, M);
    CUDA_CHECK_LAUNCH();
    // 7. clip + Adam (t = step + 1).
    clip_kernel<<<1, 1, 0, s>>>(M);
    CUDA_CHECK_LAUNCH();
    const double lr = cpu::lr_at(cfg, step);
    const double t = double(step + 1);
    const double bc1 = 1.0 - std::pow(cfg.adam_beta1, t);
    const double bc2 = 1.0 - std::pow(cfg.adam_beta2, t);
    adam_kernel<<<detail::grid_for(P, kThreads, int64_t(ctx.sm_count()) * 16), kThreads, 0, s>>>(
        prm, as<float>(m), as<float>(v), grd, P, M, float(cfg.adam_beta1), float(cfg.adam_beta2),
        float(1.0 - cfg.adam_beta1), float(1.0 - cfg.adam_beta2), float(lr / bc1),
        float(std::sqrt(bc2)), float(kAdamEps), prec == Precision::bf16 ? as<__nv_bfloat16>(w16) : nullptr, d * n);
    CUDA_CHECK_LAUNCH();
    // 8. metrics back to the host, asynchronously.
    const int slot = next_slot;
    next_slot = (next_slot + 1) % kMetricsRing;
    auto* host = static_cast<DevMetrics*>(ring.data()) + slot;
    CUDA_CHECK(cudaMemcpyAsync(host, M, sizeof(DevMetrics), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaEventRecord(events[size_t(slot)], s));
    n_training_samples += B;
    meta.lr_used = lr;
    meta.current_learning_rate = cpu::lr_at(cfg, step + 1);
    meta.n_training_samples = n_training_samples;
    pending.push_back(Pending{meta, B, events[size_t(slot)], slot});
    ++step;
  }

  StepMetrics finish(const Pending& p) {
    const DevMetrics& dv = static_cast<const DevMetrics*>(ring.data())[p.slot];
    TOPKSAE_CHECK(dv.aux_overflow == 0, "TrainStep: internal error at step ", p.meta.step,
                  ": more dead latents than the host's bound sized AuxK for (", dv.n_dead_before, ")");
    bound.observe(p.meta.step, int64_t(dv.near_dead));
    StepMetrics r = p.meta;
    const double B = double(p.B);
    r.mse_loss = dv.mse_sum / B;
    r.auxiliary_reconstruction_loss = cfg.aux_loss_coefficient * double(dv.aux_scale) * dv.aux_sum / B;
    if (dv.k_aux == 0) r.auxiliary_reconstruction_loss = 0;
    r.overall_loss = r.mse_loss + r.auxiliary_reconstruction_loss;
    r.l0 = dv.nnz / B;
    r.explained_variance = 1.0 - dv.mse_sum / dv.tv_sum;
    r.dead_features = int64_t(dv.dead_after);
    r.mean_passes_since_fired = double(dv.since_sum) / double(n);
    r.grad_norm = dv.grad_norm;
    if (r.has_sparsity) {
      r.mean_log10_feature_sparsity = dv.log10_sparsity_sum / double(n);
      r.below_1e_5 = int64_t(dv.below5);
      r.below_1e_6 = int64_t(dv.below6);
    }
    return r;
  }

  std::vector<StepMetrics> collect(bool wait) {
    std::vector<StepMetrics> out;
    out.swap(ready);
    while (!pending.empty()) {
      const Pending& p = pending.front();
      if (wait) {
        CUDA_CHECK(cudaEventSynchronize(p.ev));
      } else {
        const cudaError_t e = cudaEventQuery(p.ev);
        if (e == cudaErrorNotReady) break;
        CUDA_CHECK(e);
      }
      out.push_back(finish(p));
      pending.pop_front();
    }
    return out;
  }

  void download_params(const DeviceBuffer& src, Params<float>* q) {
    q->W_enc.resize(size_t(d * n));
    q->b_enc.resize(size_t(n));
    q->W_dec.resize(size_t(n * d));
    q->b_dec.resize(size_t(d));
    download_bytes(q->W_enc.data(), src, q->W_enc.size() * 4, size_t(oWenc) * 4);
    download_bytes(q->b_enc.data(), src, q->b_enc.size() * 4, size_t(oBenc) * 4);
    download_bytes(q->W_dec.data(), src, q->W_dec.size() * 4, size_t(oWdec) * 4);
    download_bytes(q->b_dec.data(), src, q->b_dec.size() * 4, size_t(oBdec) * 4);
  }
};

TrainStep::TrainStep(Context& ctx, const TrainConfig& cfg, const TrainState& st, const TrainStepOptions& opts)
    : impl_(std::make_unique<Impl>(ctx, cfg, &st, opts)) {}
size_t TrainStep::planned_bytes(Context& ctx, const TrainConfig& cfg, const TrainStepOptions& opts) {
  return Impl(ctx, cfg, nullptr, opts).bytes;
}
TrainStep::~TrainStep() = default;

void TrainStep::step(const float* x, int64_t B) { impl_->run(x, B); }
std::vector<StepMetrics> TrainStep::poll_metrics() { return impl_->collect(false); }
std::vector<StepMetrics> TrainStep::drain_metrics() { return impl_->collect(true); }
int64_t TrainStep::steps_done() const { return impl_->step; }
Precision TrainStep::precision() const { return impl_->prec; }
size_t TrainStep::device_bytes() const { return impl_->bytes; }
int64_t TrainStep::aux_dense_capacity() const { return impl_->aux_cap; }
int TrainStep::slab_threads() const { return impl_->slab_tpt; }
int64_t TrainStep::encode_rows() const { return impl_->hrows; }
AuxPathCounts TrainStep::aux_path_counts() const { return impl_->path_counts; }

void TrainStep::download(TrainState* st) {
  Impl& I = *impl_;
  I.ctx.synchronize();
  I.download_params(I.param, &st->params);
  I.download_params(I.m, &st->adam_m);
  I.download_params(I.v, &st->adam_v);
  st->step = I.step;
  st->n_training_samples = I.n_training_samples;
  st->stats.since_fired.resize(size_t(I.n));
  st->stats.act_freq.resize(size_t(I.n));
  download_bytes(st->stats.since_fired.data(), I.since, size_t(I.n) * 8);
  download_bytes(st->stats.act_freq.data(), I.act, size_t(I.n) * 8);
  st->stats.n_frac_active = I.n_frac_active;
  st->data_position = I.data_position;
  st->scaling_factor = I.scaling_factor;
}

void TrainStep::download_grads(Params<float>* grad) {
  impl_->ctx.synchronize();
  impl_->download_params(impl_->grad, grad);
}

}  // namespace topksae::cuda
