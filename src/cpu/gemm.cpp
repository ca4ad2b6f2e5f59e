// CPU dense GEMM through oneDNN's dnnl_sgemm (Debian's libdnnl-dev). oneDNN picks its kernels at
// run time from CPUID (AVX-512 on a Xeon, AVX2 or SSE4.1 elsewhere), so one portable binary runs
// the right code on every x86-64 machine with no environment variable set by hand; OpenBLAS and
// BLIS from Debian did not (README, "The CPU GEMM library", has the measurements).
//
// Threads: Debian builds oneDNN with the OpenMP runtime (DNNL_CPU_RUNTIME=OMP, libgomp), the same
// runtime as our own `#pragma omp` loops under GCC, so both draw from one thread pool: a GEMM
// called outside a parallel region uses omp_get_max_threads() threads; called inside one it runs
// on the calling thread. Nothing here ever runs two pools at once.
#include <oneapi/dnnl/dnnl.h>

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "topksae/error.h"
#include "topksae/ops_cpu.h"

namespace topksae::cpu {

// Below this many multiply-adds (e.g. 32 x 32 x 32) the product skips the library (see below).
constexpr int64_t kSmallGemm = int64_t(1) << 15;

void gemm(const float* A, const float* B, float* C, int64_t M, int64_t K, int64_t N, float beta) {
  TOPKSAE_CHECK(M >= 0 && K >= 0 && N >= 0, "gemm: negative size ", M, "x", K, " @ ", K, "x", N);
  TOPKSAE_CHECK(beta == 0.f || beta == 1.f, "gemm: beta must be 0 or 1, got ", beta);
  if (M == 0 || N == 0) return;
  if (K == 0) {  // nothing to add; oneDNN refuses lda = K = 0
    if (beta == 0.f) std::memset(C, 0, size_t(M * N) * sizeof(float));
    return;
  }
  if (M * K * N < kSmallGemm) {
    // Tiny products keep the plain row-by-row loop (k ascending, one rounding per multiply and
    // per add), the summation order of the GEMM this file had before oneDNN. Why: the sae_lens
    // interop check 3c (tests/interop/check_train_step.py, a 17x18 @ 18x97 encoder) compares W_dec
    // after Adam's first step, where one gradient entry is -2.4e-8, 2.4x Adam's eps: there the
    // update's slope lr*eps/(|g|+eps)^2 turns a 1e-10 rounding difference in that entry into 2e-5
    // of W_dec's scale. With oneDNN's order the check reads 2.85e-5 against its 1e-5 tolerance,
    // with this order 7.3e-6 (as before). Products this small cost microseconds either way.
    if (beta == 0.f) std::memset(C, 0, size_t(M * N) * sizeof(float));
    for (int64_t r = 0; r < M; ++r)
      for (int64_t kk = 0; kk < K; ++kk) {
        const float a = A[r * K + kk];
        if (a == 0.f) continue;
        const float* b = B + kk * N;
        float* c = C + r * N;
        for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
      }
    return;
  }
  // Row-major, no transposes: lda = K, ldb = ldc = N.
  const dnnl_status_t s = dnnl_sgemm('N', 'N', M, N, K, 1.f, A, K, B, N, beta, C, N);
  TOPKSAE_CHECK(s == dnnl_success, "gemm: dnnl_sgemm(", M, "x", K, " @ ", K, "x", N, ") failed with status ", int(s));
}

namespace {
const char* isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_all: return "all";
    default: return "unknown";
  }
}
}  // namespace

GemmLibraryInfo gemm_library_info() {
  GemmLibraryInfo g;
  const dnnl_version_t* v = dnnl_version();
  std::ostringstream ver;
  ver << v->major << "." << v->minor << "." << v->patch;
  g.library = "oneDNN";
  g.version = ver.str();
  g.isa = isa_name(dnnl_get_effective_cpu_isa());
  g.threading = v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB" : "other";
  g.threads = omp_get_max_threads();
  return g;
}

std::string GemmLibraryInfo::str() const {
  std::ostringstream o;
  o << library << " " << version << " (dnnl_sgemm), ISA " << isa << ", " << threading << " runtime, " << threads
    << " threads";
  return o.str();
}

}  // namespace topksae::cpu
