// Checks of the emulated libraries' conventions (tests/cuda_emu/README.md) on hand-made examples:
// cuBLAS's column-major layout and transposes, tf32/bf16 rounding, cublasLt's matmul (bias
// epilogue, heuristic, algorithm / alignment / workspace checks), cuSPARSE SpMM and its index
// checks, CUB's scan, sort and temporary-storage protocol. The project's GPU tests exercise them
// further against the CPU twins. Operands live in cudaMalloc'd memory (the emulated libraries refuse
// anything else); the emulation's device memory is host memory, so results are read in place.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cub/cub.cuh"
#include "cublasLt.h"
#include "cublas_v2.h"
#include "cuda_bf16.h"
#include "cuda_runtime.h"
#include "cusparse.h"

namespace {
// A device copy of a host array, freed at scope exit.
template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~Dev() { cudaFree(p); }
  std::vector<T> host() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

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
  // A [2, 3], B [3, 2] (row-major here); C = A B, computed by hand.
  const std::vector<float> A = {1, 2, 3, 4, 5, 6}, B = {1, 0, 0, 1, 1, 1};
  const std::vector<float> want = {1 + 3, 2 + 3, 4 + 6, 5 + 6};  // row-major [2, 2]
  const float one = 1.f, zero = 0.f, two = 2.f;
  Dev<float> Ac(col_major(A, 2, 3)), Bc(col_major(B, 3, 2)), Ar(A), Br(B), C(std::vector<float>(4, -7.f)),
      C2(std::vector<float>(4, 0.f));
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, Ac.p, CUDA_R_32F, 2, Bc.p, CUDA_R_32F, 3, &zero,
                         C.p, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(C.host(), col_major(want, 2, 2));
  // The same product from transposed storage: A^T stored column-major is A row-major.
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_T, CUBLAS_OP_T, 2, 2, 3, &one, Ar.p, CUDA_R_32F, 3, Br.p, CUDA_R_32F, 2, &zero,
                         C2.p, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(C2.host(), col_major(want, 2, 2));
  // beta accumulates.
  ASSERT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, Ac.p, CUDA_R_32F, 2, Bc.p, CUDA_R_32F, 3, &two,
                         C.p, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(C.host()[0], 3 * want[0]);
  // Refused: a leading dimension below the rows; an operand longer than its allocation; host memory.
  EXPECT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, Ac.p, CUDA_R_32F, 1, Bc.p, CUDA_R_32F, 3, &zero,
                         C.p, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 4, &one, Ac.p, CUDA_R_32F, 2, Bc.p, CUDA_R_32F, 4, &zero,
                         C.p, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
  std::vector<float> host_c(4);
  EXPECT_EQ(cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, Ac.p, CUDA_R_32F, 2, Bc.p, CUDA_R_32F, 3, &zero,
                         host_c.data(), CUDA_R_32F, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_INVALID_VALUE);
}

// C [1, 1] = x * 1 under a compute type.
static float gemm_1x1(cublasHandle_t h, float x, cublasComputeType_t ct) {
  const float one = 1.f, zero = 0.f;
  Dev<float> a(std::vector<float>{x}), b(std::vector<float>{1.f}), c(std::vector<float>{0.f});
  EXPECT_EQ(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, a.p, CUDA_R_32F, 1, b.p, CUDA_R_32F, 1, &zero, c.p,
                         CUDA_R_32F, 1, ct, CUBLAS_GEMM_DEFAULT),
            CUBLAS_STATUS_SUCCESS);
  return c.host()[0];
}

TEST(CudaEmuLibs, Tf32AndBf16Rounding) {
  Blas b;
  // 1 + 2^-12 is exact in fp32, rounds to 1 in tf32 (10 mantissa bits) and in bf16 (7 bits).
  const float x = 1.f + 1.f / 4096, y = 1.f + 1.f / 1024;
  EXPECT_EQ(gemm_1x1(b.h, x, CUBLAS_COMPUTE_32F), x);
  EXPECT_EQ(gemm_1x1(b.h, x, CUBLAS_COMPUTE_32F_FAST_TF32), 1.f);
  EXPECT_EQ(gemm_1x1(b.h, y, CUBLAS_COMPUTE_32F_FAST_TF32), y);  // 1 + 2^-10 is a tf32 number
  EXPECT_EQ(__bfloat162float(__float2bfloat16_rn(1.f + 1.f / 256)), 1.f);             // tie -> even (1.0)
  EXPECT_EQ(__bfloat162float(__float2bfloat16_rn(1.f + 3.f / 256)), 1.f + 1.f / 64);  // tie -> even (up)
  EXPECT_EQ(__bfloat162float(__float2bfloat16_rn(-2.5f)), -2.5f);
}

