// CUDA twins of decode (gather over top-k pairs or CSR rows, cuSPARSE SpMM on CSR / COO, dense
// cuBLAS) and the device-side checks of caller codes. The conversions top-k pairs -> CSR / COO are
// in sparse_convert.cu.
#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
constexpr int kGatherThreads = 128;
constexpr int kGatherChunk = 256;  // top-k pairs staged in shared memory per round

// out[b, c..c+3] = bias + sum_i val[i] * W[idx[i], c..c+3] over row b's pairs: i in
// [b*ld, b*ld + k) for top-k pairs, [indptr[b], indptr[b+1]) for CSR rows (CSR).
// A block of kGatherThreads threads covers TOK = kGatherThreads / TPT tokens x a slab of TPT * 4
// columns; grid (token groups, column slabs), token groups fastest, so the GPU sweeps W's columns
// slab by slab: a narrow slab keeps the slab's rows (n_rows x TPT * 16 bytes) in L2 while every
// token of the batch reads its k rows of it (each row of W is used by ~B*k/n tokens).
// VEC: d % 4 == 0 and 16-byte aligned pointers, so each thread moves float4s. n_rows > 0: a pair
// whose index is outside [0, n_rows) is staged with value 0, so it reads no row of W.
template <bool VEC, int TPT, bool CSR>
__global__ void __launch_bounds__(kGatherThreads) gather_decode_kernel(
    const float* __restrict__ W, const float* __restrict__ bias, const int32_t* __restrict__ idx,
    const float* __restrict__ val, int64_t B, int64_t k, int64_t ld, const int32_t* __restrict__ k_dev, int64_t d,
    float* __restrict__ out, int64_t n_rows, const int64_t* __restrict__ indptr) {
  constexpr int TOK = kGatherThreads / TPT;
  __shared__ int32_t s_idx[TOK][kGatherChunk];
  __shared__ float s_val[TOK][kGatherChunk];
  const int lt = threadIdx.x / TPT;  // the token of this thread within the block
  const int lane = threadIdx.x % TPT;
  const int64_t b = int64_t(blockIdx.x) * TOK + lt;
  const bool row_ok = b < B;  // the last group may be partial; its extra threads still reach the barriers
  const int64_t c = (int64_t(blockIdx.y) * TPT + lane) * 4;
  int64_t kk = k;  // the block's rounds run over kk pairs (the same for every thread of the block)
  int64_t first = 0, count = 0;  // CSR: row b's first pair and its pair count (may be < kk)
  if constexpr (CSR) {
    __shared__ int64_t s_count[TOK];
    if (row_ok) {
      first = indptr[b];
      count = indptr[b + 1] - first;
    }
    if (lane == 0) s_count[lt] = count;
    __syncthreads();
    kk = 0;
    for (int t = 0; t < TOK; ++t) kk = max(kk, s_count[t]);
  } else {
    if (k_dev != nullptr) kk = min(int64_t(*k_dev), k);
  }
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (bias != nullptr)
    for (int q = 0; q < 4; ++q)
      if (c + q < d) acc[q] = bias[c + q];
  for (int64_t c0 = 0; c0 < kk; c0 += kGatherChunk) {
    int m;  // this round's pairs of row b
    int64_t p0;
    if constexpr (CSR) {
      const int64_t left = count - c0;
      m = int(left <= 0 ? int64_t(0) : left < kGatherChunk ? left : int64_t(kGatherChunk));
      p0 = first + c0;
    } else {
      m = int(kk - c0 < kGatherChunk ? kk - c0 : int64_t(kGatherChunk));
      p0 = b * ld + c0;
    }
    __syncthreads();
    if (row_ok)
      for (int t = lane; t < m; t += TPT) {
        const int32_t j = idx[p0 + t];
        const bool in_range = n_rows <= 0 || (j >= 0 && int64_t(j) < n_rows);
        s_idx[lt][t] = in_range ? j : 0;
        s_val[lt][t] = in_range ? val[p0 + t] : 0.f;
      }
    __syncthreads();
    if (row_ok && c < d) {
#pragma unroll 4
      for (int t = 0; t < m; ++t) {
        const float v = s_val[lt][t];
        if (v == 0.f) continue;  // as the CPU twin: a zero code adds nothing (not even 0*inf)
        const float* w = W + int64_t(s_idx[lt][t]) * d + c;
        if constexpr (VEC) {
          const float4 x = *reinterpret_cast<const float4*>(w);
          acc[0] += v * x.x;
          acc[1] += v * x.y;
          acc[2] += v * x.z;
          acc[3] += v * x.w;
        } else {
          for (int q = 0; q < 4; ++q)
            if (c + q < d) acc[q] += v * w[q];
        }
      }
    }
  }
  if (!row_ok || c >= d) return;
  float* o = out + b * d + c;
  if constexpr (VEC) {
    *reinterpret_cast<float4*>(o) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  } else {
    for (int q = 0; q < 4; ++q)
      if (c + q < d) o[q] = acc[q];
  }
}

