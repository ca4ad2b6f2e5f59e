// CUDA twins of the sparse conversions (src/cpu/sparse_convert.cpp): top-k pairs -> CSR / COO
// (zeros dropped, row-major order) and -> dense z. The pointer forms (topk_row_offsets,
// compact_topk, topk_to_dense) are what the containers' forms and the inference engine both use.
#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
// counts[b] = non-zeros of row b of val [rows, k] (counts[rows] = 0, so an exclusive scan ends
// with the total).
__global__ void count_nonzero_kernel(const float* __restrict__ val, int64_t rows, int64_t k,
                                     int64_t* __restrict__ counts) {
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

__global__ void scatter_kernel(const int32_t* __restrict__ idx, const float* __restrict__ val, int64_t total,
                               int64_t k, int64_t n, float* __restrict__ z) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    z[(i / k) * n + idx[i]] = val[i];
}
}  // namespace

void topk_row_offsets(Context& ctx, const float* val, int64_t B, int64_t k, int64_t* offsets) {
  auto* counts = static_cast<int64_t*>(ctx.scratch(detail::kSlotRowCount, size_t(B + 1) * 8));
  count_nonzero_kernel<<<detail::grid_for(B + 1, 256, INT32_MAX), 256, 0, detail::stream(ctx)>>>(val, B, k, counts);
  CUDA_CHECK_LAUNCH();
  detail::exclusive_scan_i64(ctx, counts, offsets, B + 1);
}

void compact_topk(Context& ctx, const int32_t* idx, const float* val, int64_t B, int64_t k, const int64_t* offsets,
                  int64_t* rows, int32_t* cols, float* vals) {
  if (B == 0) return;
  compact_kernel<<<detail::grid_for(B * 32, 256, INT32_MAX), 256, 0, detail::stream(ctx)>>>(idx, val, B, k, offsets,
                                                                                           rows, cols, vals);
  CUDA_CHECK_LAUNCH();
}

void topk_to_dense(Context& ctx, const int32_t* idx, const float* val, int64_t B, int64_t k, int64_t n, float* z) {
  if (B == 0) return;
  CUDA_CHECK(cudaMemsetAsync(z, 0, size_t(B * n) * sizeof(float), detail::stream(ctx)));
  if (k == 0) return;
  scatter_kernel<<<detail::grid_for(B * k, 256), 256, 0, detail::stream(ctx)>>>(idx, val, B * k, k, n, z);
  CUDA_CHECK_LAUNCH();
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
  topk_row_offsets(ctx, c.val(), c.rows, c.k, indptr);
  compact_topk(ctx, c.idx(), c.val(), c.rows, c.k, indptr, nullptr, static_cast<int32_t*>(out.indices.data()),
               static_cast<float*>(out.values.data()));
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
  topk_row_offsets(ctx, c.val(), c.rows, c.k, offsets);
  CUDA_CHECK(cudaMemcpyAsync(out.count.data(), offsets + c.rows, 8, cudaMemcpyDeviceToDevice, detail::stream(ctx)));
  compact_topk(ctx, c.idx(), c.val(), c.rows, c.k, offsets, static_cast<int64_t*>(out.row.data()),
               static_cast<int32_t*>(out.col.data()), static_cast<float*>(out.values.data()));
}

}  // namespace topksae::cuda
