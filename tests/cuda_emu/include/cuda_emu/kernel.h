// Device-side half of the CUDA emulation (tests/cuda_emu/README.md), force-included into every
// kernels/*.cu after rewrite_cu.py turned its `k<<<grid, block, smem, stream>>>(args)` launches
// into cuda_emu::launch calls. The threads of a block run as cooperative fibers on one OS thread
// (fibers.cpp): __syncthreads and the warp intrinsics are barriers where a fiber yields, so
// __shared__ memory is plain static storage and atomics are plain read-modify-writes.
#pragma once
#include <math.h>

#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_runtime.h>

// ---- qualifiers ------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __shared__ static  // one block runs at a time; `extern __shared__` is rewritten by rewrite_cu.py
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

// The thread's coordinates: globals the fiber scheduler sets before each switch to a fiber. Every
// function that may switch fibers is out of line, so the compiler reloads them after it.
extern uint3 threadIdx;
extern uint3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;
constexpr int warpSize = 32;

namespace cuda_emu {

// ---- fibers.cpp ------------------------------------------------------------------------------
enum WarpOp : int { kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kSyncWarp };
void syncthreads();
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int param, int width);
void* dynamic_smem();
// Called where a thread passes a `__shared__` declaration (rewrite_cu.py): the first thread of
// each block to pass it fills the variable with 0xFF bytes, as shared memory starts undefined.
void shared_decl(void* p, size_t bytes);
[[noreturn]] void device_trap(const char* what);

struct LaunchCfg {
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
};
inline LaunchCfg make_cfg(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = 0) {
  return LaunchCfg{grid, block, smem, stream};
}
// Validates the configuration (false + the launch error recorded for cudaGetLastError when it is
// invalid, as a GPU would); max_threads: the kernel's __launch_bounds__, or 1024.
bool launch_begin(const LaunchCfg& cfg, const char* name, const void* func, int max_threads);
// The same checks without issuing the launch (a launch recorded by a stream capture).
bool launch_check(const LaunchCfg& cfg, const void* func, int max_threads);
// Runs body(arg) as every thread of every block, block after block. smem_limit: the most static +
// dynamic shared memory a block may use (smem_limit below).
void run_grid(const LaunchCfg& cfg, const char* name, int smem_limit, void (*body)(void*), void* arg);
// Static + dynamic shared memory allowed to the kernel: 48 KiB, or the opt-in maximum (227 KiB)
// once cudaFuncSetAttribute raised its dynamic limit (which launch_begin checks on its own).
int smem_limit(const void* func);
// A kernel's pointer argument must point into a live device (or pinned host) allocation of the
// current device, or one past its end; aborts naming the kernel and the argument otherwise.
// write: a pointer to non-const, which the kernel may write through (the stream-order check).
void check_pointer_arg(const char* kernel, int index, const void* p, bool write);

template <typename T>
void check_arg(const char* kernel, int index, const T& v) {
  if constexpr (std::is_pointer_v<T> && !std::is_function_v<std::remove_pointer_t<T>>)
    check_pointer_arg(kernel, index, static_cast<const void*>(v), !std::is_const_v<std::remove_pointer_t<T>>);
}

template <typename... P>
struct Closure {
  void (*f)(P...);
  std::tuple<std::decay_t<P>...> args;
  static void body(void* self) {
    auto* c = static_cast<Closure*>(self);
    std::apply(c->f, c->args);  // each thread gets its own copies of the parameters, as on a GPU
  }
};

// The rewrite of `name<<<cfg>>>(args)`: the arguments are converted to the kernel's parameter
// types once, on the host, as a launch does.
template <typename... P, typename... A>
void launch(const LaunchCfg& cfg, const char* name, int max_threads, void (*f)(P...), A&&... a) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong number of arguments");
  switch (capture_action(cfg.stream, name)) {
    case Capture::refuse: return;  // the error is recorded for cudaGetLastError
    case Capture::record: {
      // As a GPU: the configuration is checked at the launch, the arguments are copied into the
      // graph node now, and the kernel runs (with its pointer checks) at each replay.
      if (!launch_check(cfg, reinterpret_cast<const void*>(f), max_threads)) return;
      std::tuple<std::decay_t<P>...> args(std::forward<A>(a)...);
      capture_record(cfg.stream, [cfg, name, max_threads, f, args](cudaStream_t rs) {
        const cudaError_t pending = cudaGetLastError();
        LaunchCfg c = cfg;
        c.stream = rs;
        std::apply([&](const auto&... v) { launch(c, name, max_threads, f, v...); }, args);
        const cudaError_t e = cudaGetLastError();
        if (pending != cudaSuccess) set_last_error(pending);
        return e;
      });
      return;
    }
    case Capture::run: break;
  }
  if (!launch_begin(cfg, name, reinterpret_cast<const void*>(f), max_threads)) return;
  Closure<P...> c{f, std::tuple<std::decay_t<P>...>(std::forward<A>(a)...)};
  std::apply([&](const auto&... v) {
    int i = 0;
    (check_arg(name, i++, v), ...);
  }, c.args);
  run_grid(cfg, name, smem_limit(reinterpret_cast<const void*>(f)), &Closure<P...>::body, &c);
}

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move up to 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <typename T>
T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}
}  // namespace cuda_emu

