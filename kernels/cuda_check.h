// One checking-macro family for the CUDA libraries, over one [[noreturn]] reporter that names the
// failing expression, file and line (and throws topksae::Error, so a service can recover).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusparse.h>

#include "topksae/error.h"

namespace topksae::detail {
[[noreturn]] void cuda_failure(const char* library, const char* expr, const char* status, const char* file,
                               int line);
const char* cublas_status_name(cublasStatus_t s);
}  // namespace topksae::detail

#define CUDA_CHECK(expr)                                                                                 \
  do {                                                                                                   \
    cudaError_t err_ = (expr);                                                                           \
    if (err_ != cudaSuccess)                                                                             \
      ::topksae::detail::cuda_failure("CUDA", #expr, cudaGetErrorString(err_), __FILE__, __LINE__);      \
  } while (0)

#define CUBLAS_CHECK(expr)                                                                               \
  do {                                                                                                   \
    cublasStatus_t st_ = (expr);                                                                         \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      ::topksae::detail::cuda_failure("cuBLAS", #expr, ::topksae::detail::cublas_status_name(st_),       \
                                      __FILE__, __LINE__);                                               \
  } while (0)

#define CUSPARSE_CHECK(expr)                                                                             \
  do {                                                                                                   \
    cusparseStatus_t st_ = (expr);                                                                       \
    if (st_ != CUSPARSE_STATUS_SUCCESS)                                                                  \
      ::topksae::detail::cuda_failure("cuSPARSE", #expr, cusparseGetErrorString(st_), __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches bad launch configurations at once.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
