// The encoder GEMM through cuBLAS or cublasLt, with cublasLt's algorithm timed once per problem
// and process (gemm_lt.h).
#include "gemm_lt.h"

#include <cublasLt.h>

#include <map>
#include <mutex>
#include <tuple>

#include "common/cuda_raii.h"
#include "cuda_internal.h"

namespace topksae::cuda::detail {

namespace {
// One problem of the selection cache. The alignments (bytes, at most 256) enter the key because
// cublasLt's algorithms assume the alignment its preference promised (MIN_ALIGNMENT_*).
struct Key {
  int device;
  int prec;
  int64_t M, N, K;
  bool bias;
  uint32_t align_a, align_b, align_c, align_bias;
  auto tie() const { return std::tie(device, prec, M, N, K, bias, align_a, align_b, align_c, align_bias); }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};
struct Entry {
  cublasLtMatmulAlgo_t algo{};
  EncoderGemmChoice lt;    // the Lt selection
  bool auto_done = false;  // the cuBLAS-vs-Lt comparison of EncoderGemm::automatic was timed
  bool auto_lt = false;    // ... and cublasLt won it
  float cublas_ms = 0;
};

// Process-wide: one cublasLt handle per device and the selections. Never destroyed (a handle
// destroyed at exit, after the CUDA runtime's teardown, can fault); reachable, so no leak report.
struct State {
  std::mutex mu;
  std::map<int, cublasLtHandle_t> handles;
  std::map<Key, Entry> cache;
};
State& state() {
  static State* s = new State;
  return *s;
}

uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && v % a != 0) a /= 2;
  return a;
}

// The descriptors of one problem, destroyed with the object. Row-major C = A @ B is column-major
// C^T [N, M] = B^T [N, K] @ A^T [K, M]: cublasLt's A is our B (W_enc) and its B is our A (u), both
// untransposed; the bias is a vector over C^T's rows (our columns), broadcast over our rows.
struct LtProblem {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;

  // Built in two steps, so the destructor frees what a failed build made.
  LtProblem() = default;
  void build(Precision p, int64_t M, int64_t N, int64_t K, const float* bias, const Key& key) {
    const cublasComputeType_t ct = p == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const cudaDataType_t in = p == Precision::bf16 ? CUDA_R_16BF : CUDA_R_32F;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, ct, CUDA_R_32F));
    const int32_t no_trans = CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &no_trans, sizeof(no_trans)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &no_trans, sizeof(no_trans)));
    if (bias) {
      const uint32_t epi = CUBLASLT_EPILOGUE_BIAS;
      const int32_t bias_type = CUDA_R_32F;
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    }
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, in, uint64_t(N), uint64_t(K), N));   // W_enc^T, column-major
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, in, uint64_t(K), uint64_t(M), K));   // u^T
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, uint64_t(N), uint64_t(M), N));  // C^T (C and D)
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = kLtWorkspaceBytes;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    // Lt's A is our B, its B our A; C and D are the same buffer.
    const uint32_t al[4] = {key.align_b, key.align_a, key.align_c, key.align_c};
    const cublasLtMatmulPreferenceAttributes_t at[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; ++i) CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, at[i], &al[i], sizeof(al[i])));
  }
  ~LtProblem() {
    if (pref) (void)cublasLtMatmulPreferenceDestroy(pref);
    if (lc) (void)cublasLtMatrixLayoutDestroy(lc);
    if (lb) (void)cublasLtMatrixLayoutDestroy(lb);
    if (la) (void)cublasLtMatrixLayoutDestroy(la);
    if (op) (void)cublasLtMatmulDescDestroy(op);
  }
  LtProblem(const LtProblem&) = delete;
  LtProblem& operator=(const LtProblem&) = delete;

  cublasStatus_t run(cublasLtHandle_t h, const cublasLtMatmulAlgo_t* algo, const void* A, const void* B, float* C,
                     void* ws, cudaStream_t s) const {
    const float alpha = 1.f, beta = 0.f;
    return cublasLtMatmul(h, op, &alpha, B, la, A, lb, &beta, C, lc, C, lc, algo, ws, kLtWorkspaceBytes, s);
  }
};

void cublas_gemm(Context& ctx, Precision p, int64_t M, int64_t N, int64_t K, const void* A, const void* B,
                 const float* bias, float* C) {
  if (bias) fill_rows(ctx, C, bias, M, N);
  const float alpha = 1.f, beta = bias ? 1.f : 0.f;
  // As gemm_rowmajor: row-major C = A @ B is column-major C^T = B^T A^T.
  const cudaDataType_t in = p == Precision::bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const cublasComputeType_t ct = p == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  CUBLAS_CHECK(cublasGemmEx(cublas(ctx), CUBLAS_OP_N, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, B, in, int(N), A,
                            in, int(K), &beta, C, CUDA_R_32F, int(N), ct, CUBLAS_GEMM_DEFAULT));
}

// Milliseconds per call of fn (kLtWarmupRuns, then kLtTimedRuns calls between two events); a
// negative value when fn reports a failure (that candidate is skipped).
template <class F>
float time_ms(cudaStream_t s, F&& fn) {
  for (int i = 0; i < kLtWarmupRuns; ++i)
    if (!fn()) return -1.f;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  bool ok = true;
  CUDA_CHECK(cudaEventRecord(e0, s));
  for (int i = 0; i < kLtTimedRuns && ok; ++i) ok = fn();
  CUDA_CHECK(cudaEventRecord(e1, s));
  CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  (void)cudaEventDestroy(e0);
  (void)cudaEventDestroy(e1);
  return ok ? ms / kLtTimedRuns : -1.f;
}

