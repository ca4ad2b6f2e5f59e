// CUDA twins of encode_pre and encode_topk (process_sae_in is in normalize.cu), plus the small
// dense helpers the backend shares (row fill, row-major cuBLAS GEMM, bf16 conversion, copy, scan, random fill).
// The encoder GEMM itself (cuBLAS or cublasLt, EncoderGemm) is kernels/gemm_lt.cpp's.
#include <algorithm>

#include <cub/device/device_scan.cuh>
#include <cuda_bf16.h>

#include "core/counter_rng.h"
#include "cuda_internal.h"
#include "gemm_lt.h"

namespace topksae::cuda {

namespace {
__global__ void fill_rows_kernel(float* __restrict__ out, const float* __restrict__ bias, int64_t total, int64_t d) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = bias ? bias[i % d] : 0.f;
}

__global__ void to_bf16_kernel(const float* __restrict__ src, __nv_bfloat16* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void copy_kernel(const float4* __restrict__ src, float4* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

// A counter-based hash -> two uniforms -> Box-Muller: reproducible for a seed, any n.
__device__ __forceinline__ uint64_t mix64(uint64_t z) { return topksae::detail::splitmix64_mix(z + 0x9E3779B97F4A7C15ull); }
__global__ void fill_random_kernel(float* __restrict__ dst, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = mix64(seed * 0x100000001B3ull + uint64_t(i));
    const float u1 = (float(r >> 40) + 1.f) * (1.f / 16777217.f);
    const float u2 = float((r >> 16) & 0xFFFFFF) * (1.f / 16777216.f);
    dst[i] = scale * sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
  }
}
}  // namespace

namespace detail {
void fill_rows(Context& ctx, float* out, const float* bias, int64_t B, int64_t d) {
  const int64_t total = B * d;
  if (total == 0) return;
  fill_rows_kernel<<<grid_for(total, 256), 256, 0, stream(ctx)>>>(out, bias, total, d);
  CUDA_CHECK_LAUNCH();
}

void gemm_rowmajor(Context& ctx, const float* A, const float* B, float* C, int64_t M, int64_t K, int64_t N,
                   float beta, Precision p) {
  gemm_rowmajor_ex(ctx, false, false, M, N, K, A, K, B, N, beta, C, N, p);
}

void gemm_rowmajor_ex(Context& ctx, bool tA, bool tB, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                      const float* B, int64_t ldb, float beta, float* C, int64_t ldc, Precision p) {
  TOPKSAE_CHECK(p != Precision::bf16, "gemm_rowmajor: bf16 operands need the bf16 path");
  TOPKSAE_CHECK(M < (int64_t(1) << 31) && K < (int64_t(1) << 31) && N < (int64_t(1) << 31),
                "GEMM dims must be < 2^31");
  if (M == 0 || N == 0) return;
  const float alpha = 1.f;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: B first, each stored row-major
  // matrix being its own transpose to cuBLAS.
  const cublasComputeType_t ct = p == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(cublasGemmEx(cublas(ctx), tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N, int(N),
                            int(M), int(K), &alpha, B, CUDA_R_32F, int(ldb), A, CUDA_R_32F, int(lda), &beta, C,
                            CUDA_R_32F, int(ldc), ct, CUBLAS_GEMM_DEFAULT));
}

void exclusive_scan_i64(Context& ctx, const int64_t* in, int64_t* out, int64_t n) {
  size_t tmp = 0;
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, tmp, in, out, n, stream(ctx)));
  void* t = ctx.scratch(kSlotScanTmp, tmp);
  CUDA_CHECK(cub::DeviceScan::ExclusiveSum(t, tmp, in, out, n, stream(ctx)));
}
}  // namespace detail

void to_bf16(Context& ctx, const float* src, uint16_t* dst, int64_t n) {
  if (n == 0) return;
  to_bf16_kernel<<<detail::grid_for(n, 256), 256, 0, detail::stream(ctx)>>>(src, reinterpret_cast<__nv_bfloat16*>(dst), n);
  CUDA_CHECK_LAUNCH();
}

