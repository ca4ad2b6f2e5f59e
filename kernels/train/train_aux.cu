// AuxK's device side (shared/spec/MATH.md, "Training forward", AuxK): its k and scale from the
// dead count, and the dense sub-problem over the dead latents. The dead latents are compacted
// into a list (dead_list, at most ndc = the host's bound rounded up to 32), their pre-activations
// gathered into Hc [B, ndc], AuxK's top-k runs there (topk_select), its picks are scattered into
// the codes Zd [B, ndc], and the GEMMs of train_step.cu (ehat = b_dec + Zd @ W_dec[dead],
// G = ga @ W_dec[dead]^T, dW_dec[dead] = Zd^T @ ga, dW_enc[:, dead]^T = G^T @ u) run on the
// compacted shapes; mask_aux_grad keeps G's selected entries only. The gather path (many dead
// latents) needs none of this: its T entries join the main top-k's entry lists.
// CPU twin: the AuxK part of src/cpu/train_forward.cpp and train_backward.cpp.
#include <cub/device/device_scan.cuh>

#include "cuda_internal.h"
#include "train/train_ops.h"

namespace topksae::cuda::train {

namespace {
constexpr int kThreads = 256;

// AuxK's size and scale from the dead count, on the device (MATH.md: k_aux = d_in // 2,
// scale = min(n_dead / k_aux, 1), k_aux = min(k_aux, n_dead)). `bound` is the host's bound on
// n_dead that sized this step's AuxK buffers; exceeding it is flagged (and never overruns them).
__global__ void aux_params_kernel(int64_t half_d, long long bound, const DevMetrics* __restrict__ M, StepControl* C) {
  const unsigned long long nd = M->n_dead_before;
  if ((long long)nd > bound) C->aux_overflow = 1;
  if (half_d <= 0 || nd == 0) {
    C->k_aux = 0;
    C->aux_scale = 0.0;
    return;
  }
  C->k_aux = int32_t(nd < (unsigned long long)half_d ? nd : half_d);
  const double s = double(nd) / double(half_d);
  C->aux_scale = s < 1.0 ? s : 1.0;
}

// pos [n] is the exclusive scan of dead32. dead_list [ndc] = the dead latents in index order
// (pre-filled with -1: the padding), pos_of [n] = a latent's compact position or -1.
__global__ void compact_dead_kernel(const int32_t* __restrict__ dead32, const int32_t* __restrict__ pos, int64_t n,
                                    int64_t ndc, int32_t* __restrict__ dead_list, int32_t* __restrict__ pos_of,
                                    StepControl* C) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < n; j += int64_t(gridDim.x) * blockDim.x) {
    int32_t r = -1;
    if (dead32[j]) {
      if (pos[j] < ndc) {
        r = pos[j];
        dead_list[r] = int32_t(j);
      } else {
        C->aux_overflow = 1;  // never write past the buffers; the host reports it
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
                                   int64_t ndc, const StepControl* __restrict__ C, float* __restrict__ Zd) {
  const int64_t k_aux = C->k_aux;  // rows hold kc picks; i < kc below keeps a wrong k_aux in bounds
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
                                     const StepControl* __restrict__ C, float* __restrict__ G) {
  extern __shared__ float keep[];
  const int64_t b = blockIdx.x;
  // k_aux <= kc unless the host's bound was wrong (aux_overflow, reported by the host): never
  // index past keep[] or the row's kc picks even then.
  const int64_t k_aux = C->k_aux < kc ? int64_t(C->k_aux) : kc;
  float* row = G + b * ndc;
  const int32_t* r = rT + b * kc;
  for (int64_t i = threadIdx.x; i < k_aux; i += blockDim.x) keep[i] = row[r[i]];
  __syncthreads();
  for (int64_t c = threadIdx.x; c < ndc; c += blockDim.x) row[c] = 0.f;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < k_aux; i += blockDim.x) row[r[i]] = keep[i];
}

}  // namespace

void aux_params(cudaStream_t st, int64_t half_d, int64_t bound, const DevMetrics* M, StepControl* C) {
  aux_params_kernel<<<1, 1, 0, st>>>(half_d, (long long)bound, M, C);
  CUDA_CHECK_LAUNCH();
}

size_t compact_dead_tmp_bytes(int64_t n) {
  size_t t = 0;
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, t, static_cast<const int32_t*>(nullptr),
                                           static_cast<int32_t*>(nullptr), n, cudaStream_t(0)));
  return t;
}

void compact_dead(cudaStream_t st, const int32_t* dead32, int64_t n, int64_t ndc, int32_t* pos, void* tmp,
                  size_t tmp_bytes, int32_t* dead_list, int32_t* pos_of, StepControl* C) {
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp, tmp_bytes, dead32, pos, n, st));
  CUDA_CHECK(cudaMemsetAsync(dead_list, 0xFF, size_t(ndc) * 4, st));  // -1: padding
  compact_dead_kernel<<<detail::grid_for(n, kThreads, 1024), kThreads, 0, st>>>(dead32, pos, n, ndc, dead_list, pos_of,
                                                                                C);
  CUDA_CHECK_LAUNCH();
}

void gather_dead_cols(cudaStream_t st, const float* h, const float* b_enc, const int32_t* dead_list, int64_t rows,
                      int64_t n, int64_t ndc, float* Hc) {
  gather_dead_cols_kernel<<<detail::grid_for(rows * ndc, kThreads), kThreads, 0, st>>>(h, b_enc, dead_list, rows, n,
                                                                                        ndc, Hc);
  CUDA_CHECK_LAUNCH();
}

void scatter_aux(cudaStream_t st, const int32_t* rT, const float* hT, int64_t B, int64_t kc, int64_t ndc,
                 const StepControl* C, float* Zd) {
  CUDA_CHECK(cudaMemsetAsync(Zd, 0, size_t(B * ndc) * 4, st));
  scatter_aux_kernel<<<detail::grid_for(B * kc, kThreads), kThreads, 0, st>>>(rT, hT, B, kc, ndc, C, Zd);
  CUDA_CHECK_LAUNCH();
}

void gather_dead_rows(cudaStream_t st, const float* W_dec, const int32_t* dead_list, int64_t ndc, int64_t d,
                      float* Wd_dead) {
  gather_dead_rows_kernel<<<detail::grid_for(ndc * d, kThreads), kThreads, 0, st>>>(W_dec, dead_list, ndc, d, Wd_dead);
  CUDA_CHECK_LAUNCH();
}

void mask_aux_grad(cudaStream_t st, const int32_t* rT, int64_t B, int64_t kc, int64_t ndc, const StepControl* C,
                   float* G) {
  mask_aux_grad_kernel<<<unsigned(B), kThreads, size_t(kc) * 4, st>>>(rT, kc, ndc, C, G);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda::train