Key key_of(Context& ctx, Precision p, int64_t M, int64_t N, int64_t K, const void* A, const void* B, const float* bias,
           const float* C) {
  return Key{ctx.device(), int(p), M, N, K, bias != nullptr, alignment_of(A), alignment_of(B), alignment_of(C),
             bias ? alignment_of(bias) : 0u};
}

cublasLtHandle_t handle_for(State& S, int device) {
  auto it = S.handles.find(device);
  if (it != S.handles.end()) return it->second;
  const DeviceGuard on(device);  // created on the Context's device, whatever the thread's current one
  cublasLtHandle_t h = nullptr;
  CUBLAS_CHECK(cublasLtCreate(&h));
  S.handles[device] = h;
  return h;
}

// Times the heuristic's candidates for a problem on the caller's buffers (C is overwritten) and
// returns the fastest; S.mu held.
Entry tune_lt(Context& ctx, const Key& key, const LtProblem& lp, cublasLtHandle_t h, const void* A, const void* B,
              float* C, void* ws) {
  cublasLtMatmulHeuristicResult_t res[kLtCandidates] = {};
  int found = 0;
  CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(h, lp.op, lp.la, lp.lb, lp.lc, lp.lc, lp.pref, kLtCandidates, res, &found));
  Entry e;
  e.lt.use_lt = true;
  e.lt.candidates = found;
  const cudaStream_t s = stream(ctx);
  for (int i = 0; i < found; ++i) {
    if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > kLtWorkspaceBytes) continue;
    const float ms = time_ms(s, [&] { return lp.run(h, &res[i].algo, A, B, C, ws, s) == CUBLAS_STATUS_SUCCESS; });
    if (ms >= 0 && (e.lt.algo_rank < 0 || ms < e.lt.lt_ms)) {
      e.algo = res[i].algo;
      e.lt.algo_rank = i;
      e.lt.lt_ms = ms;
      e.lt.workspace = res[i].workspaceSize;
    }
  }
  TOPKSAE_CHECK(e.lt.algo_rank >= 0, "encoder GEMM: cublasLt has no working algorithm for [", key.M, ", ", key.K,
                "] @ [", key.K, ", ", key.N, "] in ", precision_name(Precision(key.prec)), " (", found,
                " candidates from its heuristic)");
  return e;
}


// The selection for a problem (timed now if no earlier call did): the choice, and for cublasLt its
// algorithm and handle.
EncoderGemmChoice select(Context& ctx, EncoderGemm how, Precision p, const Key& key, const void* A, const void* B,
                         const float* bias, float* C, void* ws, cublasLtMatmulAlgo_t* algo, cublasLtHandle_t* h) {
  State& S = state();
  std::lock_guard<std::mutex> lock(S.mu);
  *h = handle_for(S, ctx.device());
  auto it = S.cache.find(key);
  if (it == S.cache.end()) {
    LtProblem lp;
    lp.build(p, key.M, key.N, key.K, bias, key);
    it = S.cache.emplace(key, tune_lt(ctx, key, lp, *h, A, B, C, ws)).first;
  }
  Entry& e = it->second;
  *algo = e.algo;
  if (how == EncoderGemm::lt) return e.lt;
  if (!e.auto_done) {
    e.cublas_ms = time_ms(stream(ctx), [&] {
      cublas_gemm(ctx, p, key.M, key.N, key.K, A, B, bias, C);
      return true;
    });
    e.auto_lt = e.lt.lt_ms < e.cublas_ms;
    e.auto_done = true;
  }
  EncoderGemmChoice c = e.lt;
  c.use_lt = e.auto_lt;
  c.cublas_ms = e.cublas_ms;
  return c;
}

void check_dims(int64_t M, int64_t N, int64_t K) {
  TOPKSAE_CHECK(M < (int64_t(1) << 31) && N < (int64_t(1) << 31) && K < (int64_t(1) << 31),
                "GEMM dims must be < 2^31");
}
}  // namespace

EncoderGemmChoice encoder_gemm_prepare(Context& ctx, EncoderGemm how, Precision p, int64_t M, int64_t N, int64_t K,
                                       const void* A, const void* B, const float* bias, float* C) {
  if (how == EncoderGemm::cublas || M == 0 || N == 0) return {};
  check_dims(M, N, K);
  void* ws = ctx.scratch(kSlotLtWorkspace, kLtWorkspaceBytes);
  cublasLtMatmulAlgo_t algo;
  cublasLtHandle_t h;
  return select(ctx, how, p, key_of(ctx, p, M, N, K, A, B, bias, C), A, B, bias, C, ws, &algo, &h);
}

void encoder_gemm(Context& ctx, EncoderGemm how, Precision p, int64_t M, int64_t N, int64_t K, const void* A,
                  const void* B, const float* bias, float* C) {
  if (M == 0 || N == 0) return;
  check_dims(M, N, K);
  if (how != EncoderGemm::cublas) {
    void* ws = ctx.scratch(kSlotLtWorkspace, kLtWorkspaceBytes);
    const Key key = key_of(ctx, p, M, N, K, A, B, bias, C);
    cublasLtMatmulAlgo_t algo;
    cublasLtHandle_t h;
    if (select(ctx, how, p, key, A, B, bias, C, ws, &algo, &h).use_lt) {
      LtProblem lp;
      lp.build(p, M, N, K, bias, key);
      CUBLAS_CHECK(lp.run(h, &algo, A, B, C, ws, stream(ctx)));
      return;
    }
  }
  cublas_gemm(ctx, p, M, N, K, A, B, bias, C);
}

}  // namespace topksae::cuda::detail
