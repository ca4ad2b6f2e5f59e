// Checks of the emulated libraries' conventions (tests/cuda_emu/README.md) on hand-made examples:
// cuBLAS's column-major layout and transposes, tf32/bf16 rounding, cuSPARSE SpMM and its index
// checks, CUB's scan, sort and temporary-storage protocol. The project's GPU tests exercise them
// further against the CPU twins.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "cub/cub.cuh"
#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "cusparse.h"

namespace {
struct Blas {
  cublasHandle_t h = nullptr;
  Blas() { EXPECT_EQ(cublasCreate(&h), CUBLAS_STATUS_SUCCESS); }
  ~Blas() { cublasDestroy(h); }
};

// Row-major M [r, c] -> its column-major storage.
std::vector<float> col_major(const std::vector<float>& M, int r, int c) {
  std::vector<float> o(M.size());
  for (int i = 0; i < r; ++i)
    for (int j = 0; j < c; ++j) o[size_t(i + j * r)] = M[size_t(i * c + j)];
  return o;
}
}  // namespace

TEST(CudaEmuLibs, GemmColumnMajorWithTransposes) {
  Blas b;
  // A [2, 3], B [3, 2] (row-major here), C = A B = [[4, 5], [10, 11]] ... computed by hand below.
  const std::vector<float> A = {1, 2, 3, 4, 5, 6}, B = {1, 0, 0, 1, 1, 1};
  const std::vector<float> want = {1 + 3, 2 + 3, 4 + 6, 5 + 6};  // row-major [2, 2]
  const float one = 1.f, zero = 0.f;
  std::vector<float> Ac = col_major(A, 2, 3), Bc = col_major(B, 3, 2), C(4, -7.f);
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, Ac.data(), CUDA_R_32F, 2, Bc.data(), CUDA_R_32F,
                         3, &zero, C.data(), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(C, col_major(want, 2, 2));
  // The same product from transposed storage: A^T stored column-major is A row-major.
  std::vector<float> C2(4, 0.f);
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_T, CUBLAS_OP_T, 2, 2, 3, &one, A.data(), CUDA_R_32F, 3, B.data(), CUDA_R_32F, 2,
                         &zero, C2.data(), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(C2, col_major(want, 2, 2));
  // beta accumulates; a leading dimension below the rows is refused.
  const float two = 2.f;
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, Ac.data(), CUDA_R_32F, 2, Bc.data(), CUDA_R_32F,
                         3, &two, C.data(), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(C[0], 3 * want[0]);
  EXPECT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, Ac.data(), CUDA_R_32F, 1, Bc.data(), CUDA_R_32F,
                         3, &zero, C.data(), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
}

TEST(CudaEmuLibs, Tf32AndBf16Rounding) {
  Blas b;
  // 1 + 2^-12 is exact in fp32, rounds to 1 in tf32 (10 mantissa bits) and in bf16 (7 bits).
  const float x = 1.f + 1.f / 4096, one = 1.f, zero = 0.f;
  float c = 0.f;
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, &x, CUDA_R_32F, 1, &one, CUDA_R_32F, 1, &zero,
                         &c, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(c, x);
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, &x, CUDA_R_32F, 1, &one, CUDA_R_32F, 1, &zero,
                         &c, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(c, 1.f);
  // 1 + 2^-10 is a tf32 number and survives.
  const float y = 1.f + 1.f / 1024;
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, &y, CUDA_R_32F, 1, &one, CUDA_R_32F, 1, &zero,
                         &c, CUDA_R_32F, 1, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(c, y);
  EXPECT_EQ(__bfloat162float(__float2bfloat16_rn(1.f + 1.f / 256)), 1.f);        // tie -> even (1.0)
  EXPECT_EQ(__bfloat162float(__float2bfloat16_rn(1.f + 3.f / 256)), 1.f + 1.f / 64);  // tie -> even (up)
  EXPECT_EQ(__bfloat162float(__float2bfloat16_rn(-2.5f)), -2.5f);
}

