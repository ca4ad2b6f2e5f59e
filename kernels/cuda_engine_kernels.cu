// Small kernels of the CUDA inference engine (see cuda_engine_kernels.h).
#include "cuda_engine_kernels.h"
#include "cuda_internal.h"

namespace topksae::cuda::engine {

namespace {
constexpr int kRowThreads = 256;

// Block-wide sum of one double per thread (blockDim.x == kRowThreads); every thread gets it.
__device__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = kRowThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();  // shared is reused by the next call
  return total;
}

// One block per row: normalise (as cpu::normalize_in) and subtract b_dec (as cpu::process_sae_in).
__global__ void __launch_bounds__(kRowThreads) sae_in_kernel(int mode, const float* __restrict__ x,
                                                             const float* __restrict__ b_dec, int64_t d,
                                                             float* __restrict__ u, float* __restrict__ scale,
                                                             float* __restrict__ shift) {
  __shared__ double red[kRowThreads];
  const int64_t b = blockIdx.x;
  const float* xr = x + b * d;
  float* ur = u + b * d;
  float mul = 1.f, mu = 0.f, denom = 1.f, sc = 1.f;
  if (mode == int(Normalize::constant_norm_rescale)) {
    double ss = 0;
    for (int64_t i = threadIdx.x; i < d; i += kRowThreads) ss += double(xr[i]) * xr[i];
    ss = block_sum(ss, red);
    mul = float(sqrt(double(d)) / sqrt(ss));
    sc = mul;
  } else if (mode == int(Normalize::layer_norm)) {
    double sum = 0;
    for (int64_t i = threadIdx.x; i < d; i += kRowThreads) sum += xr[i];
    mu = float(block_sum(sum, red) / double(d));
    double ss = 0;
    for (int64_t i = threadIdx.x; i < d; i += kRowThreads) {
      const double t = double(xr[i] - mu);
      ss += t * t;
    }
    const float sd = float(sqrt(block_sum(ss, red) / double(d - 1)));
    denom = sd + 1e-5f;
    sc = sd;
  }
  for (int64_t i = threadIdx.x; i < d; i += kRowThreads) {
    float v = xr[i];
    if (mode == int(Normalize::constant_norm_rescale))
      v = v * mul;
    else if (mode == int(Normalize::layer_norm))
      v = (v - mu) / denom;
    ur[i] = b_dec ? v - b_dec[i] : v;
  }
  if (threadIdx.x == 0 && scale != nullptr) {
    scale[b] = sc;
    shift[b] = mu;
  }
}

__global__ void sae_out_kernel(int mode, float* __restrict__ xhat, int64_t total, int64_t d,
                               const float* __restrict__ scale, const float* __restrict__ shift) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / d;
    if (mode == int(Normalize::constant_norm_rescale))
      xhat[i] /= scale[b];
    else
      xhat[i] = xhat[i] * scale[b] + shift[b];
  }
}

__global__ void scatter_kernel(const int32_t* __restrict__ idx, const float* __restrict__ val, int64_t total,
                               int64_t k, int64_t n, float* __restrict__ z) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    z[(i / k) * n + idx[i]] = val[i];
}

__global__ void count_kernel(const float* __restrict__ val, int64_t B, int64_t k, int64_t* __restrict__ counts) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b > B) return;
  int64_t c = 0;
  if (b < B)
    for (int64_t i = 0; i < k; ++i) c += val[b * k + i] != 0.f;
  counts[b] = c;
}

__global__ void compact_kernel(const int32_t* __restrict__ idx, const float* __restrict__ val, int64_t B, int64_t k,
                               const int64_t* __restrict__ indptr, int32_t* __restrict__ cols,
                               float* __restrict__ vals) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b >= B) return;
  int64_t p = indptr[b];
  for (int64_t i = b * k; i < (b + 1) * k; ++i)
    if (val[i] != 0.f) {
      cols[p] = idx[i];
      vals[p++] = val[i];
    }
}

// grid (B, column blocks): each thread owns one output column of row b.
__global__ void csr_decode_kernel(const float* __restrict__ W, const float* __restrict__ bias,
                                  const int64_t* __restrict__ indptr, const int32_t* __restrict__ idx,
                                  const float* __restrict__ val, int64_t d, float* __restrict__ out) {
  const int64_t b = blockIdx.x;
  const int64_t c = int64_t(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= d) return;
  float acc = bias ? bias[c] : 0.f;
  for (int64_t p = indptr[b]; p < indptr[b + 1]; ++p) {
    const float v = val[p];
    if (v != 0.f) acc += v * W[int64_t(idx[p]) * d + c];
  }
  out[b * d + c] = acc;
}

__global__ void sub_kernel(const float* __restrict__ x, float* __restrict__ e, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    e[i] = x[i] - e[i];
}

__global__ void add_kernel(float* __restrict__ out, const float* __restrict__ e, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = out[i] + e[i];
}