template <int TPT, bool CSR>
void launch_gather(cudaStream_t st, bool vec, const float* W, const float* bias, const int32_t* idx, const float* val,
                   int64_t B, int64_t k, int64_t ld, const int32_t* k_dev, int64_t d, float* out, int64_t n_rows,
                   const int64_t* indptr) {
  constexpr int TOK = kGatherThreads / TPT;
  const int64_t groups = (B + TOK - 1) / TOK;
  const int64_t slabs = (d + 4 * TPT - 1) / (4 * TPT);
  TOPKSAE_CHECK(slabs <= 65535, "gather_decode: d=", d, " needs ", slabs, " column slabs of ", 4 * TPT,
                " (at most 65535); use more threads per token");
  const dim3 grid{unsigned(groups), unsigned(slabs), 1u};
  if (vec)
    gather_decode_kernel<true, TPT, CSR>
        <<<grid, kGatherThreads, 0, st>>>(W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows, indptr);
  else
    gather_decode_kernel<false, TPT, CSR>
        <<<grid, kGatherThreads, 0, st>>>(W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows, indptr);
  CUDA_CHECK_LAUNCH();
}

// The launch of either form at threads_per_token (0: gather_threads_per_token for rows_used).
template <bool CSR>
void gather(Context& ctx, const float* W, const float* bias, const int32_t* idx, const float* val, int64_t B,
            int64_t k, int64_t ld, const int32_t* k_dev, int64_t d, float* out, int64_t n_rows, const int64_t* indptr,
            int64_t rows_used, int threads_per_token) {
  if (B == 0 || d == 0) return;
  TOPKSAE_CHECK(B < (int64_t(1) << 31), "gather_decode: batch ", B, " must be < 2^31");
  const bool vec = d % 4 == 0 && (reinterpret_cast<uintptr_t>(W) % 16 == 0) && (reinterpret_cast<uintptr_t>(out) % 16 == 0);
  int tpt = threads_per_token;
  if (tpt == 0) tpt = gather_threads_per_token(ctx, rows_used);
  cudaStream_t st = detail::stream(ctx);
  switch (tpt) {
    case 16: launch_gather<16, CSR>(st, vec, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows, indptr); break;
    case 32: launch_gather<32, CSR>(st, vec, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows, indptr); break;
    case 64: launch_gather<64, CSR>(st, vec, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows, indptr); break;
    case 128: launch_gather<128, CSR>(st, vec, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows, indptr); break;
    default: TOPKSAE_FAIL("gather_decode: threads_per_token=", threads_per_token, " must be 0 (auto), 16, 32, 64 or 128");
  }
}

__global__ void check_latents_kernel(const int32_t* __restrict__ idx, int64_t count, int64_t n_rows,
                                     int32_t* __restrict__ bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    if (idx[i] < 0 || idx[i] >= n_rows) *bad = 1;
}

__global__ void check_indptr_kernel(const int64_t* __restrict__ indptr, int64_t B, int32_t* __restrict__ bad) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b <= B; b += int64_t(gridDim.x) * blockDim.x) {
    if (b == 0 && indptr[0] != 0) *bad = 1;
    if (b < B && indptr[b] > indptr[b + 1]) *bad = 1;
  }
}

template <typename From, typename To>
__global__ void narrow_kernel(const From* __restrict__ src, To* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = To(src[i]);
}