// cublasLt: D [2, 2] = A [2, 3] B [3, 2] + bias [2] per row, column-major, in fp32 then tf32; the
// heuristic's algorithms, and what cublasLtMatmul refuses.
TEST(CudaEmuLibs, LtMatmulBiasEpilogueHeuristicAndChecks) {
  cublasLtHandle_t lt = nullptr;
  ASSERT_EQ(cublasLtCreate(&lt), CUBLAS_STATUS_SUCCESS);
  const float x = 1.f + 1.f / 4096;  // exact in fp32, 1 in tf32
  const std::vector<float> A = {x, 2, 3, 4, 5, 6}, B = {1, 0, 0, 1, 1, 1};  // row-major
  const std::vector<float> bias = {10, -20};
  Dev<float> Ac(col_major(A, 2, 3)), Bc(col_major(B, 3, 2)), bi(bias), D(std::vector<float>(4, -7.f));
  Dev<char> ws{std::vector<char>(size_t(4) << 20)};
  for (cublasComputeType_t ct : {CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32}) {
    const float a00 = ct == CUBLAS_COMPUTE_32F ? x : 1.f;
    const std::vector<float> want = {a00 + 3 + 10, 2 + 3 + 10, 4 + 6 - 20, 5 + 6 - 20};  // row-major [2, 2]
    cublasLtMatmulDesc_t op = nullptr;
    ASSERT_EQ(cublasLtMatmulDescCreate(&op, ct, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    const uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
    const void* bp = bi.p;
    ASSERT_EQ(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)), CUBLAS_STATUS_SUCCESS);
    // An attribute of the wrong size is refused, as cublasLt does.
    const uint64_t epi64 = epi;
    EXPECT_EQ(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi64, sizeof(epi64)),
              CUBLAS_STATUS_INVALID_VALUE);
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr, lbad = nullptr;
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&la, CUDA_R_32F, 2, 3, 2), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&lb, CUDA_R_32F, 3, 2, 3), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, 2, 2, 2), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&lbad, CUDA_R_32F, 1, 2, 1), CUBLAS_STATUS_SUCCESS);  // B of a k = 1 problem
    cublasLtMatmulPreference_t pref = nullptr;
    ASSERT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
    const uint64_t max_ws = uint64_t(4) << 20;
    ASSERT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_ws,
                                                   sizeof(max_ws)),
              CUBLAS_STATUS_SUCCESS);
    cublasLtMatmulHeuristicResult_t res[8];
    int found = 0;
    ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 8, res, &found), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(found, 3);  // the 16 MiB one does not fit the 4 MiB maximum
    const float one = 1.f, zero = 0.f;
    for (int i = 0; i < found; ++i) {
      EXPECT_EQ(res[i].state, CUBLAS_STATUS_SUCCESS);
      ASSERT_EQ(cublasLtMatmul(lt, op, &one, Ac.p, la, Bc.p, lb, &zero, D.p, ld, D.p, ld, &res[i].algo, ws.p,
                               res[i].workspaceSize, nullptr),
                CUBLAS_STATUS_SUCCESS);
      EXPECT_EQ(D.host(), col_major(want, 2, 2)) << "algo " << i << " compute " << int(ct);
    }
    // Refused: a workspace below the algorithm's need; an algorithm of another problem; an operand
    // less aligned than the preference promised (256 bytes by default); a pointer not on the device.
    EXPECT_EQ(cublasLtMatmul(lt, op, &one, Ac.p, la, Bc.p, lb, &zero, D.p, ld, D.p, ld, &res[2].algo, ws.p,
                             res[2].workspaceSize - 1, nullptr),
              CUBLAS_STATUS_NOT_SUPPORTED);
    int found1 = 0;
    cublasLtMatmulHeuristicResult_t other[1];
    ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 1, other, &found1), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(found1, 1);
    cublasLtMatrixLayout_t la1 = nullptr;
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&la1, CUDA_R_32F, 2, 1, 2), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(cublasLtMatmul(lt, op, &one, Ac.p, la1, Bc.p, lbad, &zero, D.p, ld, D.p, ld, &res[0].algo, ws.p,
                             max_ws, nullptr),
              CUBLAS_STATUS_INVALID_VALUE);
    Dev<float> D2(std::vector<float>(5, 0.f));
    EXPECT_EQ(cublasLtMatmul(lt, op, &one, Ac.p, la, Bc.p, lb, &zero, D2.p + 1, ld, D2.p + 1, ld, &res[0].algo, ws.p,
                             max_ws, nullptr),
              CUBLAS_STATUS_NOT_SUPPORTED);
    const uint32_t four = 4;
    ASSERT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &four, sizeof(four)),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &four, sizeof(four)),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(lt, op, la, lb, ld, ld, pref, 1, other, &found1), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmul(lt, op, &one, Ac.p, la, Bc.p, lb, &zero, D2.p + 1, ld, D2.p + 1, ld, &other[0].algo, ws.p,
                             max_ws, nullptr),
              CUBLAS_STATUS_SUCCESS);
    const std::vector<float> d2 = D2.host();
    EXPECT_EQ(d2[0], 0.f) << "the element before D untouched";
    EXPECT_EQ(std::vector<float>(d2.begin() + 1, d2.end()), col_major(want, 2, 2));
    std::vector<float> host_d(4);
    EXPECT_EQ(cublasLtMatmul(lt, op, &one, Ac.p, la, Bc.p, lb, &zero, host_d.data(), ld, host_d.data(), ld, nullptr,
                             ws.p, max_ws, nullptr),
              CUBLAS_STATUS_INVALID_VALUE);
    cublasLtMatmulPreferenceDestroy(pref);
    for (cublasLtMatrixLayout_t l : {la, lb, ld, lbad, la1}) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulDescDestroy(op);
  }
  cublasLtDestroy(lt);
}

