// CUDA emulation (tests/cuda_emu/README.md): cublasLt's matmul on the host (cublasLt.h says what is
// emulated). The product itself is the cuBLAS emulation's cublasGemmEx (src/cublas.cpp), so both
// libraries round tf32 / bf16 operands alike; the bias epilogue adds the bias after it in fp32.
#include "cublasLt.h"

#include <cstdio>
#include <cstring>
#include <initializer_list>

#include "cuda_runtime.h"

struct cublasLtContext {
  cublasHandle_t blas = nullptr;  // the emulated cuBLAS that computes every product
};
struct cublasLtMatmulDescOpaque_t {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int32_t bias_type = -1;  // -1: D's type
};
struct cublasLtMatrixLayoutOpaque_t {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque_t {
  uint64_t max_workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D
};

namespace {
constexpr uint64_t kAlgoMagic = 0x6c7461'6c676f00ull;  // "ltalgo"
constexpr size_t kAlgoWorkspace[4] = {0, size_t(1) << 20, size_t(4) << 20, size_t(16) << 20};

cublasStatus_t invalid(const char* fn, const char* why) {
  std::fprintf(stderr, "cuda_emu: %s: %s\n", fn, why);
  return CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t not_supported(const char* fn, const char* why) {
  std::fprintf(stderr, "cuda_emu: %s: %s\n", fn, why);
  return CUBLAS_STATUS_NOT_SUPPORTED;
}

template <class T>
bool read_attr(const void* buf, size_t size, T* out) {
  if (buf == nullptr || size != sizeof(T)) return false;
  std::memcpy(out, buf, sizeof(T));
  return true;
}

// The problem a descriptor and its layouts describe, checked as cublasLt checks it, and a hash of
// it that an algorithm carries (so an algorithm found for one problem is refused for another).
struct Problem {
  int64_t m, n, k;
  uint64_t hash;
};
cublasStatus_t problem_of(const char* fn, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t A, cublasLtMatrixLayout_t B,
                          cublasLtMatrixLayout_t C, cublasLtMatrixLayout_t D, Problem* p) {
  if (op == nullptr || A == nullptr || B == nullptr || C == nullptr || D == nullptr)
    return invalid(fn, "null descriptor or layout");
  const bool ta = op->transa == CUBLAS_OP_T, tb = op->transb == CUBLAS_OP_T;
  const int64_t m = int64_t(D->rows), n = int64_t(D->cols);
  const int64_t k = int64_t(ta ? A->rows : A->cols);
  if (int64_t(ta ? A->cols : A->rows) != m) return invalid(fn, "op(A) rows differ from D's rows");
  if (int64_t(tb ? B->cols : B->rows) != k) return invalid(fn, "op(B) rows differ from op(A) columns");
  if (int64_t(tb ? B->rows : B->cols) != n) return invalid(fn, "op(B) columns differ from D's columns");
  if (C->rows != D->rows || C->cols != D->cols || C->ld != D->ld || C->type != D->type)
    return invalid(fn, "C and D layouts differ (not emulated)");
  if (D->type != CUDA_R_32F) return not_supported(fn, "only fp32 C / D are emulated");
  if (A->type != B->type || (A->type != CUDA_R_32F && A->type != CUDA_R_16BF))
    return not_supported(fn, "A and B must both be fp32 or both bf16");
  if (op->scale != CUDA_R_32F) return not_supported(fn, "only an fp32 scale type is emulated");
  if (op->compute != CUBLAS_COMPUTE_32F && op->compute != CUBLAS_COMPUTE_32F_FAST_TF32 &&
      op->compute != CUBLAS_COMPUTE_32F_PEDANTIC)
    return not_supported(fn, "compute type not emulated");
  if (A->type == CUDA_R_16BF && op->compute == CUBLAS_COMPUTE_32F_FAST_TF32)
    return not_supported(fn, "bf16 operands with a tf32 compute type");
  if (op->epilogue != CUBLASLT_EPILOGUE_DEFAULT && op->epilogue != CUBLASLT_EPILOGUE_BIAS)
    return not_supported(fn, "only the DEFAULT and BIAS epilogues are emulated");
  if (op->epilogue == CUBLASLT_EPILOGUE_BIAS && op->bias_type != -1 && op->bias_type != CUDA_R_32F)
    return not_supported(fn, "only an fp32 bias is emulated");
  uint64_t h = 1469598103934665603ull;
  for (uint64_t v : {uint64_t(m), uint64_t(n), uint64_t(k), uint64_t(A->ld), uint64_t(B->ld), uint64_t(D->ld),
                     uint64_t(A->type), uint64_t(op->compute), uint64_t(op->transa), uint64_t(op->transb),
                     uint64_t(op->epilogue)})
    h = (h ^ v) * 1099511628211ull;
  *p = Problem{m, n, k, h};
  return CUBLAS_STATUS_SUCCESS;
}

uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}
}  // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  auto* h = new cublasLtContext();
  if (cublasCreate(&h->blas) != CUBLAS_STATUS_SUCCESS) {
    delete h;
    return CUBLAS_STATUS_NOT_INITIALIZED;
  }
  *handle = h;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  cublasDestroy(handle->blas);
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_(other)";
  }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t computeType,
                                        cudaDataType_t scaleType) {
  if (desc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *desc = new cublasLtMatmulDescOpaque_t{computeType, scaleType};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete desc;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t size) {
  const char* fn = "cublasLtMatmulDescSetAttribute";
  if (desc == nullptr) return invalid(fn, "null descriptor");
  bool ok = false;
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: ok = read_attr(buf, size, &desc->transa); break;
    case CUBLASLT_MATMUL_DESC_TRANSB: ok = read_attr(buf, size, &desc->transb); break;
    case CUBLASLT_MATMUL_DESC_EPILOGUE: ok = read_attr(buf, size, &desc->epilogue); break;
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: ok = read_attr(buf, size, &desc->bias); break;
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: ok = read_attr(buf, size, &desc->bias_type); break;
    default: return invalid(fn, "attribute not emulated");
  }
  if (!ok) return invalid(fn, "buffer null or of the wrong size for the attribute");
  if ((attr == CUBLASLT_MATMUL_DESC_TRANSA && desc->transa != CUBLAS_OP_N && desc->transa != CUBLAS_OP_T) ||
      (attr == CUBLASLT_MATMUL_DESC_TRANSB && desc->transb != CUBLAS_OP_N && desc->transb != CUBLAS_OP_T))
    return invalid(fn, "transpose must be N or T");
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  if (layout == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (ld < int64_t(rows > 1 ? rows : 1)) return invalid("cublasLtMatrixLayoutCreate", "ld smaller than the rows");
  *layout = new cublasLtMatrixLayoutOpaque_t{type, rows, cols, ld};
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete layout;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (pref == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = new cublasLtMatmulPreferenceOpaque_t();
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete pref;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t size) {
  const char* fn = "cublasLtMatmulPreferenceSetAttribute";
  if (pref == nullptr) return invalid(fn, "null preference");
  uint32_t mode = 0;
  bool ok = false;
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: ok = read_attr(buf, size, &mode); break;
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: ok = read_attr(buf, size, &pref->max_workspace); break;
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES:
      ok = read_attr(buf, size, &pref->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES]);
      break;
    default: return invalid(fn, "attribute not emulated");
  }
  return ok ? CUBLAS_STATUS_SUCCESS : invalid(fn, "buffer null or of the wrong size for the attribute");
}