void device_copy(Context& ctx, void* dst, const void* src, size_t bytes) {
  TOPKSAE_CHECK(bytes % 16 == 0, "device_copy: ", bytes, " bytes is not a multiple of 16");
  const int64_t n = int64_t(bytes / 16);
  if (n == 0) return;
  const unsigned grid = unsigned(std::min<int64_t>((n + 255) / 256, int64_t(ctx.sm_count()) * 8));
  copy_kernel<<<grid, 256, 0, detail::stream(ctx)>>>(static_cast<const float4*>(src), static_cast<float4*>(dst), n);
  CUDA_CHECK_LAUNCH();
}

void fill_random(Context& ctx, float* dst, int64_t n, uint64_t seed, float scale) {
  if (n == 0) return;
  fill_random_kernel<<<detail::grid_for(n, 256), 256, 0, detail::stream(ctx)>>>(dst, n, seed, scale);
  CUDA_CHECK_LAUNCH();
}

void encode_pre(Context& ctx, const DeviceSae& sae, const float* u, int64_t B, float* h, Precision p, bool add_bias,
                EncoderGemm how) {
  const int64_t d = sae.cfg.d_in, n = sae.cfg.d_sae;
  if (B == 0) return;
  const float* bias = add_bias ? sae.bias_enc() : nullptr;
  if (p != Precision::bf16) {
    detail::encoder_gemm(ctx, how, p, B, n, d, u, sae.w_enc(), bias, h);
    return;
  }
  TOPKSAE_CHECK(sae.W_enc_bf16.bytes() >= size_t(d * n) * 2,
                "encode_pre in bf16 needs the bf16 copy of W_enc: call DeviceSae::ensure_bf16 first");
  auto* u16 = static_cast<uint16_t*>(ctx.scratch(detail::kSlotUBf16, size_t(B * d) * 2));
  to_bf16(ctx, u, u16, B * d);
  detail::encoder_gemm(ctx, how, p, B, n, d, u16, sae.w_enc_bf16(), bias, h);
}

void encode_topk(Context& ctx, const DeviceSae& sae, const float* x, int64_t B, Precision p, TopKCodes& out,
                 int64_t chunk_rows, EncoderGemm how) {
  const int64_t d = sae.cfg.d_in, n = sae.cfg.d_sae, k = sae.cfg.k;
  TOPKSAE_CHECK(chunk_rows >= -1, "encode_topk: chunk_rows=", chunk_rows, " must be -1 (whole batch), 0 (auto) or > 0");
  // Grow only: a smaller batch reuses the buffers (no cudaMalloc once warm). Buffers replaced
  // here may still be read by work queued on the stream: finish it first (as Context::scratch).
  const size_t bytes = size_t(B * k > 0 ? B * k : 1) * 4;
  if (out.indices.bytes() < bytes || out.values.bytes() < bytes) {
    ctx.synchronize();
    if (out.indices.bytes() < bytes) out.indices = DeviceBuffer(bytes);
    if (out.values.bytes() < bytes) out.values = DeviceBuffer(bytes);
  }
  out.rows = B;
  out.k = k;
  out.d_sae = n;
  if (B == 0) return;
  const int64_t rows = encode_chunk_rows(n, B, chunk_rows);
  auto* u = static_cast<float*>(ctx.scratch(detail::kSlotU, size_t(B * d) * 4));
  auto* h = static_cast<float*>(ctx.scratch(detail::kSlotH, size_t(rows * n) * 4));  // [rows, d_sae]: one chunk
  process_sae_in(ctx, sae, x, B, u);
  TopKOptions opt;
  opt.bias = sae.bias_enc();  // the bias is fused into the selection
  opt.relu = true;
  for (int64_t r0 = 0; r0 < B; r0 += rows) {
    const int64_t m = std::min(rows, B - r0);
    encode_pre(ctx, sae, u + r0 * d, m, h, p, /*add_bias=*/false, how);
    topk_select(ctx, h, m, n, k, out.idx() + r0 * k, out.val() + r0 * k, opt);
  }
}

}  // namespace topksae::cuda