TEST(CudaEmuLibs, GemvTransposed) {
  Blas b;
  // A column-major [3, 2]: columns (1,2,3), (4,5,6).
  Dev<float> A(std::vector<float>{1, 2, 3, 4, 5, 6}), x(std::vector<float>{1, 1, 1}), y(std::vector<float>{10, 20});
  const float alpha = -1.f, beta = 1.f;
  ASSERT_EQ(cublasSgemv(b.h, CUBLAS_OP_T, 3, 2, &alpha, A.p, 3, x.p, 1, &beta, y.p, 1), CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(y.host(), (std::vector<float>{10 - 6, 20 - 15}));
  EXPECT_EQ(cublasSgemv(b.h, CUBLAS_OP_T, 3, 2, &alpha, A.p, 3, x.p, 2, &beta, y.p, 1), CUBLAS_STATUS_INVALID_VALUE);
}

TEST(CudaEmuLibs, SpmmCsrCooAndIndexChecks) {
  cusparseHandle_t h = nullptr;
  ASSERT_EQ(cusparseCreate(&h), CUSPARSE_STATUS_SUCCESS);
  // A [3, 2] = [[0, 2], [0, 0], [1, 3]]; B [2, 2] = [[1, 2], [3, 4]] row-major; A B = [[6, 8], [0, 0], [10, 14]].
  Dev<int32_t> off(std::vector<int32_t>{0, 1, 1, 3}), row(std::vector<int32_t>{0, 2, 2});
  Dev<float> val(std::vector<float>{2, 1, 3}), B(std::vector<float>{1, 2, 3, 4});
  const std::vector<float> want = {6, 8, 0, 0, 10, 14};
  for (bool csr : {true, false}) {
    Dev<int32_t> col(std::vector<int32_t>{1, 0, 1});
    Dev<float> C(std::vector<float>(6, 9.f));
    cusparseSpMatDescr_t A = nullptr;
    if (csr)
      ASSERT_EQ(cusparseCreateCsr(&A, 3, 2, 3, off.p, col.p, val.p, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_32I,
                                  CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F),
                CUSPARSE_STATUS_SUCCESS);
    else
      ASSERT_EQ(cusparseCreateCoo(&A, 3, 2, 3, row.p, col.p, val.p, CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO,
                                  CUDA_R_32F),
                CUSPARSE_STATUS_SUCCESS);
    cusparseDnMatDescr_t Bm = nullptr, Cm = nullptr;
    ASSERT_EQ(cusparseCreateDnMat(&Bm, 2, 2, 2, B.p, CUDA_R_32F, CUSPARSE_ORDER_ROW), CUSPARSE_STATUS_SUCCESS);
    ASSERT_EQ(cusparseCreateDnMat(&Cm, 3, 2, 2, C.p, CUDA_R_32F, CUSPARSE_ORDER_ROW), CUSPARSE_STATUS_SUCCESS);
    const float one = 1.f, zero = 0.f;
    const auto alg = csr ? CUSPARSE_SPMM_CSR_ALG2 : CUSPARSE_SPMM_COO_ALG4;
    size_t bytes = 0;
    ASSERT_EQ(cusparseSpMM_bufferSize(h, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one, A,
                                      Bm, &zero, Cm, CUDA_R_32F, alg, &bytes),
              CUSPARSE_STATUS_SUCCESS);
    Dev<char> work{std::vector<char>(bytes)};
    ASSERT_EQ(cusparseSpMM(h, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one, A, Bm, &zero,
                           Cm, CUDA_R_32F, alg, work.p),
              CUSPARSE_STATUS_SUCCESS);
    EXPECT_EQ(C.host(), want) << (csr ? "csr" : "coo");
    const int32_t bad = 2;  // column 2 of a 2-column matrix: refused, C untouched
    ASSERT_EQ(cudaMemcpy(col.p + 2, &bad, 4, cudaMemcpyHostToDevice), cudaSuccess);
    EXPECT_EQ(cusparseSpMM(h, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one, A, Bm, &zero,
                           Cm, CUDA_R_32F, alg, work.p),
              CUSPARSE_STATUS_INVALID_VALUE);
    EXPECT_EQ(C.host(), want);
    cusparseDestroyDnMat(Bm);
    cusparseDestroyDnMat(Cm);
    cusparseDestroySpMat(A);
  }
  cusparseDestroy(h);
}

TEST(CudaEmuLibs, CubScanSortAndTempStorage) {
  Dev<int32_t> in(std::vector<int32_t>{3, 1, 4, 1, 5}), out(std::vector<int32_t>(5));
  size_t bytes = 0;
  ASSERT_EQ(cub::DeviceScan::ExclusiveSum(nullptr, bytes, in.p, out.p, 5), cudaSuccess);
  ASSERT_GT(bytes, 0u);
  Dev<char> tmp{std::vector<char>(bytes)};
  ASSERT_EQ(cub::DeviceScan::ExclusiveSum(tmp.p, bytes, in.p, out.p, 5), cudaSuccess);
  EXPECT_EQ(out.host(), (std::vector<int32_t>{0, 3, 4, 8, 9}));
  // Storage sized for fewer items than scanned is an error, and so is a host output.
  size_t small = 0;
  ASSERT_EQ(cub::DeviceScan::ExclusiveSum(nullptr, small, in.p, out.p, 2), cudaSuccess);
  EXPECT_EQ(cub::DeviceScan::ExclusiveSum(tmp.p, small, in.p, out.p, 5), cudaErrorInvalidValue);
  std::vector<int32_t> host_out(5);
  EXPECT_EQ(cub::DeviceScan::ExclusiveSum(tmp.p, bytes, in.p, host_out.data(), 5), cudaErrorInvalidValue);

  // Stable sort on the low 3 bits; the result lands in the alternate buffers (selector flipped).
  Dev<int32_t> k0(std::vector<int32_t>{5, 3, 5, 0, 3, 9}), k1(std::vector<int32_t>(6)),
      v0(std::vector<int32_t>{0, 1, 2, 3, 4, 5}), v1(std::vector<int32_t>(6));
  cub::DoubleBuffer<int32_t> dk(k0.p, k1.p), dv(v0.p, v1.p);
  size_t sb = 0;
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(nullptr, sb, dk, dv, 6, 0, 3), cudaSuccess);
  Dev<char> st{std::vector<char>(sb)};
  ASSERT_EQ(cub::DeviceRadixSort::SortPairs(st.p, sb, dk, dv, 6, 0, 3), cudaSuccess);
  EXPECT_EQ(dk.Current(), k1.p);
  EXPECT_EQ(k1.host(), (std::vector<int32_t>{0, 9, 3, 3, 5, 5}));  // 9 & 7 == 1
  EXPECT_EQ(v1.host(), (std::vector<int32_t>{3, 5, 1, 4, 0, 2}));
  // Sorting more items than the buffers hold is refused.
  EXPECT_EQ(cub::DeviceRadixSort::SortPairs(st.p, sb, dk, dv, 7, 0, 3), cudaErrorInvalidValue);
}

