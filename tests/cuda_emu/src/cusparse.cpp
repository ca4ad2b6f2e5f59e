// CUDA emulation (tests/cuda_emu/README.md): cuSPARSE SpMM (CSR or COO times dense) on the host.
#include <cstdint>
#include <cstdio>

#include "cuda_runtime.h"
#include "cusparse.h"

struct cusparseContext {
  cudaStream_t stream = nullptr;
};
struct cusparseSpMatDescr {
  bool csr = true;
  int64_t rows = 0, cols = 0, nnz = 0;
  void* row = nullptr;  // CSR: row offsets [rows + 1]; COO: row indices [nnz]
  void* col = nullptr;  // [nnz]
  void* val = nullptr;  // [nnz]
  cusparseIndexType_t row_type = CUSPARSE_INDEX_32I, col_type = CUSPARSE_INDEX_32I;
  cusparseIndexBase_t base = CUSPARSE_INDEX_BASE_ZERO;
  cudaDataType type = CUDA_R_32F;
};
struct cusparseDnMatDescr {
  int64_t rows = 0, cols = 0, ld = 0;
  float* values = nullptr;
  cusparseOrder_t order = CUSPARSE_ORDER_ROW;
  float& at(int64_t r, int64_t c) const { return order == CUSPARSE_ORDER_ROW ? values[r * ld + c] : values[r + c * ld]; }
};

namespace {
cusparseStatus_t invalid(const char* fn, const char* why) {
  std::fprintf(stderr, "cuda_emu: %s: %s\n", fn, why);
  return CUSPARSE_STATUS_INVALID_VALUE;
}
int64_t index_at(const void* p, cusparseIndexType_t t, int64_t i) {
  return t == CUSPARSE_INDEX_64I ? static_cast<const int64_t*>(p)[i] : static_cast<const int32_t*>(p)[i];
}
// [p, p + bytes) must lie in one live device allocation (nullptr when it does, else a message).
const char* range_problem(const char* fn, const char* what, const void* p, int64_t bytes) {
  if (bytes <= 0) return nullptr;
  if (const char* why = cuda_emu::check_device_range(p, size_t(bytes))) {
    std::fprintf(stderr, "cuda_emu: %s: %s (%lld bytes): %s\n", fn, what, (long long)bytes, why);
    return what;
  }
  return nullptr;
}
int64_t index_bytes(cusparseIndexType_t t) { return t == CUSPARSE_INDEX_64I ? 8 : 4; }
int64_t dense_bytes(cusparseDnMatDescr_t M) {
  if (M->rows <= 0 || M->cols <= 0) return 0;
  return M->order == CUSPARSE_ORDER_ROW ? ((M->rows - 1) * M->ld + M->cols) * 4 : ((M->cols - 1) * M->ld + M->rows) * 4;
}

bool index_type_ok(cusparseIndexType_t t) { return t == CUSPARSE_INDEX_32I || t == CUSPARSE_INDEX_64I; }

// Everything SpMM needs to be true before it runs; nullptr when it is.
const char* spmm_problem(cusparseOperation_t opA, cusparseOperation_t opB, cusparseSpMatDescr_t A,
                         cusparseDnMatDescr_t B, cusparseDnMatDescr_t C, cudaDataType computeType) {
  if (A == nullptr || B == nullptr || C == nullptr) return "null descriptor";
  if (opA != CUSPARSE_OPERATION_NON_TRANSPOSE || opB != CUSPARSE_OPERATION_NON_TRANSPOSE)
    return "only non-transposed operands are emulated";
  if (computeType != CUDA_R_32F || A->type != CUDA_R_32F) return "only fp32 is emulated";
  if (A->cols != B->rows) return "A's columns differ from B's rows";
  if (C->rows != A->rows || C->cols != B->cols) return "C's shape is not [rows of A, columns of B]";
  return nullptr;
}
}  // namespace

cusparseStatus_t cusparseCreate(cusparseHandle_t* handle) {
  if (handle == nullptr) return CUSPARSE_STATUS_INVALID_VALUE;
  *handle = new cusparseContext();
  return CUSPARSE_STATUS_SUCCESS;
}
cusparseStatus_t cusparseDestroy(cusparseHandle_t handle) {
  if (handle == nullptr) return CUSPARSE_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUSPARSE_STATUS_SUCCESS;
}
cusparseStatus_t cusparseSetStream(cusparseHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUSPARSE_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUSPARSE_STATUS_SUCCESS;
}
const char* cusparseGetErrorString(cusparseStatus_t status) {
  switch (status) {
    case CUSPARSE_STATUS_SUCCESS: return "success";
    case CUSPARSE_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUSPARSE_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUSPARSE_STATUS_INVALID_VALUE: return "invalid value";
    case CUSPARSE_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "cuSPARSE error (emulated)";
  }
}

