// CUDA emulation (tests/cuda_emu/README.md): cuBLAS GEMM and GEMV on the host, column-major.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>

#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "cuda_runtime.h"

struct cublasContext {
  cudaStream_t stream = nullptr;
  cublasMath_t math = CUBLAS_DEFAULT_MATH;
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

namespace {
cublasStatus_t invalid(const char* fn, const char* why) {
  std::fprintf(stderr, "cuda_emu: %s: %s\n", fn, why);
  return CUBLAS_STATUS_INVALID_VALUE;
}

// The bytes a column-major [rows, cols] operand with leading dimension ld spans must lie in one live
// device allocation: a GEMM handed a host pointer, a freed buffer or a too-short one is refused here
// where the real library would read out of bounds or fault.
bool operand_ok(const char* fn, const char* name, const void* p, int64_t rows, int64_t cols, int64_t ld,
                size_t elem) {
  if (rows <= 0 || cols <= 0) return true;
  const size_t bytes = size_t((cols - 1) * ld + rows) * elem;
  if (const char* why = cuda_emu::check_device_range(p, bytes)) {
    std::fprintf(stderr, "cuda_emu: %s: %s [%lld x %lld, ld %lld] (%zu bytes): %s\n", fn, name, (long long)rows,
                 (long long)cols, (long long)ld, bytes, why);
    return false;
  }
  return true;
}

// fp32 -> tf32 (10 explicit mantissa bits), round to nearest, ties to even; Inf and NaN unchanged.
float to_tf32(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return f;
  u += 0xfffu + ((u >> 13) & 1u);
  u &= ~0x1fffu;
  std::memcpy(&f, &u, 4);
  return f;
}

// Element (r, c) of a column-major matrix stored with leading dimension ld, as the GEMM reads it.
float load(const void* p, cudaDataType t, int64_t r, int64_t c, int64_t ld, bool tf32) {
  const int64_t i = r + c * ld;
  if (t == CUDA_R_16BF) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  const float v = static_cast<const float*>(p)[i];
  return tf32 ? to_tf32(v) : v;
}
}  // namespace

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new cublasContext();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  handle->workspace = nullptr;  // as cuBLAS: cublasSetStream resets the workspace to the default pool
  handle->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && workspace == nullptr) return invalid("cublasSetWorkspace", "null workspace of non-zero size");
  if (reinterpret_cast<uintptr_t>(workspace) % 256 != 0)
    return invalid("cublasSetWorkspace", "workspace not 256-byte aligned");
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}

namespace {
// cublasGemmEx's checks, then (compute) the product.
cublasStatus_t gemm_ex(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
                       const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype,
                       int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                       bool compute) {
  const char* fn = "cublasGemmEx";
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0) return invalid(fn, "negative m, n or k");
  if (transa == CUBLAS_OP_C || transb == CUBLAS_OP_C) return invalid(fn, "conjugate transpose is not emulated");
  // Stored shapes: A is [m, k] (N) or [k, m] (T); B is [k, n] (N) or [n, k] (T); C is [m, n].
  const int a_rows = transa == CUBLAS_OP_N ? m : k, b_rows = transb == CUBLAS_OP_N ? k : n;
  if (lda < (a_rows > 1 ? a_rows : 1)) return invalid(fn, "lda smaller than the rows of A");
  if (ldb < (b_rows > 1 ? b_rows : 1)) return invalid(fn, "ldb smaller than the rows of B");
  if (ldc < (m > 1 ? m : 1)) return invalid(fn, "ldc smaller than m");
  if (Ctype != CUDA_R_32F) return invalid(fn, "only fp32 output is emulated");
  if (Atype != Btype || (Atype != CUDA_R_32F && Atype != CUDA_R_16BF))
    return invalid(fn, "operands must both be fp32 or both bf16");
  if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_TF32 &&
      computeType != CUBLAS_COMPUTE_32F_PEDANTIC)
    return invalid(fn, "compute type not emulated");
  if (Atype == CUDA_R_16BF && computeType == CUBLAS_COMPUTE_32F_FAST_TF32)
    return invalid(fn, "bf16 operands with a tf32 compute type");
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  if (A == nullptr || B == nullptr || C == nullptr || alpha == nullptr || beta == nullptr)
    return invalid(fn, "null pointer");
  const size_t ea = Atype == CUDA_R_16BF ? 2 : 4;
  if (!operand_ok(fn, "A", A, a_rows, transa == CUBLAS_OP_N ? k : m, lda, ea) ||
      !operand_ok(fn, "B", B, b_rows, transb == CUBLAS_OP_N ? n : k, ldb, ea) ||
      !operand_ok(fn, "C", C, m, n, ldc, 4))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!compute) return CUBLAS_STATUS_SUCCESS;
  const bool tf32 = computeType == CUBLAS_COMPUTE_32F_FAST_TF32;
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  float* c = static_cast<float*>(C);
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      float acc = 0.f;
      for (int p = 0; p < k; ++p) {
        const float x = transa == CUBLAS_OP_N ? load(A, Atype, i, p, lda, tf32) : load(A, Atype, p, i, lda, tf32);
        const float y = transb == CUBLAS_OP_N ? load(B, Btype, p, j, ldb, tf32) : load(B, Btype, j, p, ldb, tf32);
        acc = std::fma(x, y, acc);
      }
      float& out = c[i + int64_t(j) * ldc];
      out = b == 0.f ? a * acc : a * acc + b * out;  // beta == 0: C is not read (it may hold NaN)
    }
  return CUBLAS_STATUS_SUCCESS;
}