TEST(CudaEmuLibs, GemvTransposed) {
  Blas b;
  const std::vector<float> A = {1, 2, 3, 4, 5, 6};  // column-major [3, 2]: columns (1,2,3), (4,5,6)
  const float x[3] = {1, 1, 1}, alpha = -1.f, beta = 1.f;
  float y[2] = {10, 20};
  ASSERT_EQ(cublasSgemv(b.h, CUBLAS_OP_T, 3, 2, &alpha, A.data(), 3, x, 1, &beta, y, 1), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(y[0], 10 - 6);
  EXPECT_EQ(y[1], 20 - 15);
}

TEST(CudaEmuLibs, SpmmCsrCooAndIndexChecks) {
  cusparseHandle_t h = nullptr;
  ASSERT_EQ(cusparseCreate(&h), CUSPARSE_STATUS_SUCCESS);
  // A [3, 2] = [[0, 2], [0, 0], [1, 3]]; B [2, 2] = [[1, 2], [3, 4]] row-major; A B = [[6, 8], [0, 0], [10, 14]].
  int32_t off[4] = {0, 1, 1, 3}, col[3] = {1, 0, 1}, row[3] = {0, 2, 2};
  float val[3] = {2, 1, 3}, B[4] = {1, 2, 3, 4};
  const float want[6] = {6, 8, 0, 0, 10, 14};
  for (bool csr : {true, false}) {
    float C[6] = {9, 9, 9, 9, 9, 9};
    cusparseSpMatDescr_t A = nullptr;
    if (csr)
      ASSERT_EQ(cusparseCreateCsr(&A, 3, 2, 3, off, col, val, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I,
                                  CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F),
                CUSPARSE_STATUS_SUCCESS);
    else
      ASSERT_EQ(cusparseCreateCoo(&A, 3, 2, 3, row, col, val, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F),
                CUSPARSE_STATUS_SUCCESS);
    cusparseDnMatDescr_t Bm = nullptr, Cm = nullptr;
    ASSERT_EQ(cusparseCreateDnMat(&Bm, 2, 2, 2, B, CUDA_R_32F, CUSPARSE_ORDER_ROW), CUSPARSE_STATUS_SUCCESS);
    ASSERT_EQ(cusparseCreateDnMat(&Cm, 3, 2, 2, C, CUDA_R_32F, CUSPARSE_ORDER_ROW), CUSPARSE_STATUS_SUCCESS);
    const float one = 1.f, zero = 0.f;
    const auto alg = csr ? CUSPARSE_SPMM_CSR_ALG2 : CUSPARSE_SPMM_COO_ALG4;
    size_t bytes = 0;
    ASSERT_EQ(cusparseSpMM_bufferSize(h, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one, A,
                                      Bm, &zero, Cm, CUDA_R_32F, alg, &bytes),
              CUSPARSE_STATUS_SUCCESS);
    std::vector<char> work(bytes);
    ASSERT_EQ(cusparseSpMM(h, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one, A, Bm, &zero,
                           Cm, CUDA_R_32F, alg, work.data()),
              CUSPARSE_STATUS_SUCCESS);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(C[i], want[i]) << (csr ? "csr " : "coo ") << i;
    col[2] = 2;  // out of range: refused, C untouched
    EXPECT_EQ(cusparseSpMM(h, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one, A, Bm, &zero,
                           Cm, CUDA_R_32F, alg, work.data()),
              CUSPARSE_STATUS_INVALID_VALUE);
    EXPECT_EQ(C[4], want[4]);
    col[2] = 1;
    cusparseDestroyDnMat(Bm);
    cusparseDestroyDnMat(Cm);
    cusparseDestroySpMat(A);
  }
  cusparseDestroy(h);
}

TEST(CudaEmuLibs, CubScanSortAndTempStorage) {
  const int32_t in[5] = {3, 1, 4, 1, 5};
  int32_t out[5];
  size_t bytes = 0;
  ASSERT_EQ(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in, out, 5), cudaSuccess);
  ASSERT_GT(bytes, 0u);
  std::vector<char> tmp(bytes);
  ASSERT_EQ(cub::DeviceScan::ExclusiveSum(tmp.data(), bytes, in, out, 5), cudaSuccess);
  const int32_t want[5] = {0, 3, 4, 8, 9};
  EXPECT_EQ(std::memcmp(out, want, sizeof want), 0);
  // Storage sized for fewer items than scanned is an error.
  size_t small = 0;
  ASSERT_EQ(cub::DeviceScan::ExclusiveSum(nullptr, small, in, out, 2), cudaSuccess);
  EXPECT_EQ(cub::DeviceScan::ExclusiveSum(tmp.data(), small, in, out, 5), cudaErrorInvalidValue);

  // Stable sort on the low 3 bits; the result lands in the alternate buffers (selector flipped).
  int32_t k0[6] = {5, 3, 5, 0, 3, 9}, k1[6], v0[6] = {0, 1, 2, 3, 4, 5}, v1[6];
  cub::DoubleBuffer<int32_t> dk(k0, k1), dv(v0, v1);
  size_t sb = 0;
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, sb, dk, dv, 6, 0, 3), cudaSuccess);
  std::vector<char> st(sb);
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(st.data(), sb, dk, dv, 6, 0, 3), cudaSuccess);
  EXPECT_EQ(dk.Current(), k1);
  const int32_t wk[6] = {0, 9, 3, 3, 5, 5}, wv[6] = {3, 5, 1, 4, 0, 2};  // 9 & 7 == 1
  EXPECT_EQ(std::memcmp(dk.Current(), wk, sizeof wk), 0);
  EXPECT_EQ(std::memcmp(dv.Current(), wv, sizeof wv), 0);
}
