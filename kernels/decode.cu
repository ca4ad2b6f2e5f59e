// CUDA twins of decode (gather over top-k pairs, cuSPARSE SpMM on CSR / COO, dense cuBLAS) and of
// the conversions top-k pairs -> CSR / COO (zeros dropped, row-major order).
#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
constexpr int kGatherThreads = 128;
constexpr int kGatherChunk = 256;  // top-k pairs staged in shared memory per round

// out[b, c..c+3] = bias + sum_i val[b,i] * W[idx[b,i], c..c+3].
// A block of kGatherThreads threads covers TOK = kGatherThreads / TPT tokens x a slab of TPT * 4
// columns; grid (token groups, column slabs), token groups fastest, so the GPU sweeps W's columns
// slab by slab: a narrow slab keeps the slab's rows (n_rows x TPT * 16 bytes) in L2 while every
// token of the batch reads its k rows of it (each row of W is used by ~B*k/n tokens).
// VEC: d % 4 == 0 and 16-byte aligned pointers, so each thread moves float4s. n_rows > 0: a pair
// whose index is outside [0, n_rows) is staged with value 0, so it reads no row of W.
template <bool VEC, int TPT>
__global__ void __launch_bounds__(kGatherThreads) gather_decode_kernel(
    const float* __restrict__ W, const float* __restrict__ bias, const int32_t* __restrict__ idx,
    const float* __restrict__ val, int64_t B, int64_t k, int64_t ld, const int32_t* __restrict__ k_dev, int64_t d,
    float* __restrict__ out, int64_t n_rows) {
  constexpr int TOK = kGatherThreads / TPT;
  __shared__ int32_t s_idx[TOK][kGatherChunk];
  __shared__ float s_val[TOK][kGatherChunk];
  const int lt = threadIdx.x / TPT;  // the token of this thread within the block
  const int lane = threadIdx.x % TPT;
  const int64_t b = int64_t(blockIdx.x) * TOK + lt;
  const bool row_ok = b < B;  // the last group may be partial; its extra threads still reach the barriers
  const int64_t c = (int64_t(blockIdx.y) * TPT + lane) * 4;
  int64_t kk = k;
  if (k_dev != nullptr) kk = min(int64_t(*k_dev), k);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (bias != nullptr)
    for (int q = 0; q < 4; ++q)
      if (c + q < d) acc[q] = bias[c + q];
  for (int64_t c0 = 0; c0 < kk; c0 += kGatherChunk) {  // kk is the same for the whole block
    const int m = int(kk - c0 < kGatherChunk ? kk - c0 : int64_t(kGatherChunk));
    __syncthreads();
    if (row_ok)
      for (int t = lane; t < m; t += TPT) {
        const int32_t j = idx[b * ld + c0 + t];
        const bool in_range = n_rows <= 0 || (j >= 0 && int64_t(j) < n_rows);
        s_idx[lt][t] = in_range ? j : 0;
        s_val[lt][t] = in_range ? val[b * ld + c0 + t] : 0.f;
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

template <int TPT>
void launch_gather(cudaStream_t st, bool vec, const float* W, const float* bias, const int32_t* idx, const float* val,
                   int64_t B, int64_t k, int64_t ld, const int32_t* k_dev, int64_t d, float* out, int64_t n_rows) {
  constexpr int TOK = kGatherThreads / TPT;
  const int64_t groups = (B + TOK - 1) / TOK;
  const int64_t slabs = (d + 4 * TPT - 1) / (4 * TPT);
  TOPKSAE_CHECK(slabs <= 65535, "gather_decode: d=", d, " needs ", slabs, " column slabs of ", 4 * TPT,
                " (at most 65535); use more threads per token");
  const dim3 grid{unsigned(groups), unsigned(slabs), 1u};
  if (vec)
    gather_decode_kernel<true, TPT><<<grid, kGatherThreads, 0, st>>>(W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows);
  else
    gather_decode_kernel<false, TPT><<<grid, kGatherThreads, 0, st>>>(W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows);
  CUDA_CHECK_LAUNCH();
}

// counts[b] = non-zeros of row b (counts[rows] = 0, so an exclusive scan ends with the total).
__global__ void count_nonzero_kernel(const float* __restrict__ val, int64_t rows, int64_t k, int64_t* __restrict__ counts) {
  const int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (b > rows) return;
  int64_t c = 0;
  if (b < rows)
    for (int64_t i = 0; i < k; ++i) c += val[b * k + i] != 0.f;
  counts[b] = c;
}

// One warp per row: ordered compaction of the non-zero pairs to offsets[b].
__global__ void compact_kernel(const int32_t* __restrict__ idx, const float* __restrict__ val, int64_t rows, int64_t k,
                               const int64_t* __restrict__ offsets, int64_t* __restrict__ row_out,
                               int32_t* __restrict__ col_out, float* __restrict__ val_out) {
  const int64_t b = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (b >= rows) return;
  int64_t pos = offsets[b];
  for (int64_t i0 = 0; i0 < k; i0 += 32) {
    const int64_t i = i0 + lane;
    const float v = i < k ? val[b * k + i] : 0.f;
    const bool nz = v != 0.f;
    const unsigned bal = __ballot_sync(0xffffffffu, nz);
    if (nz) {
      const int64_t p = pos + __popc(bal & ((1u << lane) - 1u));
      if (row_out) row_out[p] = b;
      col_out[p] = idx[b * k + i];
      val_out[p] = v;
    }
    pos += __popc(bal);
  }
}

template <typename From, typename To>
__global__ void narrow_kernel(const From* __restrict__ src, To* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = To(src[i]);
}

// Row offsets of the non-zeros of codes into `offsets` [rows + 1] (device), via kSlotRowCount.
void row_offsets(Context& ctx, const TopKCodes& c, int64_t* offsets) {
  auto* counts = static_cast<int64_t*>(ctx.scratch(detail::kSlotRowCount, size_t(c.rows + 1) * 8));
  count_nonzero_kernel<<<detail::grid_for(c.rows + 1, 256, INT32_MAX), 256, 0, detail::stream(ctx)>>>(c.val(), c.rows,
                                                                                                   c.k, counts);
  CUDA_CHECK_LAUNCH();
  detail::exclusive_scan_i64(ctx, counts, offsets, c.rows + 1);
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
  if (B == 0 || d == 0) return;
  TOPKSAE_CHECK(B < (int64_t(1) << 31), "gather_decode: batch ", B, " must be < 2^31");
  const bool vec = d % 4 == 0 && (reinterpret_cast<uintptr_t>(W) % 16 == 0) && (reinterpret_cast<uintptr_t>(out) % 16 == 0);
  int tpt = threads_per_token;
  if (tpt == 0) tpt = gather_threads_per_token(ctx, n_rows > 0 ? n_rows : B * k);
  cudaStream_t st = detail::stream(ctx);
  switch (tpt) {
    case 16: launch_gather<16>(st, vec, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows); break;
    case 32: launch_gather<32>(st, vec, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows); break;
    case 64: launch_gather<64>(st, vec, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows); break;
    case 128: launch_gather<128>(st, vec, W, bias, idx, val, B, k, ld, k_dev, d, out, n_rows); break;
    default: TOPKSAE_FAIL("gather_decode: threads_per_token=", threads_per_token, " must be 0 (auto), 16, 32, 64 or 128");
  }
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

// Buffers of a CSR / COO output only grow (no cudaMalloc once warm). Those replaced may still be
// read by work queued on the stream: finish it first (as Context::scratch).
void topk_to_csr(Context& ctx, const TopKCodes& c, Csr& out) {
  const int64_t cap = c.rows * c.k;
  const size_t ptr_bytes = size_t(c.rows + 1) * 8;
  const bool grow_ptr = out.indptr.bytes() < ptr_bytes;
  const bool grow_cap = out.capacity < cap || out.indices.data() == nullptr || out.values.data() == nullptr;
  if (grow_ptr || grow_cap) ctx.synchronize();
  if (grow_ptr) out.indptr = DeviceBuffer(ptr_bytes);
  if (grow_cap) {
    out.capacity = cap;
    out.indices = DeviceBuffer(size_t(cap > 0 ? cap : 1) * 4);
    out.values = DeviceBuffer(size_t(cap > 0 ? cap : 1) * 4);
  }
  out.rows = c.rows;
  out.cols = c.d_sae;
  out.nnz = -1;
  auto* indptr = static_cast<int64_t*>(out.indptr.data());
  row_offsets(ctx, c, indptr);
  if (c.rows == 0) return;
  compact_kernel<<<detail::grid_for(c.rows * 32, 256, INT32_MAX), 256, 0, detail::stream(ctx)>>>(
      c.idx(), c.val(), c.rows, c.k, indptr, nullptr, static_cast<int32_t*>(out.indices.data()),
      static_cast<float*>(out.values.data()));
  CUDA_CHECK_LAUNCH();
}

void topk_to_coo(Context& ctx, const TopKCodes& c, Coo& out) {
  const int64_t cap = c.rows * c.k;
  const bool grow_cap = out.capacity < cap || out.row.data() == nullptr || out.col.data() == nullptr ||
                        out.values.data() == nullptr;
  if (grow_cap) {
    ctx.synchronize();
    out.capacity = cap;
    out.row = DeviceBuffer(size_t(cap > 0 ? cap : 1) * 8);
    out.col = DeviceBuffer(size_t(cap > 0 ? cap : 1) * 4);
    out.values = DeviceBuffer(size_t(cap > 0 ? cap : 1) * 4);
  }
  if (out.count.data() == nullptr) out.count = DeviceBuffer(8);
  out.rows = c.rows;
  out.cols = c.d_sae;
  out.nnz = -1;
  auto* offsets = static_cast<int64_t*>(ctx.scratch(detail::kSlotRowOffsets, size_t(c.rows + 1) * 8));
  row_offsets(ctx, c, offsets);
  CUDA_CHECK(cudaMemcpyAsync(out.count.data(), offsets + c.rows, 8, cudaMemcpyDeviceToDevice, detail::stream(ctx)));
  if (c.rows == 0) return;
  compact_kernel<<<detail::grid_for(c.rows * 32, 256, INT32_MAX), 256, 0, detail::stream(ctx)>>>(
      c.idx(), c.val(), c.rows, c.k, offsets, static_cast<int64_t*>(out.row.data()),
      static_cast<int32_t*>(out.col.data()), static_cast<float*>(out.values.data()));
  CUDA_CHECK_LAUNCH();
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