// Row-major B and C: the algorithms made for that layout first (CSR_ALG2 / COO_ALG4), then the
// library default if this cuSPARSE refuses them.
void spmm(Context& ctx, const DeviceSae& sae, cusparseSpMatDescr_t A, int64_t rows, float* out, bool is_csr) {
  const int64_t d = sae.cfg.d_in, n = sae.cfg.d_sae;
  cusparseDnMatDescr_t Bm = nullptr, Cm = nullptr;
  CUSPARSE_CHECK(cusparseCreateDnMat(&Bm, n, d, d, const_cast<float*>(sae.w_dec()), CUDA_R_32F, CUSPARSE_ORDER_ROW));
  CUSPARSE_CHECK(cusparseCreateDnMat(&Cm, rows, d, d, out, CUDA_R_32F, CUSPARSE_ORDER_ROW));
  const float alpha = 1.f, beta = 1.f;
  size_t bytes = 0;
  cusparseHandle_t hs = detail::cusparse(ctx);
  cusparseSpMMAlg_t alg = is_csr ? CUSPARSE_SPMM_CSR_ALG2 : CUSPARSE_SPMM_COO_ALG4;
  cusparseStatus_t st = cusparseSpMM_bufferSize(hs, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE,
                                                &alpha, A, Bm, &beta, Cm, CUDA_R_32F, alg, &bytes);
  if (st != CUSPARSE_STATUS_SUCCESS) {
    alg = CUSPARSE_SPMM_ALG_DEFAULT;
    CUSPARSE_CHECK(cusparseSpMM_bufferSize(hs, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &alpha,
                                           A, Bm, &beta, Cm, CUDA_R_32F, alg, &bytes));
  }
  void* work = ctx.scratch(detail::kSlotSpmmWork, bytes);
  CUSPARSE_CHECK(cusparseSpMM(hs, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &alpha, A, Bm,
                              &beta, Cm, CUDA_R_32F, alg, work));
  CUSPARSE_CHECK(cusparseDestroyDnMat(Bm));
  CUSPARSE_CHECK(cusparseDestroyDnMat(Cm));
}
}  // namespace

void gather_decode(Context& ctx, const float* W, const float* bias, const int32_t* idx, const float* val, int64_t B,
                   int64_t k, int64_t ld, const int32_t* k_dev, int64_t d, float* out, int64_t n_rows,
                   int threads_per_token) {
  gather<false>(ctx, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows, nullptr, n_rows > 0 ? n_rows : B * k,
                threads_per_token);
}

void gather_decode_csr(Context& ctx, const float* W, const float* bias, const int64_t* indptr, const int32_t* idx,
                       const float* val, int64_t B, int64_t d, float* out, int64_t n_rows, int threads_per_token) {
  gather<true>(ctx, W, bias, idx, val, B, 0, 0, nullptr, d, out, n_rows, indptr, n_rows > 0 ? n_rows : B,
               threads_per_token);
}

void check_latents(Context& ctx, const int32_t* idx, int64_t count, int64_t n_rows, int32_t* bad) {
  if (count == 0) return;
  check_latents_kernel<<<detail::grid_for(count, 256), 256, 0, detail::stream(ctx)>>>(idx, count, n_rows, bad);
  CUDA_CHECK_LAUNCH();
}

void check_indptr(Context& ctx, const int64_t* indptr, int64_t B, int32_t* bad) {
  check_indptr_kernel<<<detail::grid_for(B + 1, 256), 256, 0, detail::stream(ctx)>>>(indptr, B, bad);
  CUDA_CHECK_LAUNCH();
}

int gather_threads_per_token(const Context& ctx, int64_t rows_used) {
  // Measured on an H200 (bench/results/H200-2026-11-27-run2.md, bench_decode's slab variants):
  // 32 threads (128-column slabs) were fastest at both PERF.md shapes (0.276 ms vs 0.285 for 16
  // threads at 2304x65536, whose 128-column slab rows fill 56% of L2; 0.046 vs 0.050 for 64
  // threads at 768x24576), and wider slabs lost even where their rows fit in L2. So: 32 threads,
  // or 16 (64 columns, 256-byte row segments) when the slab's rows would not fit in L2 at all.
  return detail::widest_slab_threads(rows_used, int64_t(ctx.l2_bytes()), 32);
}