cusparseStatus_t cusparseCreateCsr(cusparseSpMatDescr_t* d, int64_t rows, int64_t cols, int64_t nnz, void* offsets,
                                   void* colInd, void* values, cusparseIndexType_t offType, cusparseIndexType_t colType,
                                   cusparseIndexBase_t base, cudaDataType type) {
  const char* fn = "cusparseCreateCsr";
  if (d == nullptr) return invalid(fn, "null descriptor");
  if (rows < 0 || cols < 0 || nnz < 0) return invalid(fn, "negative size");
  if (!index_type_ok(offType) || !index_type_ok(colType)) return invalid(fn, "index type not emulated");
  if (offsets == nullptr && rows > 0) return invalid(fn, "null row offsets");
  if (nnz > 0 && (colInd == nullptr || values == nullptr)) return invalid(fn, "null columns or values");
  *d = new cusparseSpMatDescr{true, rows, cols, nnz, offsets, colInd, values, offType, colType, base, type};
  return CUSPARSE_STATUS_SUCCESS;
}
cusparseStatus_t cusparseCreateCoo(cusparseSpMatDescr_t* d, int64_t rows, int64_t cols, int64_t nnz, void* rowInd,
                                   void* colInd, void* values, cusparseIndexType_t idxType, cusparseIndexBase_t base,
                                   cudaDataType type) {
  const char* fn = "cusparseCreateCoo";
  if (d == nullptr) return invalid(fn, "null descriptor");
  if (rows < 0 || cols < 0 || nnz < 0) return invalid(fn, "negative size");
  if (!index_type_ok(idxType)) return invalid(fn, "index type not emulated");
  if (nnz > 0 && (rowInd == nullptr || colInd == nullptr || values == nullptr)) return invalid(fn, "null arrays");
  *d = new cusparseSpMatDescr{false, rows, cols, nnz, rowInd, colInd, values, idxType, idxType, base, type};
  return CUSPARSE_STATUS_SUCCESS;
}
cusparseStatus_t cusparseDestroySpMat(cusparseSpMatDescr_t d) {
  delete d;
  return CUSPARSE_STATUS_SUCCESS;
}
cusparseStatus_t cusparseCreateDnMat(cusparseDnMatDescr_t* d, int64_t rows, int64_t cols, int64_t ld, void* values,
                                     cudaDataType type, cusparseOrder_t order) {
  const char* fn = "cusparseCreateDnMat";
  if (d == nullptr) return invalid(fn, "null descriptor");
  if (rows < 0 || cols < 0) return invalid(fn, "negative size");
  if (type != CUDA_R_32F) return invalid(fn, "only fp32 is emulated");
  if (ld < (order == CUSPARSE_ORDER_ROW ? cols : rows)) return invalid(fn, "leading dimension too small");
  *d = new cusparseDnMatDescr{rows, cols, ld, static_cast<float*>(values), order};
  return CUSPARSE_STATUS_SUCCESS;
}
cusparseStatus_t cusparseDestroyDnMat(cusparseDnMatDescr_t d) {
  delete d;
  return CUSPARSE_STATUS_SUCCESS;
}

cusparseStatus_t cusparseSpMM_bufferSize(cusparseHandle_t handle, cusparseOperation_t opA, cusparseOperation_t opB,
                                         const void*, cusparseSpMatDescr_t A, cusparseDnMatDescr_t B, const void*,
                                         cusparseDnMatDescr_t C, cudaDataType computeType, cusparseSpMMAlg_t alg,
                                         size_t* bufferSize) {
  const char* fn = "cusparseSpMM_bufferSize";
  if (handle == nullptr) return CUSPARSE_STATUS_NOT_INITIALIZED;
  if (const char* why = spmm_problem(opA, opB, A, B, C, computeType)) return invalid(fn, why);
  if (bufferSize == nullptr) return invalid(fn, "null bufferSize");
  // The row-major algorithms need row-major dense operands, as in cuSPARSE.
  const bool row_major = B->order == CUSPARSE_ORDER_ROW && C->order == CUSPARSE_ORDER_ROW;
  if ((alg == CUSPARSE_SPMM_CSR_ALG2 && !A->csr) || (alg == CUSPARSE_SPMM_COO_ALG4 && A->csr))
    return invalid(fn, "algorithm does not match the sparse format");
  if ((alg == CUSPARSE_SPMM_CSR_ALG2 || alg == CUSPARSE_SPMM_COO_ALG4) && !row_major)
    return invalid(fn, "this algorithm needs row-major B and C");
  *bufferSize = 64;
  return CUSPARSE_STATUS_SUCCESS;
}