// Library calls on a capturing stream are recorded and run at each replay (host scalars as they were
// at the call). cuBLAS needs a workspace of the caller's to be captured (cublasSetWorkspace), and
// cublasSetStream drops it again, as in cuBLAS.
TEST(CudaEmuLibs, CapturedGemmAndScanRunAtReplay) {
  Blas b;
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  ASSERT_EQ(cublasSetStream(b.h, s), CUBLAS_STATUS_SUCCESS);
  const std::vector<float> A = {1, 2, 3, 4, 5, 6}, B = {1, 0, 0, 1, 1, 1};  // column-major [2, 3], [3, 2]
  Dev<float> Ad(A), Bd(B), C(std::vector<float>(4, -7.f)), ws(std::vector<float>(1024, 0.f));
  const std::vector<int32_t> in = {3, 1, 4, 1, 5};
  Dev<int32_t> din(in), dout(std::vector<int32_t>(5, -1));
  size_t tmp_bytes = 0;
  ASSERT_EQ(cub::DeviceScan::ExclusiveSum(nullptr, tmp_bytes, din.p, dout.p, 5, s), cudaSuccess);
  Dev<uint8_t> tmp(std::vector<uint8_t>(tmp_bytes, 0));
  float alpha = 2.f;
  const float zero = 0.f;
  auto record = [&]() {
    EXPECT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    const cublasStatus_t st = cublasGemmEx(b.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &alpha, Ad.p, CUDA_R_32F, 2, Bd.p,
                                           CUDA_R_32F, 3, &zero, C.p, CUDA_R_32F, 2, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT);
    EXPECT_EQ(cub::DeviceScan::ExclusiveSum(tmp.p, tmp_bytes, din.p, dout.p, 5, s), cudaSuccess);
    cudaGraph_t g = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
    return std::make_pair(st, g);
  };
  // Without a workspace: refused.
  testing::internal::CaptureStderr();
  auto [st0, g0] = record();
  EXPECT_NE(testing::internal::GetCapturedStderr().find("cublasSetWorkspace"), std::string::npos);
  EXPECT_EQ(st0, CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(cudaGraphDestroy(g0), cudaSuccess);
  // With one: recorded, nothing computed until the replay, alpha as it was at the call.
  ASSERT_EQ(cublasSetWorkspace(b.h, ws.p, 4096), CUBLAS_STATUS_SUCCESS);
  auto [st1, g1] = record();
  ASSERT_EQ(st1, CUBLAS_STATUS_SUCCESS);
  alpha = 100.f;
  EXPECT_EQ(C.host(), std::vector<float>(4, -7.f));
  EXPECT_EQ(dout.host(), std::vector<int32_t>(5, -1));
  cudaGraphExec_t x = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&x, g1, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(x, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(C.host(), (std::vector<float>{2, 4, 18, 24}));  // 2 * (A @ B) = 2 * [[1, 9], [2, 12]], column-major
  EXPECT_EQ(dout.host(), (std::vector<int32_t>{0, 3, 4, 8, 9}));
  EXPECT_EQ(cudaGraphExecDestroy(x), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(g1), cudaSuccess);
  // cublasSetStream drops the workspace: refused again.
  ASSERT_EQ(cublasSetStream(b.h, s), CUBLAS_STATUS_SUCCESS);
  testing::internal::CaptureStderr();
  auto [st2, g2] = record();
  (void)testing::internal::GetCapturedStderr();
  EXPECT_EQ(st2, CUBLAS_STATUS_NOT_SUPPORTED);
  EXPECT_EQ(cudaGraphDestroy(g2), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}