__global__ void check_latents_kernel(const int32_t* __restrict__ idx, int64_t count, int64_t d_sae,
                                     int32_t* __restrict__ bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    if (idx[i] < 0 || idx[i] >= d_sae) *bad = 1;
}

__global__ void check_indptr_kernel(const int64_t* __restrict__ indptr, int64_t B, int32_t* __restrict__ bad) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b <= B; b += int64_t(gridDim.x) * blockDim.x) {
    if (b == 0 && indptr[0] != 0) *bad = 1;
    if (b < B && indptr[b] > indptr[b + 1]) *bad = 1;
  }
}
}  // namespace

void sae_in(Context& ctx, Normalize mode, const float* x, const float* b_dec, int64_t B, int64_t d, float* u,
            float* scale, float* shift) {
  if (B == 0 || d == 0) return;
  TOPKSAE_CHECK(B < (int64_t(1) << 31), "sae_in: batch ", B, " must be < 2^31");
  const bool stats = mode == Normalize::constant_norm_rescale || mode == Normalize::layer_norm;
  sae_in_kernel<<<unsigned(B), kRowThreads, 0, detail::stream(ctx)>>>(int(mode), x, b_dec, d, u,
                                                                      stats ? scale : nullptr, shift);
  CUDA_CHECK_LAUNCH();
}

void sae_out(Context& ctx, Normalize mode, float* xhat, int64_t B, int64_t d, const float* scale, const float* shift) {
  if (mode != Normalize::constant_norm_rescale && mode != Normalize::layer_norm) return;
  const int64_t total = B * d;
  if (total == 0) return;
  sae_out_kernel<<<detail::grid_for(total, 256), 256, 0, detail::stream(ctx)>>>(int(mode), xhat, total, d, scale,
                                                                                 shift);
  CUDA_CHECK_LAUNCH();
}

void scatter_dense(Context& ctx, const int32_t* idx, const float* val, int64_t B, int64_t k, int64_t n, float* z) {
  if (B == 0) return;
  CUDA_CHECK(cudaMemsetAsync(z, 0, size_t(B * n) * sizeof(float), detail::stream(ctx)));
  scatter_kernel<<<detail::grid_for(B * k, 256), 256, 0, detail::stream(ctx)>>>(idx, val, B * k, k, n, z);
  CUDA_CHECK_LAUNCH();
}

void count_nonzero(Context& ctx, const float* val, int64_t B, int64_t k, int64_t* counts) {
  count_kernel<<<detail::grid_for(B + 1, 256, INT32_MAX), 256, 0, detail::stream(ctx)>>>(val, B, k, counts);
  CUDA_CHECK_LAUNCH();
}

void compact_pairs(Context& ctx, const int32_t* idx, const float* val, int64_t B, int64_t k, const int64_t* indptr,
                   int32_t* cols, float* vals) {
  if (B == 0) return;
  compact_kernel<<<detail::grid_for(B, 128, INT32_MAX), 128, 0, detail::stream(ctx)>>>(idx, val, B, k, indptr, cols,
                                                                                        vals);
  CUDA_CHECK_LAUNCH();
}

void csr_decode(Context& ctx, const float* W, const float* bias, const int64_t* indptr, const int32_t* idx,
                const float* val, int64_t B, int64_t d, float* out) {
  if (B == 0 || d == 0) return;
  TOPKSAE_CHECK(B < (int64_t(1) << 31), "csr_decode: batch ", B, " must be < 2^31");
  constexpr int kThreads = 128;
  const dim3 grid{unsigned(B), unsigned((d + kThreads - 1) / kThreads), 1u};
  csr_decode_kernel<<<grid, kThreads, 0, detail::stream(ctx)>>>(W, bias, indptr, idx, val, d, out);
  CUDA_CHECK_LAUNCH();
}

void sub_from(Context& ctx, const float* x, float* e, int64_t n) {
  if (n == 0) return;
  sub_kernel<<<detail::grid_for(n, 256), 256, 0, detail::stream(ctx)>>>(x, e, n);
  CUDA_CHECK_LAUNCH();
}

void add_to(Context& ctx, float* out, const float* e, int64_t n) {
  if (n == 0) return;
  add_kernel<<<detail::grid_for(n, 256), 256, 0, detail::stream(ctx)>>>(out, e, n);
  CUDA_CHECK_LAUNCH();
}

void check_latents(Context& ctx, const int32_t* idx, int64_t count, int64_t d_sae, int32_t* bad) {
  if (count == 0) return;
  check_latents_kernel<<<detail::grid_for(count, 256), 256, 0, detail::stream(ctx)>>>(idx, count, d_sae, bad);
  CUDA_CHECK_LAUNCH();
}

void check_indptr(Context& ctx, const int64_t* indptr, int64_t B, int32_t* bad) {
  check_indptr_kernel<<<detail::grid_for(B + 1, 256), 256, 0, detail::stream(ctx)>>>(indptr, B, bad);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda::engine