void decode_topk(Context& ctx, const DeviceSae& sae, const TopKCodes& c, float* out) {
  TOPKSAE_CHECK(c.d_sae == sae.cfg.d_sae, "decode: codes have d_sae=", c.d_sae, ", the SAE has ", sae.cfg.d_sae);
  // Codes may come from anywhere (upload of user pairs): the kernel skips indices outside W_dec.
  gather_decode(ctx, sae.w_dec(), sae.bias_dec(), c.idx(), c.val(), c.rows, c.k, c.k, nullptr, sae.cfg.d_in, out,
                sae.cfg.d_sae);
}

void decode_dense(Context& ctx, const DeviceSae& sae, const float* z, int64_t B, float* out, Precision p) {
  if (B == 0) return;
  detail::fill_rows(ctx, out, sae.bias_dec(), B, sae.cfg.d_in);
  detail::gemm_rowmajor(ctx, z, sae.w_dec(), out, B, sae.cfg.d_sae, sae.cfg.d_in, 1.f, p);
}

void decode_csr(Context& ctx, const DeviceSae& sae, Csr& s, float* out) {
  TOPKSAE_CHECK(s.cols == sae.cfg.d_sae, "decode: CSR has ", s.cols, " columns, the SAE has d_sae=", sae.cfg.d_sae);
  const int64_t nnz = s.sync_nnz(ctx);  // one sync when the count is still only on the device
  TOPKSAE_CHECK(nnz < (int64_t(1) << 31) && s.rows < (int64_t(1) << 31), "decode_csr: more than 2^31 entries");
  detail::fill_rows(ctx, out, sae.bias_dec(), s.rows, sae.cfg.d_in);
  if (nnz == 0 || s.rows == 0) return;
  // cuSPARSE wants one index width for offsets and columns: narrow the int64 offsets to int32.
  auto* ptr32 = static_cast<int32_t*>(ctx.scratch(detail::kSlotIdx32, size_t(s.rows + 1) * 4));
  narrow_kernel<int64_t, int32_t><<<detail::grid_for(s.rows + 1, 256), 256, 0, detail::stream(ctx)>>>(
      static_cast<const int64_t*>(s.indptr.data()), ptr32, s.rows + 1);
  CUDA_CHECK_LAUNCH();
  cusparseSpMatDescr_t A = nullptr;
  CUSPARSE_CHECK(cusparseCreateCsr(&A, s.rows, s.cols, nnz, ptr32, s.indices.data(), s.values.data(),
                                   CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F));
  spmm(ctx, sae, A, s.rows, out, /*is_csr=*/true);
  CUSPARSE_CHECK(cusparseDestroySpMat(A));
}

void decode_coo(Context& ctx, const DeviceSae& sae, Coo& s, float* out) {
  TOPKSAE_CHECK(s.cols == sae.cfg.d_sae, "decode: COO has ", s.cols, " columns, the SAE has d_sae=", sae.cfg.d_sae);
  const int64_t nnz = s.sync_nnz(ctx);
  TOPKSAE_CHECK(nnz < (int64_t(1) << 31) && s.rows < (int64_t(1) << 31), "decode_coo: more than 2^31 entries");
  detail::fill_rows(ctx, out, sae.bias_dec(), s.rows, sae.cfg.d_in);
  if (nnz == 0 || s.rows == 0) return;
  auto* row32 = static_cast<int32_t*>(ctx.scratch(detail::kSlotIdx32, size_t(nnz) * 4));
  narrow_kernel<int64_t, int32_t><<<detail::grid_for(nnz, 256), 256, 0, detail::stream(ctx)>>>(
      static_cast<const int64_t*>(s.row.data()), row32, nnz);
  CUDA_CHECK_LAUNCH();
  cusparseSpMatDescr_t A = nullptr;
  CUSPARSE_CHECK(cusparseCreateCoo(&A, s.rows, s.cols, nnz, row32, s.col.data(), s.values.data(), CUSPARSE_INDEX_32I,
                                   CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F));
  spmm(ctx, sae, A, s.rows, out, /*is_csr=*/false);
  CUSPARSE_CHECK(cusparseDestroySpMat(A));
}

}  // namespace topksae::cuda
