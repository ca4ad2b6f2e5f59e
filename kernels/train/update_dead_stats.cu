// Dead-latent bookkeeping on the device (shared/spec/MATH.md, "Dead latents"): the dead mask the
// forward's AuxK reads, the firing counts and since_fired after the forward, and the feature-
// sparsity metrics of a closed sampling window. CPU twin: src/cpu/update_dead_stats.cpp
// (dead_mask, update_dead_stats) and log_feature_sparsity.
#include "common/reduce.cuh"
#include "cuda_internal.h"
#include "train/dead_bound.h"
#include "train/train_ops.h"

namespace topksae::cuda::train {

namespace {
using detail::block_sum;
constexpr int kThreads = 256;

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

}  // namespace

void sparsity_metrics(cudaStream_t st, const int64_t* act_freq, int64_t n, double n_frac, DevMetrics* M) {
  sparsity_kernel<<<detail::grid_for(n, kThreads, 1024), kThreads, 0, st>>>(
      reinterpret_cast<const long long*>(act_freq), n, n_frac, M);
  CUDA_CHECK_LAUNCH();
}

void dead_mask(cudaStream_t st, const int64_t* since, int64_t n, int64_t window, uint8_t* dead, int32_t* dead32,
               DevMetrics* M) {
  dead_kernel<<<detail::grid_for(n, kThreads, 1024), kThreads, 0, st>>>(reinterpret_cast<const long long*>(since), n,
                                                                         (long long)window, dead, dead32, M);
  CUDA_CHECK_LAUNCH();
}

void mark_fired(cudaStream_t st, const int32_t* idx, const float* z, int64_t total, uint8_t* fired,
                int64_t* act_freq) {
  // act_freq counts with 64-bit atomics (unsigned long long on the device; the counts stay < 2^63).
  fire_kernel<<<detail::grid_for(total, kThreads), kThreads, 0, st>>>(
      idx, z, total, fired, reinterpret_cast<unsigned long long*>(act_freq));
  CUDA_CHECK_LAUNCH();
}

void update_since(cudaStream_t st, int64_t* since, uint8_t* fired, int64_t n, int64_t window, DevMetrics* M) {
  since_kernel<<<detail::grid_for(n, kThreads, 1024), kThreads, 0, st>>>(reinterpret_cast<long long*>(since), fired,
                                                                          n, (long long)window, M);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda::train