// ---- synchronisation and warp intrinsics -------------------------------------------------------
inline void __syncthreads() { cuda_emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)cuda_emu::warp_op(cuda_emu::kSyncWarp, mask, 0, 0, 32); }
inline void __threadfence() {}
inline void __threadfence_block() {}
template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::kShflIdx, mask, cuda_emu::to_bits(v), src, width));
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::kShflUp, mask, cuda_emu::to_bits(v), int(delta), width));
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::kShflDown, mask, cuda_emu::to_bits(v), int(delta), width));
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return cuda_emu::from_bits<T>(cuda_emu::warp_op(cuda_emu::kShflXor, mask, cuda_emu::to_bits(v), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return unsigned(cuda_emu::warp_op(cuda_emu::kBallot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) { return int(cuda_emu::warp_op(cuda_emu::kAny, mask, pred != 0, 0, 32)); }
inline int __all_sync(unsigned mask, int pred) { return int(cuda_emu::warp_op(cuda_emu::kAll, mask, pred != 0, 0, 32)); }
inline void __trap() { cuda_emu::device_trap("__trap()"); }

// ---- bit and type-punning intrinsics -----------------------------------------------------------
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}
inline unsigned __float_as_uint(float f) { return cuda_emu::from_bits<unsigned>(cuda_emu::to_bits(f)); }
inline int __float_as_int(float f) { return cuda_emu::from_bits<int>(cuda_emu::to_bits(f)); }
inline float __uint_as_float(unsigned u) { return cuda_emu::from_bits<float>(cuda_emu::to_bits(u)); }
inline float __int_as_float(int u) { return cuda_emu::from_bits<float>(cuda_emu::to_bits(u)); }
inline long long __double_as_longlong(double d) { return cuda_emu::from_bits<long long>(cuda_emu::to_bits(d)); }
inline double __longlong_as_double(long long u) { return cuda_emu::from_bits<double>(cuda_emu::to_bits(u)); }
template <typename T>
T __ldg(const T* p) {
  return *p;
}
// Streaming (evict-first) store: a cache hint on the GPU, a plain store here.
template <typename T>
void __stcs(T* p, T v) {
  *p = v;
}

// ---- atomics: exactly CUDA's overloads (one OS thread runs the grid, so plain RMWs) --------------
#define CUDA_EMU_ATOMIC(name, T, expr) \
  inline T name(T* p, T v) {           \
    const T old = *p;                  \
    *p = (expr);                       \
    return old;                        \
  }
CUDA_EMU_ATOMIC(atomicAdd, int, old + v)
CUDA_EMU_ATOMIC(atomicAdd, unsigned, old + v)
CUDA_EMU_ATOMIC(atomicAdd, unsigned long long, old + v)
CUDA_EMU_ATOMIC(atomicAdd, float, old + v)
CUDA_EMU_ATOMIC(atomicAdd, double, old + v)
CUDA_EMU_ATOMIC(atomicSub, int, old - v)
CUDA_EMU_ATOMIC(atomicSub, unsigned, old - v)
CUDA_EMU_ATOMIC(atomicExch, int, v)
CUDA_EMU_ATOMIC(atomicExch, unsigned, v)
CUDA_EMU_ATOMIC(atomicExch, unsigned long long, v)
CUDA_EMU_ATOMIC(atomicExch, float, v)
CUDA_EMU_ATOMIC(atomicMax, int, old < v ? v : old)
CUDA_EMU_ATOMIC(atomicMax, unsigned, old < v ? v : old)
CUDA_EMU_ATOMIC(atomicMax, long long, old < v ? v : old)
CUDA_EMU_ATOMIC(atomicMax, unsigned long long, old < v ? v : old)
CUDA_EMU_ATOMIC(atomicMin, int, v < old ? v : old)
CUDA_EMU_ATOMIC(atomicMin, unsigned, v < old ? v : old)
CUDA_EMU_ATOMIC(atomicMin, long long, v < old ? v : old)
CUDA_EMU_ATOMIC(atomicMin, unsigned long long, v < old ? v : old)
CUDA_EMU_ATOMIC(atomicAnd, int, old & v)
CUDA_EMU_ATOMIC(atomicAnd, unsigned, old & v)
CUDA_EMU_ATOMIC(atomicAnd, unsigned long long, old & v)
CUDA_EMU_ATOMIC(atomicOr, int, old | v)
CUDA_EMU_ATOMIC(atomicOr, unsigned, old | v)
CUDA_EMU_ATOMIC(atomicOr, unsigned long long, old | v)
CUDA_EMU_ATOMIC(atomicXor, int, old ^ v)
CUDA_EMU_ATOMIC(atomicXor, unsigned, old ^ v)
CUDA_EMU_ATOMIC(atomicXor, unsigned long long, old ^ v)
#undef CUDA_EMU_ATOMIC
#define CUDA_EMU_CAS(T)                  \
  inline T atomicCAS(T* p, T cmp, T v) { \
    const T old = *p;                    \
    if (old == cmp) *p = v;              \
    return old;                          \
  }
CUDA_EMU_CAS(int)
CUDA_EMU_CAS(unsigned)
CUDA_EMU_CAS(unsigned long long)
CUDA_EMU_CAS(unsigned short)
#undef CUDA_EMU_CAS

// ---- device math: the global overloads CUDA declares -------------------------------------------
#define CUDA_EMU_MINMAX(T)                                 \
  inline T min(T a, T b) { return b < a ? b : a; }         \
  inline T max(T a, T b) { return a < b ? b : a; }
CUDA_EMU_MINMAX(int)
CUDA_EMU_MINMAX(unsigned)
CUDA_EMU_MINMAX(long)
CUDA_EMU_MINMAX(unsigned long)
CUDA_EMU_MINMAX(long long)
CUDA_EMU_MINMAX(unsigned long long)
#undef CUDA_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline float cospif(float x) { return float(std::cos(M_PI * double(x))); }
inline float sinpif(float x) { return float(std::sin(M_PI * double(x))); }
inline double cospi(double x) { return std::cos(M_PI * x); }
inline double sinpi(double x) { return std::sin(M_PI * x); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