// A cuBLAS call on the handle's stream while it captures: cuBLAS needs a workspace of the caller's
// (cublasSetWorkspace) to be captured without allocating (the emulation insists on it), and the
// host scalars (pointer mode host) are read now, at the call, as cuBLAS reads them.
cublasStatus_t capture_blas(cublasHandle_t handle, const char* fn, cuda_emu::Capture act,
                            std::function<cublasStatus_t()> run) {
  if (act == cuda_emu::Capture::refuse) return CUBLAS_STATUS_EXECUTION_FAILED;
  if (handle->workspace == nullptr || handle->workspace_bytes == 0) {
    std::fprintf(stderr,
                 "cuda_emu: %s during stream capture without a workspace of the caller's (cublasSetWorkspace): "
                 "cuBLAS's default workspace pool may allocate inside the capture\n", fn);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  cuda_emu::capture_record(handle->stream, [run](cudaStream_t) {
    return run() == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorLaunchFailure;
  });
  return CUBLAS_STATUS_SUCCESS;
}
}  // namespace

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                            int k, const void* alpha, const void* A, cudaDataType Atype, int lda, const void* B,
                            cudaDataType Btype, int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
                            cublasComputeType_t computeType, cublasGemmAlgo_t) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const cuda_emu::Capture act = cuda_emu::capture_action(handle->stream, "cublasGemmEx");
  if (act == cuda_emu::Capture::run)
    return gemm_ex(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc,
                   computeType, true);
  if (act == cuda_emu::Capture::record) {
    const cublasStatus_t st = gemm_ex(handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C,
                                      Ctype, ldc, computeType, false);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
  }
  const float a = alpha ? *static_cast<const float*>(alpha) : 0.f, b = beta ? *static_cast<const float*>(beta) : 0.f;
  return capture_blas(handle, "cublasGemmEx", act, [=] {
    return gemm_ex(handle, transa, transb, m, n, k, &a, A, Atype, lda, B, Btype, ldb, &b, C, Ctype, ldc, computeType,
                   true);
  });
}

cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                           int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                           const float* beta, float* C, int ldc) {
  return cublasGemmEx(handle, transa, transb, m, n, k, alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, beta, C,
                      CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

namespace {
cublasStatus_t gemv(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const float* alpha, const float* A,
                    int lda, const float* x, int incx, const float* beta, float* y, int incy, bool compute) {
  const char* fn = "cublasSgemv";
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (m < 0 || n < 0) return invalid(fn, "negative m or n");
  if (lda < (m > 1 ? m : 1)) return invalid(fn, "lda smaller than m");
  if (incx == 0 || incy == 0) return invalid(fn, "zero increment");
  if (incx < 0 || incy < 0) return invalid(fn, "negative increments are not emulated");
  if (trans == CUBLAS_OP_C) return invalid(fn, "conjugate transpose is not emulated");
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  const int out_len = trans == CUBLAS_OP_N ? m : n, in_len = trans == CUBLAS_OP_N ? n : m;
  if (!operand_ok(fn, "A", A, m, n, lda, 4) || !operand_ok(fn, "x", x, 1, in_len, incx, 4) ||
      !operand_ok(fn, "y", y, 1, out_len, incy, 4))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!compute) return CUBLAS_STATUS_SUCCESS;
  for (int i = 0; i < out_len; ++i) {
    float acc = 0.f;
    for (int p = 0; p < in_len; ++p) {
      const float a = trans == CUBLAS_OP_N ? A[i + int64_t(p) * lda] : A[p + int64_t(i) * lda];
      acc = std::fma(a, x[int64_t(p) * incx], acc);
    }
    float& out = y[int64_t(i) * incy];
    out = *beta == 0.f ? *alpha * acc : *alpha * acc + *beta * out;
  }
  return CUBLAS_STATUS_SUCCESS;
}
}  // namespace

cublasStatus_t cublasSgemv(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const float* alpha,
                           const float* A, int lda, const float* x, int incx, const float* beta, float* y, int incy) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const cuda_emu::Capture act = cuda_emu::capture_action(handle->stream, "cublasSgemv");
  if (act == cuda_emu::Capture::run) return gemv(handle, trans, m, n, alpha, A, lda, x, incx, beta, y, incy, true);
  if (act == cuda_emu::Capture::record) {
    const cublasStatus_t st = gemv(handle, trans, m, n, alpha, A, lda, x, incx, beta, y, incy, false);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
  }
  const float a = alpha ? *alpha : 0.f, b = beta ? *beta : 0.f;
  return capture_blas(handle, "cublasSgemv", act,
                      [=] { return gemv(handle, trans, m, n, &a, A, lda, x, incx, &b, y, incy, true); });
}