cusparseStatus_t cusparseSpMM(cusparseHandle_t handle, cusparseOperation_t opA, cusparseOperation_t opB,
                              const void* alpha, cusparseSpMatDescr_t A, cusparseDnMatDescr_t B, const void* beta,
                              cusparseDnMatDescr_t C, cudaDataType computeType, cusparseSpMMAlg_t,
                              void* externalBuffer) {
  const char* fn = "cusparseSpMM";
  if (handle == nullptr) return CUSPARSE_STATUS_NOT_INITIALIZED;
  // Not capturable here (nothing in topksae captures it): refused loudly rather than run at capture.
  if (cuda_emu::capture_action(handle->stream, fn) != cuda_emu::Capture::run) {
    std::fprintf(stderr, "cuda_emu: %s during stream capture is not emulated\n", fn);
    return CUSPARSE_STATUS_NOT_SUPPORTED;
  }
  if (const char* why = spmm_problem(opA, opB, A, B, C, computeType)) return invalid(fn, why);
  if (externalBuffer == nullptr) return invalid(fn, "null external buffer (pass what SpMM_bufferSize asked for)");
  const int64_t row_len = A->csr ? A->rows + 1 : A->nnz;
  if (range_problem(fn, A->csr ? "CSR row offsets" : "COO row indices", A->row, row_len * index_bytes(A->row_type)) ||
      range_problem(fn, "column indices", A->col, A->nnz * index_bytes(A->col_type)) ||
      range_problem(fn, "values", A->val, A->nnz * 4) || range_problem(fn, "B", B->values, dense_bytes(B)) ||
      range_problem(fn, "C", C->values, dense_bytes(C)) || range_problem(fn, "external buffer", externalBuffer, 64))
    return CUSPARSE_STATUS_INVALID_VALUE;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const int64_t base = A->base == CUSPARSE_INDEX_BASE_ONE ? 1 : 0;
  // Validate the indices first, so a bad matrix leaves C untouched.
  if (A->csr) {
    int64_t prev = index_at(A->row, A->row_type, 0) - base;
    if (prev != 0) return invalid(fn, "CSR row offsets do not start at the index base");
    for (int64_t r = 1; r <= A->rows; ++r) {
      const int64_t o = index_at(A->row, A->row_type, r) - base;
      if (o < prev) return invalid(fn, "CSR row offsets decrease");
      prev = o;
    }
    if (prev != A->nnz) return invalid(fn, "the last CSR row offset is not nnz");
  } else {
    for (int64_t e = 0; e < A->nnz; ++e) {
      const int64_t r = index_at(A->row, A->row_type, e) - base;
      if (r < 0 || r >= A->rows) return invalid(fn, "COO row index out of range");
    }
  }
  for (int64_t e = 0; e < A->nnz; ++e) {
    const int64_t c = index_at(A->col, A->col_type, e) - base;
    if (c < 0 || c >= A->cols) return invalid(fn, "column index out of range");
  }
  for (int64_t r = 0; r < C->rows; ++r)
    for (int64_t j = 0; j < C->cols; ++j) C->at(r, j) = b == 0.f ? 0.f : b * C->at(r, j);
  const float* v = static_cast<const float*>(A->val);
  for (int64_t e = 0, r = 0; e < A->nnz; ++e) {
    if (A->csr) {
      while (index_at(A->row, A->row_type, r + 1) - base <= e) ++r;
    } else {
      r = index_at(A->row, A->row_type, e) - base;
    }
    const int64_t c = index_at(A->col, A->col_type, e) - base;
    for (int64_t j = 0; j < C->cols; ++j) C->at(r, j) += a * v[e] * B->at(c, j);
  }
  return CUSPARSE_STATUS_SUCCESS;
}
