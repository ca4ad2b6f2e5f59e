// CUDA twin of the input/output normalisation (src/cpu/normalize.cpp) and of process_sae_in: the
// one place the GPU normalises, in all four modes, for the op twins and the inference engine.
#include "common/reduce.cuh"
#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
using detail::block_sum_to_all;
constexpr int kRowThreads = 256;

// The modes without statistics (none, expected_average_only_in; the scaling factor is folded
// into the weights): element-wise u = x - b_dec over the whole batch.
__global__ void centre_kernel(const float* __restrict__ x, const float* __restrict__ b_dec, int64_t total, int64_t d,
                              float* __restrict__ u) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    u[i] = b_dec ? x[i] - b_dec[i % d] : x[i];
}

// constant_norm_rescale / layer_norm: one block per row, the row's statistics in double as on the
// CPU, then u = normalised x - b_dec. scale/shift [B] as cpu::NormStats (may be null).
__global__ void __launch_bounds__(kRowThreads) row_norm_kernel(int mode, const float* __restrict__ x,
                                                               const float* __restrict__ b_dec, int64_t d,
                                                               float* __restrict__ u, float* __restrict__ scale,
                                                               float* __restrict__ shift) {
  const int64_t b = blockIdx.x;
  const float* xr = x + b * d;
  float* ur = u + b * d;
  float mul = 1.f, mu = 0.f, denom = 1.f, sc = 1.f;
  if (mode == int(Normalize::constant_norm_rescale)) {
    double ss = 0;
    for (int64_t i = threadIdx.x; i < d; i += kRowThreads) ss += double(xr[i]) * xr[i];
    ss = block_sum_to_all(ss);
    mul = float(sqrt(double(d)) / sqrt(ss));
    sc = mul;
  } else {  // layer_norm: (x - mu) / (std + 1e-5), std unbiased over (x - mu)
    double sum = 0;
    for (int64_t i = threadIdx.x; i < d; i += kRowThreads) sum += xr[i];
    mu = float(block_sum_to_all(sum) / double(d));
    double ss = 0;
    for (int64_t i = threadIdx.x; i < d; i += kRowThreads) {
      const double t = double(xr[i] - mu);
      ss += t * t;
    }
    const float sd = float(sqrt(block_sum_to_all(ss) / double(d - 1)));
    denom = sd + 1e-5f;
    sc = sd;
  }
  for (int64_t i = threadIdx.x; i < d; i += kRowThreads) {
    float v = xr[i];
    if (mode == int(Normalize::constant_norm_rescale))
      v = v * mul;
    else
      v = (v - mu) / denom;
    ur[i] = b_dec ? v - b_dec[i] : v;
  }
  if (threadIdx.x == 0) {
    if (scale) scale[b] = sc;
    if (shift) shift[b] = mu;
  }
}

__global__ void normalize_out_kernel(int mode, float* __restrict__ xhat, int64_t total, int64_t d,
                                     const float* __restrict__ scale, const float* __restrict__ shift) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / d;
    if (mode == int(Normalize::constant_norm_rescale))
      xhat[i] /= scale[b];
    else
      xhat[i] = xhat[i] * scale[b] + shift[b];
  }
}

bool has_stats(Normalize mode) { return mode == Normalize::constant_norm_rescale || mode == Normalize::layer_norm; }
}  // namespace

void normalize_in(Context& ctx, Normalize mode, const float* x, const float* b_dec, int64_t B, int64_t d, float* u,
                  float* scale, float* shift) {
  if (B == 0 || d == 0) return;
  if (!has_stats(mode)) {
    centre_kernel<<<detail::grid_for(B * d, 256), 256, 0, detail::stream(ctx)>>>(x, b_dec, B * d, d, u);
    CUDA_CHECK_LAUNCH();
    return;
  }
  if (mode == Normalize::layer_norm)
    TOPKSAE_CHECK(d >= 2, "layer_norm normalisation needs d_in >= 2 (unbiased std), got ", d);
  TOPKSAE_CHECK(B < (int64_t(1) << 31), "normalize_in: batch ", B, " must be < 2^31");
  row_norm_kernel<<<unsigned(B), kRowThreads, 0, detail::stream(ctx)>>>(int(mode), x, b_dec, d, u, scale, shift);
  CUDA_CHECK_LAUNCH();
}

void normalize_out(Context& ctx, Normalize mode, float* xhat, int64_t B, int64_t d, const float* scale,
                   const float* shift) {
  if (!has_stats(mode)) return;
  const int64_t total = B * d;
  if (total == 0) return;
  TOPKSAE_CHECK(scale != nullptr && shift != nullptr, "normalize_out: ", normalize_name(mode),
                " needs the statistics normalize_in wrote");
  normalize_out_kernel<<<detail::grid_for(total, 256), 256, 0, detail::stream(ctx)>>>(int(mode), xhat, total, d, scale,
                                                                                      shift);
  CUDA_CHECK_LAUNCH();
}

void process_sae_in(Context& ctx, const DeviceSae& sae, const float* x, int64_t B, float* u, float* scale,
                    float* shift) {
  normalize_in(ctx, sae.cfg.normalize, x, sae.cfg.apply_b_dec_to_input ? sae.bias_dec() : nullptr, B, sae.cfg.d_in, u,
               scale, shift);
}

}  // namespace topksae::cuda
