// The training forward's own kernels (the encoder GEMM, top-k and gather decode are the shared
// ops): u = s*x - a*b_dec, relu, column sums in double, and per row the losses and their
// gradients g and ga (shared/spec/MATH.md, "Training forward"). CPU twin: src/cpu/train_forward.cpp.
#include "common/reduce.cuh"
#include "cuda_internal.h"
#include "train/train_ops.h"

namespace topksae::cuda::train {

namespace {
using detail::block_sum;
constexpr int kThreads = 256;

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

// Per row: the MSE residual and its gradient g, the AuxK residual and its gradient ga, and the
// row sums the metrics need. stats[b] = {||xhat-xs||^2, ||ehat-r||^2, ||xs-mu||^2, nnz(z_b)}.
__global__ void loss_rows_kernel(const float* __restrict__ x, float s, const float* __restrict__ xhat,
                                 const float* __restrict__ ehat, const double* __restrict__ mu, const float* __restrict__ z,
                                 int64_t B, int64_t d, int64_t k, double aux_coef, const StepControl* __restrict__ C,
                                 float* __restrict__ g, float* __restrict__ ga, double* __restrict__ stats) {
  const int64_t b = blockIdx.x;
  const float gcoef = float(2.0 / double(B));
  const float gacoef = ehat ? float(2.0 * aux_coef * C->aux_scale / double(B)) : 0.f;
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
}  // namespace

void prep_input(cudaStream_t st, const float* x, float s, const float* b_dec, int64_t B, int64_t d, float* u) {
  prep_kernel<<<detail::grid_for(B * d, kThreads), kThreads, 0, st>>>(x, s, b_dec, B * d, d, u);
  CUDA_CHECK_LAUNCH();
}

void relu(cudaStream_t st, const float* h, float* z, int64_t count) {
  relu_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, st>>>(h, z, count);
  CUDA_CHECK_LAUNCH();
}

void column_sums(cudaStream_t st, const float* A, const float* A2, int64_t B, int64_t d, double post, double* outd,
                 float* outf) {
  const dim3 grid{unsigned((d + kColsumCols - 1) / kColsumCols), 1u, 1u}, block{kColsumCols, kColsumRows, 1u};
  colsum_kernel<<<grid, block, 0, st>>>(A, A2, B, d, post, outd, outf);
  CUDA_CHECK_LAUNCH();
}

void loss_rows(cudaStream_t st, const float* x, float s, const float* xhat, const float* ehat, const double* mu,
               const float* z, int64_t B, int64_t d, int64_t k, double aux_coef, const StepControl* C, float* g,
               float* ga, double* stats) {
  loss_rows_kernel<<<unsigned(B), kThreads, 0, st>>>(x, s, xhat, ehat, mu, z, B, d, k, aux_coef, C, g, ga, stats);
  CUDA_CHECK_LAUNCH();
}

void reduce_loss_rows(cudaStream_t st, const double* stats, int64_t B, DevMetrics* M) {
  reduce_rows_kernel<<<1, 1024, 0, st>>>(stats, B, M);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda::train