// The fake algorithms: data[0] magic, [1] its number, [2] the problem's hash, [3] the workspace it
// needs, [4] the alignments it assumes (A, B, C, D: one byte each, as log2).
cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t op,
                                              cublasLtMatrixLayout_t A, cublasLtMatrixLayout_t B,
                                              cublasLtMatrixLayout_t C, cublasLtMatrixLayout_t D,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int* returned) {
  const char* fn = "cublasLtMatmulAlgoGetHeuristic";
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (requested <= 0 || results == nullptr || returned == nullptr || pref == nullptr)
    return invalid(fn, "requestedAlgoCount <= 0 or a null argument");
  Problem p{};
  if (const cublasStatus_t s = problem_of(fn, op, A, B, C, D, &p); s != CUBLAS_STATUS_SUCCESS) return s;
  uint64_t align = 0;
  for (int i = 0; i < 4; ++i) {
    uint32_t a = pref->align[i], lg = 0;
    if (a == 0 || (a & (a - 1)) != 0) return invalid(fn, "a minimum alignment that is not a power of two");
    while ((1u << lg) < a) ++lg;
    align |= uint64_t(lg) << (8 * i);
  }
  int n = 0;
  for (uint64_t id = 0; id < 4 && n < requested; ++id) {
    if (kAlgoWorkspace[id] > pref->max_workspace) continue;
    cublasLtMatmulHeuristicResult_t& r = results[n++];
    std::memset(&r, 0, sizeof(r));
    r.algo.data[0] = kAlgoMagic;
    r.algo.data[1] = id;
    r.algo.data[2] = p.hash;
    r.algo.data[3] = kAlgoWorkspace[id];
    r.algo.data[4] = align;
    r.workspaceSize = kAlgoWorkspace[id];
    r.state = CUBLAS_STATUS_SUCCESS;
    r.wavesCount = 1.f;
  }
  *returned = n;
  return n > 0 ? CUBLAS_STATUS_SUCCESS : not_supported(fn, "no algorithm fits the workspace");
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t op, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t Adesc, const void* B, cublasLtMatrixLayout_t Bdesc,
                              const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
  const char* fn = "cublasLtMatmul";
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  Problem p{};
  if (const cublasStatus_t s = problem_of(fn, op, Adesc, Bdesc, Cdesc, Ddesc, &p); s != CUBLAS_STATUS_SUCCESS) return s;
  if (alpha == nullptr || beta == nullptr) return invalid(fn, "null alpha or beta");
  if (algo != nullptr) {
    if (algo->data[0] != kAlgoMagic) return invalid(fn, "not an algorithm from cublasLtMatmulAlgoGetHeuristic");
    if (algo->data[2] != p.hash) return invalid(fn, "the algorithm was found for another problem");
    if (workspace_bytes < algo->data[3]) return not_supported(fn, "workspace smaller than the algorithm needs");
    const void* ptrs[4] = {A, B, C, D};
    for (int i = 0; i < 4; ++i)
      if (alignment_of(ptrs[i]) < (1u << ((algo->data[4] >> (8 * i)) & 0xff)))
        return not_supported(fn, "an operand less aligned than the algorithm assumes (the preference's MIN_ALIGNMENT)");
  }
  if (workspace_bytes > 0) {
    if (const char* why = cuda_emu::check_device_range(workspace, workspace_bytes)) {
      std::fprintf(stderr, "cuda_emu: %s: workspace of %zu bytes: %s\n", fn, workspace_bytes, why);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
  }
  // What the product needs, read now (descriptors and host scalars are read at the call, so a
  // captured matmul keeps them), then the product: now, or at each replay of the capture.
  const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
  const cublasOperation_t ta = cublasOperation_t(op->transa), tb = cublasOperation_t(op->transb);
  const cublasComputeType_t compute = op->compute;
  const bool with_bias = op->epilogue == CUBLASLT_EPILOGUE_BIAS;
  const void* bias_p = op->bias;
  const cudaDataType at = Adesc->type, bt = Bdesc->type;
  const int64_t lda = Adesc->ld, ldb = Bdesc->ld, ldd = Ddesc->ld;
  const size_t d_bytes = size_t((Ddesc->cols - 1) * uint64_t(Ddesc->ld) + Ddesc->rows) * 4;
  cublasHandle_t blas = handle->blas;
  auto run = [=](cudaStream_t st) -> cublasStatus_t {
    if (b != 0.f && C != D) {  // the product accumulates into D: start it from C
      if (p.m > 0 && p.n > 0 && cudaMemcpyAsync(D, C, d_bytes, cudaMemcpyDeviceToDevice, st) != cudaSuccess)
        return invalid(fn, "C is not device memory");
    }
    cublasSetStream(blas, st);
    const cublasStatus_t s = cublasGemmEx(blas, ta, tb, int(p.m), int(p.n), int(p.k), &a, A, at, int(lda), B, bt,
                                          int(ldb), &b, D, CUDA_R_32F, int(ldd), compute, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS || !with_bias || p.m == 0 || p.n == 0) return s;
    if (bias_p == nullptr) return invalid(fn, "the BIAS epilogue without a bias pointer");
    if (const char* why = cuda_emu::check_device_range(bias_p, size_t(p.m) * 4)) {
      std::fprintf(stderr, "cuda_emu: %s: bias [%lld]: %s\n", fn, (long long)p.m, why);
      return CUBLAS_STATUS_INVALID_VALUE;
    }
    const auto* bias = static_cast<const float*>(bias_p);
    auto* d = static_cast<float*>(D);
    for (int64_t j = 0; j < p.n; ++j)
      for (int64_t i = 0; i < p.m; ++i) d[i + j * ldd] += bias[i];
    return CUBLAS_STATUS_SUCCESS;
  };
  switch (cuda_emu::capture_action(stream, fn)) {
    case cuda_emu::Capture::refuse: return CUBLAS_STATUS_EXECUTION_FAILED;
    case cuda_emu::Capture::record:
      if (with_bias && bias_p == nullptr) return invalid(fn, "the BIAS epilogue without a bias pointer");
      cuda_emu::capture_record(stream, [run](cudaStream_t st) {
        return run(st) == CUBLAS_STATUS_SUCCESS ? cudaSuccess : cudaErrorLaunchFailure;
      });
      return CUBLAS_STATUS_SUCCESS;
    case cuda_emu::Capture::run: break;
  }
  return run(stream);
}
