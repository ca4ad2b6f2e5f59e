// The CUDA runtime API emulated on the host (tests/cuda_emu/README.md): allocations, copies,
// streams, events, device queries, launch validation and the last-error state. Every operation
// completes before it returns, so streams and events only need validating, never scheduling.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emu/kernel.h"

namespace cuda_emu {
// The order a GPU would give the work of a stream (see "stream-order hazards" below).
struct StreamState {
  std::string name;
  bool nonblocking = false;
  uint64_t seq = 0;   // operations issued on the stream
  uint64_t done = 0;  // operations the host has seen complete (a synchronisation)
  std::map<const StreamState*, uint64_t> waited;  // later operations wait for these of other streams
};
}  // namespace cuda_emu

struct CUstream_st {
  int device;
  unsigned flags;
  cuda_emu::StreamState* st;
};
struct CUevent_st {
  int device;
  unsigned flags;
  bool recorded = false;
  std::chrono::steady_clock::time_point at{};
  cuda_emu::StreamState* st = nullptr;  // the stream and operation count it was recorded at
  uint64_t seq = 0;
  uint64_t capture_id = 0;  // last recorded into this capture (0: none); waiting on it is refused while it runs
};
// A captured graph and its executable form: the recorded operations, in issue order.
struct CUgraph_st {
  std::vector<cuda_emu::CapturedOp> ops;
};
struct CUgraphExec_st {
  std::vector<cuda_emu::CapturedOp> ops;
};

namespace cuda_emu {
namespace {

constexpr size_t kGlobalMem = size_t(80) << 30;
constexpr int kSmCount = 132;
constexpr int kL2Bytes = 50 << 20;
constexpr int kSmemDefault = 48 << 10;
constexpr int kSmemOptin = 227 << 10;
constexpr int kSmemPerSm = 228 << 10;

struct Alloc {
  size_t bytes;
  int device;
  bool pinned;  // cudaMallocHost: host memory the device may read
  // The last operation that may have written it: stream, its number there, what it was.
  const StreamState* w_stream = nullptr;
  uint64_t w_seq = 0;
  const char* w_what = nullptr;
};

std::mutex g_mu;  // guards everything below but the thread-local state
std::map<uintptr_t, Alloc> g_allocs;
size_t g_used[8] = {};
std::set<CUstream_st*> g_streams;
std::set<CUevent_st*> g_events;
std::map<const void*, int> g_max_dyn_smem;
std::vector<std::unique_ptr<StreamState>> g_stream_states;  // kept to the end: allocations name them
StreamState g_legacy = [] {
  StreamState s;
  s.name = "the legacy default stream";
  return s;
}();
// ---- stream capture ---------------------------------------------------------------------------
// One capture per capturing stream: what it recorded, whether an illegal call invalidated it.
struct CaptureState {
  uint64_t id;
  cudaStreamCaptureMode mode;
  std::thread::id owner;
  bool invalidated = false;
  std::vector<CapturedOp> ops;
};
std::map<cudaStream_t, CaptureState> g_captures;
std::atomic<int> g_n_captures{0};  // g_captures.size(), read without the lock on every operation
uint64_t g_capture_ids = 0;
std::set<CUgraph_st*> g_graphs;
std::set<CUgraphExec_st*> g_execs;
thread_local StreamState* t_per_thread = nullptr;
thread_local cudaError_t t_last = cudaSuccess;
thread_local int t_device = 0;

int device_count() {
  static const int n = [] {
    int v = 1;
    if (const char* e = std::getenv("CUDA_EMU_DEVICES")) v = std::atoi(e);
    return v < 0 ? 0 : (v > 8 ? 8 : v);
  }();
  return n;
}
bool fill_garbage() {
  static const bool f = [] {
    const char* e = std::getenv("CUDA_EMU_FILL");
    return !(e && std::strcmp(e, "0") == 0);
  }();
  return f;
}

cudaError_t fail(cudaError_t e) {
  t_last = e;
  return e;
}
void warn(const std::string& msg) { std::fprintf(stderr, "cuda_emu: %s\n", msg.c_str()); }
std::string ptr_str(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

// g_mu held: marks capture c (on stream s) invalid, saying why, as CUDA does on an illegal call.
void invalidate(cudaStream_t s, CaptureState& c, const std::string& why) {
  warn("stream capture on " + s->st->name + " invalidated: " + why);
  c.invalidated = true;
}

// The allocation containing [p, p + bytes) (bytes 0: p may be one past the end); g_mu held.
const Alloc* find_alloc(const void* p, size_t bytes, uintptr_t* base = nullptr) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return nullptr;
  --it;
  const uintptr_t lo = it->first, hi = lo + it->second.bytes;
  if (a < lo || a > hi || (bytes > 0 && (a == hi || bytes > hi - a))) return nullptr;
  if (base) *base = lo;
  return &it->second;
}

// ---- stream-order hazards ------------------------------------------------------------------------
// Every operation runs at once here, so a missing synchronisation cannot change a result. Instead
// the runtime keeps the order a GPU would guarantee: per stream, the operations issued and those
// the host has seen complete, and which operations of other streams a stream waits for (events,
// the legacy default stream's implicit barriers). Each allocation remembers the last operation
// that may have written it (a copy or memset into it, a kernel given a non-const pointer into it);
// an operation on another stream that uses it with nothing ordering the two is reported:
// "cuda_emu: HAZARD ..." on stderr (CUDA_EMU_HAZARDS=abort aborts, =0 turns the check off).
// cuBLAS/cuSPARSE/CUB calls are not seen: a hazard through them only is missed.
int hazard_mode() {  // 0 off, 1 report, 2 abort
  static const int m = [] {
    const char* e = std::getenv("CUDA_EMU_HAZARDS");
    if (e && std::strcmp(e, "0") == 0) return 0;
    if (e && std::strcmp(e, "abort") == 0) return 2;
    return 1;
  }();
  return m;
}

// g_mu held from here on.
StreamState* state_of(cudaStream_t s) {
  if (s == nullptr || s == cudaStreamLegacy) return &g_legacy;
  if (s == cudaStreamPerThread) {
    if (t_per_thread == nullptr) {
      g_stream_states.push_back(std::make_unique<StreamState>());
      t_per_thread = g_stream_states.back().get();
      t_per_thread->name = "a per-thread default stream";
    }
    return t_per_thread;
  }
  return s->st;
}

// A new operation on S: its number. The legacy default stream waits for every blocking stream,
// and every blocking stream for it.
uint64_t issue(StreamState* S) {
  if (S == &g_legacy) {
    for (auto& st : g_stream_states)
      if (!st->nonblocking) S->waited[st.get()] = std::max(S->waited[st.get()], st->seq);
  } else if (!S->nonblocking) {
    S->waited[&g_legacy] = std::max(S->waited[&g_legacy], g_legacy.seq);
  }
  return ++S->seq;
}

// Does operation n of W come before the operations R issues from now on?
bool ordered(const StreamState* W, uint64_t n, const StreamState* R, int depth = 0) {
  if (W == R || n <= W->done) return true;
  if (depth > 4) return false;
  for (const auto& [X, m] : R->waited) {
    if (X == W && n <= m) return true;
    if (X != R && ordered(W, n, X, depth + 1)) return true;  // W's op before X's ops, which R waits for
  }
  return false;
}

// The host saw S complete up to operation n: so are the operations S waited for.
void mark_done(StreamState* S, uint64_t n, int depth = 0) {
  if (n <= S->done) return;
  S->done = n;
  if (depth > 4) return;
  for (const auto& [X, m] : S->waited) mark_done(const_cast<StreamState*>(X), m, depth + 1);
}
void mark_all_done() {
  mark_done(&g_legacy, g_legacy.seq);
  for (auto& st : g_stream_states) mark_done(st.get(), st->seq);
}

// Operation `what` (number seq on S) uses [p, p + bytes) (bytes 0: p points into an allocation).
void access(const void* p, size_t bytes, bool write, StreamState* S, uint64_t seq, const char* what) {
  if (hazard_mode() == 0 || p == nullptr) return;
  uintptr_t base = 0;
  auto* a = const_cast<Alloc*>(find_alloc(p, bytes, &base));
  if (a == nullptr) return;
  if (a->w_stream != nullptr && !ordered(a->w_stream, a->w_seq, S)) {
    std::fprintf(stderr,
                 "cuda_emu: HAZARD: %s on %s %s the allocation %p (%zu bytes) that %s on %s may still be "
                 "writing: no synchronisation orders the two on a GPU\n",
                 what, S->name.c_str(), write ? "writes" : "reads", reinterpret_cast<void*>(base), a->bytes,
                 a->w_what, a->w_stream->name.c_str());
    if (hazard_mode() == 2) std::abort();
  }
  if (write) {
    a->w_stream = S;
    a->w_seq = seq;
    a->w_what = what;
  }
}

// The kernel being launched on this thread (launch_begin .. the pointer checks).
thread_local StreamState* t_launch_stream = nullptr;
thread_local uint64_t t_launch_seq = 0;

bool stream_ok(cudaStream_t s, int* dev = nullptr) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) {
    if (dev) *dev = t_device;
    return true;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_streams.count(s)) return false;
  if (dev) *dev = s->device;
  return true;
}
bool event_ok(cudaEvent_t e) {
  std::lock_guard<std::mutex> lock(g_mu);
  return e != nullptr && g_events.count(e) != 0;
}

// A copy's device side: inside one live allocation (device memory, or pinned host memory).
bool device_range(const char* api, const char* side, const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (find_alloc(p, bytes)) return true;
  warn(std::string(api) + ": the " + side + " [" + ptr_str(p) + ", +" + std::to_string(bytes) +
       ") is not inside one live device allocation");
  return false;
}

cudaError_t do_copy(const char* api, void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s,
                    bool sync) {
  if (bytes == 0) return cudaSuccess;
  if (dst == nullptr || src == nullptr) return fail(cudaErrorInvalidValue);
  bool dst_dev = false, src_dev = false;
  switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice: dst_dev = true; break;
    case cudaMemcpyDeviceToHost: src_dev = true; break;
    case cudaMemcpyDeviceToDevice: dst_dev = src_dev = true; break;
    case cudaMemcpyDefault: break;  // unified addressing: either side may be anything
    default: return fail(cudaErrorInvalidValue);
  }
  if (dst_dev && !device_range(api, "destination", dst, bytes)) return fail(cudaErrorInvalidValue);
  if (src_dev && !device_range(api, "source", src, bytes)) return fail(cudaErrorInvalidValue);
  std::memmove(dst, src, bytes);
  std::lock_guard<std::mutex> lock(g_mu);
  StreamState* S = state_of(s);
  const uint64_t n = issue(S);
  access(src, bytes, false, S, n, api);
  access(dst, bytes, true, S, n, api);
  // cudaMemcpy into pageable host memory returns when the copy (and the legacy stream's work
  // before it) is done.
  if (sync && kind == cudaMemcpyDeviceToHost) mark_done(S, n);
  return cudaSuccess;
}

void* aligned(size_t bytes, size_t align) {
  void* p = nullptr;
  if (posix_memalign(&p, align, bytes) != 0) return nullptr;
  return p;
}
}  // namespace

// ---- launch support (kernel.h) -------------------------------------------------------------------
bool launch_begin(const LaunchCfg& c, const char* name, const void* func, int max_threads) {
  if (!launch_check(c, func, max_threads)) return false;
  (void)name;
  std::lock_guard<std::mutex> lock(g_mu);
  t_launch_stream = state_of(c.stream);
  t_launch_seq = issue(t_launch_stream);
  return true;
}

bool launch_check(const LaunchCfg& c, const void* func, int max_threads) {
  const dim3 g = c.grid, b = c.block;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0 || g.x > 2147483647u || g.y > 65535u ||
      g.z > 65535u || b.x > 1024u || b.y > 1024u || b.z > 64u || threads > 1024u) {
    fail(cudaErrorInvalidConfiguration);
    return false;
  }
  if (threads > unsigned(max_threads)) {  // more threads than __launch_bounds__ promised
    fail(cudaErrorLaunchOutOfResources);
    return false;
  }
  int dyn_limit = kSmemDefault;  // without the attribute, static + dynamic <= 48 KiB (checked per block)
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_max_dyn_smem.find(func);
    if (it != g_max_dyn_smem.end()) dyn_limit = it->second;
  }
  if (c.smem > size_t(dyn_limit)) {
    fail(cudaErrorInvalidValue);
    return false;
  }
  int sdev = 0;
  if (!stream_ok(c.stream, &sdev) || sdev != t_device) {
    fail(cudaErrorInvalidResourceHandle);
    return false;
  }
  return true;
}

int smem_limit(const void* func) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_max_dyn_smem.find(func);
  return it != g_max_dyn_smem.end() ? kSmemOptin : kSmemDefault;
}

void check_pointer_arg(const char* kernel, int index, const void* p, bool write) {
  static const bool off = std::getenv("CUDA_EMU_NO_ARG_CHECK") != nullptr;
  if (p == nullptr) return;
  std::lock_guard<std::mutex> lock(g_mu);
  access(p, 0, write, t_launch_stream, t_launch_seq, kernel);
  if (off) return;
  const Alloc* a = find_alloc(p, 0);
  std::string why;
  if (a == nullptr)
    why = "is not inside any live device allocation (host memory, freed memory or a wild pointer)";
  else if (!a->pinned && a->device != t_device)
    why = "is memory of CUDA device " + std::to_string(a->device) + ", the launch is on device " + std::to_string(t_device);
  if (why.empty()) return;
  std::fprintf(stderr, "\ncuda_emu: kernel %s: pointer argument #%d = %s %s\n", kernel, index, ptr_str(p).c_str(),
               why.c_str());
  std::abort();
}

cudaError_t func_set_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (value < 0 || value > kSmemOptin) return fail(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_mu);
    g_max_dyn_smem[func] = value;
    return cudaSuccess;
  }
  if (attr == cudaFuncAttributePreferredSharedMemoryCarveout) return cudaSuccess;
  return fail(cudaErrorInvalidValue);
}

cudaError_t memcpy_to_symbol(void* symbol, size_t symbol_bytes, const void* src, size_t bytes, size_t offset) {
  if (const cudaError_t e = capture_forbids("cudaMemcpyToSymbol (synchronous)")) return e;
  if (offset > symbol_bytes || bytes > symbol_bytes - offset) return fail(cudaErrorInvalidValue);
  std::memcpy(static_cast<char*>(symbol) + offset, src, bytes);
  return cudaSuccess;
}
cudaError_t memcpy_from_symbol(void* dst, const void* symbol, size_t symbol_bytes, size_t bytes, size_t offset) {
  if (const cudaError_t e = capture_forbids("cudaMemcpyFromSymbol (synchronous)")) return e;
  if (offset > symbol_bytes || bytes > symbol_bytes - offset) return fail(cudaErrorInvalidValue);
  std::memcpy(dst, static_cast<const char*>(symbol) + offset, bytes);
  return cudaSuccess;
}

const char* check_device_range(const void* p, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_mu);
  return find_alloc(p, bytes) ? nullptr : "not inside one live device allocation";
}

// ---- stream capture ------------------------------------------------------------------------------
// A capturing stream records its operations instead of running them (each emulated operation asks
// capture_action first); cudaGraphLaunch replays them in order on its own stream, through the same
// entry points, so the replay gets every check (launch configuration, pointer arguments, library
// arguments, stream order) a direct call gets. Illegal calls during a capture (CUDA's "unsafe" calls,
// work on the legacy default stream while a blocking stream captures, synchronising or querying the
// capturing stream, waiting on an event recorded inside the capture) print a message, invalidate
// the capture (cudaStreamEndCapture then fails) and return CUDA's error.
Capture capture_action(cudaStream_t s, const char* what, cudaError_t* refused) {
  if (g_n_captures.load(std::memory_order_acquire) == 0) return Capture::run;
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_captures.find(s);
  if (it != g_captures.end()) {
    if (!it->second.invalidated) return Capture::record;
    if (refused) *refused = cudaErrorStreamCaptureInvalidated;
    t_last = cudaErrorStreamCaptureInvalidated;
    return Capture::refuse;
  }
  if (s == nullptr || s == cudaStreamLegacy) {
    bool implicit = false;
    for (auto& [cs, c] : g_captures)
      if (!cs->st->nonblocking) {  // the legacy stream would wait for it: an implicit dependency
        invalidate(cs, c, std::string(what) + " on the legacy default stream, which would synchronise with the capturing stream");
        implicit = true;
      }
    if (implicit) {
      if (refused) *refused = cudaErrorStreamCaptureImplicit;
      t_last = cudaErrorStreamCaptureImplicit;
      return Capture::refuse;
    }
  }
  return Capture::run;
}

void capture_record(cudaStream_t s, CapturedOp op) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_captures.find(s);
  if (it == g_captures.end()) {
    warn("internal error: capture_record on a stream that is not capturing");
    std::abort();
  }
  it->second.ops.push_back(std::move(op));
}

cudaError_t capture_forbids(const char* what) {
  if (g_n_captures.load(std::memory_order_acquire) == 0) return cudaSuccess;
  std::lock_guard<std::mutex> lock(g_mu);
  bool refused = false;
  for (auto& [cs, c] : g_captures)
    if (c.mode == cudaStreamCaptureModeGlobal ||
        (c.mode == cudaStreamCaptureModeThreadLocal && c.owner == std::this_thread::get_id())) {
      invalidate(cs, c, std::string(what) + " is not permitted while a stream captures");
      refused = true;
    }
  if (!refused) return cudaSuccess;
  t_last = cudaErrorStreamCaptureUnsupported;
  return cudaErrorStreamCaptureUnsupported;
}

void set_last_error(cudaError_t e) { t_last = e; }

}  // namespace cuda_emu

using namespace cuda_emu;

// ---- errors ---------------------------------------------------------------------------------------
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    default: return "unknown error";
  }
}
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaErrorUnknown";
  }
}
cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last;
  t_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last; }

// ---- devices -------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* n) {
  if (!n) return fail(cudaErrorInvalidValue);
  *n = device_count();
  if (*n == 0) return fail(cudaErrorNoDevice);
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* dev) {
  if (!dev) return fail(cudaErrorInvalidValue);
  if (device_count() == 0) return fail(cudaErrorNoDevice);
  *dev = t_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev) {
  if (dev < 0 || dev >= device_count()) return fail(cudaErrorInvalidDevice);
  t_device = dev;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev) {
  if (!value) return fail(cudaErrorInvalidValue);
  if (dev < 0 || dev >= device_count()) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = kSmemDefault; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = kSmCount; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = kSmemPerSm; break;
    case cudaDevAttrL2CacheSize: *value = kL2Bytes; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = kSmemOptin; break;
    default: return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev) {
  if (!p) return fail(cudaErrorInvalidValue);
  if (dev < 0 || dev >= device_count()) return fail(cudaErrorInvalidDevice);
  *p = cudaDeviceProp{};
  std::snprintf(p->name, sizeof p->name, "cuda_emu (CPU emulation, H100-like)");
  p->totalGlobalMem = kGlobalMem;
  p->sharedMemPerBlock = kSmemDefault;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = 1024;
  p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = 65535;
  p->maxGridSize[2] = 65535;
  p->clockRate = 1980000;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = kSmCount;
  p->l2CacheSize = kL2Bytes;
  p->maxThreadsPerMultiProcessor = 2048;
  p->sharedMemPerBlockOptin = kSmemOptin;
  p->sharedMemPerMultiprocessor = kSmemPerSm;
  p->memoryBusWidth = 5120;
  p->memoryClockRate = 2619000;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  if (!device_count()) return fail(cudaErrorNoDevice);
  if (const cudaError_t e = capture_forbids("cudaDeviceSynchronize")) return e;
  std::lock_guard<std::mutex> lock(g_mu);
  mark_all_done();
  return cudaSuccess;
}
cudaError_t cudaDeviceReset() { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
  if (const cudaError_t e = capture_forbids("cudaMemGetInfo")) return e;
  std::lock_guard<std::mutex> lock(g_mu);
  *total_bytes = kGlobalMem;
  *free_bytes = kGlobalMem - g_used[t_device];
  return cudaSuccess;
}

// ---- memory --------------------------------------------------------------------------------------
cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  *p = nullptr;
  if (device_count() == 0) return fail(cudaErrorNoDevice);
  if (const cudaError_t e = capture_forbids("cudaMalloc")) return e;
  if (bytes == 0) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (bytes > kGlobalMem - g_used[t_device]) return fail(cudaErrorMemoryAllocation);
  }
  // Exactly `bytes`, its own heap block: AddressSanitizer sees a kernel or copy running past it.
  void* m = aligned(bytes, 256);
  if (!m) return fail(cudaErrorMemoryAllocation);
  if (fill_garbage()) std::memset(m, 0xFF, bytes);  // fresh device memory is not zero: NaN / -1
  std::lock_guard<std::mutex> lock(g_mu);
  g_allocs[reinterpret_cast<uintptr_t>(m)] = Alloc{bytes, t_device, false};
  g_used[t_device] += bytes;
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (p == nullptr) return cudaSuccess;
  if (const cudaError_t e = capture_forbids("cudaFree")) return e;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it != g_allocs.end() && !it->second.pinned) {
      mark_all_done();  // cudaFree synchronises the device
      g_used[it->second.device] -= it->second.bytes;
      g_allocs.erase(it);
      std::free(p);
      return cudaSuccess;
    }
  }
  warn("cudaFree(" + ptr_str(p) + "): not the start of a live device allocation (double free?)");
  return fail(cudaErrorInvalidDevicePointer);
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  if (!p) return fail(cudaErrorInvalidValue);
  if (const cudaError_t e = capture_forbids("cudaMallocHost")) return e;
  void* m = aligned(bytes == 0 ? 1 : bytes, 4096);
  if (!m) return fail(cudaErrorMemoryAllocation);
  if (fill_garbage()) std::memset(m, 0xFF, bytes);
  std::lock_guard<std::mutex> lock(g_mu);
  g_allocs[reinterpret_cast<uintptr_t>(m)] = Alloc{bytes, t_device, true};
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) { return cudaMallocHost(p, bytes); }
cudaError_t cudaFreeHost(void* p) {
  if (p == nullptr) return cudaSuccess;
  if (const cudaError_t e = capture_forbids("cudaFreeHost")) return e;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it != g_allocs.end() && it->second.pinned) {
      mark_all_done();  // as cudaFree
      g_allocs.erase(it);
      std::free(p);
      return cudaSuccess;
    }
  }
  warn("cudaFreeHost(" + ptr_str(p) + "): not a live cudaMallocHost allocation");
  return fail(cudaErrorInvalidValue);
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* attr, const void* p) {
  if (!attr) return fail(cudaErrorInvalidValue);
  *attr = cudaPointerAttributes{cudaMemoryTypeUnregistered, -2, nullptr, nullptr};
  std::lock_guard<std::mutex> lock(g_mu);
  const Alloc* a = p ? find_alloc(p, 1) : nullptr;
  if (a == nullptr) {
    attr->hostPointer = const_cast<void*>(p);
    return cudaSuccess;
  }
  attr->device = a->device;
  attr->devicePointer = const_cast<void*>(p);
  if (a->pinned) {
    attr->type = cudaMemoryTypeHost;
    attr->hostPointer = const_cast<void*>(p);
  } else {
    attr->type = cudaMemoryTypeDevice;
  }
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (const cudaError_t e = capture_forbids("cudaMemcpy (synchronous)")) return e;
  cudaError_t why = cudaSuccess;
  if (capture_action(nullptr, "cudaMemcpy", &why) == Capture::refuse) return why;
  return do_copy("cudaMemcpy", dst, src, bytes, kind, nullptr, true);
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s) {
  if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
  cudaError_t why = cudaSuccess;
  switch (capture_action(s, "cudaMemcpyAsync", &why)) {
    case Capture::refuse: return why;
    case Capture::record: {
      // Checked now as a direct call would be. A host side must be pinned: CUDA refuses to capture
      // a copy from or to pageable memory.
      if (bytes == 0) return cudaSuccess;
      if (dst == nullptr || src == nullptr || kind == cudaMemcpyHostToHost) return fail(cudaErrorInvalidValue);
      for (int side = 0; side < 2; ++side) {
        const void* p = side == 0 ? dst : src;
        const bool dev = kind == cudaMemcpyDeviceToDevice || kind == cudaMemcpyDefault ||
                         kind == (side == 0 ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost);
        if (!device_range("cudaMemcpyAsync (captured)", side == 0 ? "destination" : "source", p, bytes)) {
          if (dev) return fail(cudaErrorInvalidValue);
          std::lock_guard<std::mutex> lock(g_mu);
          invalidate(s, g_captures.at(s), "cudaMemcpyAsync with pageable host memory");
          return fail(cudaErrorStreamCaptureUnsupported);
        }
      }
      capture_record(s, [=](cudaStream_t rs) { return cudaMemcpyAsync(dst, src, bytes, kind, rs); });
      return cudaSuccess;
    }
    case Capture::run: break;
  }
  return do_copy("cudaMemcpyAsync", dst, src, bytes, kind, s, false);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (const cudaError_t e = capture_forbids("cudaMemset (synchronous)")) return e;
  cudaError_t why = cudaSuccess;
  if (capture_action(nullptr, "cudaMemset", &why) == Capture::refuse) return why;
  if (bytes == 0) return cudaSuccess;
  if (!device_range("cudaMemset", "range", p, bytes)) return fail(cudaErrorInvalidValue);
  std::memset(p, value, bytes);
  std::lock_guard<std::mutex> lock(g_mu);
  access(p, bytes, true, &g_legacy, issue(&g_legacy), "cudaMemset");
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s) {
  if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
  if (bytes == 0) return cudaSuccess;
  if (!device_range("cudaMemsetAsync", "range", p, bytes)) return fail(cudaErrorInvalidValue);
  cudaError_t why = cudaSuccess;
  switch (capture_action(s, "cudaMemsetAsync", &why)) {
    case Capture::refuse: return why;
    case Capture::record:
      capture_record(s, [=](cudaStream_t rs) { return cudaMemsetAsync(p, value, bytes, rs); });
      return cudaSuccess;
    case Capture::run: break;
  }
  std::memset(p, value, bytes);
  std::lock_guard<std::mutex> lock(g_mu);
  StreamState* S = state_of(s);
  access(p, bytes, true, S, issue(S), "cudaMemsetAsync");
  return cudaSuccess;
}

// ---- streams and events --------------------------------------------------------------------------
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags) {
  if (!s) return fail(cudaErrorInvalidValue);
  if (device_count() == 0) return fail(cudaErrorNoDevice);
  std::lock_guard<std::mutex> lock(g_mu);
  g_stream_states.push_back(std::make_unique<StreamState>());
  StreamState* state = g_stream_states.back().get();
  state->nonblocking = (flags & cudaStreamNonBlocking) != 0;
  state->name = std::string(state->nonblocking ? "non-blocking " : "") + "stream #" + std::to_string(g_stream_states.size());
  auto* st = new CUstream_st{t_device, flags, state};
  g_streams.insert(st);
  *s = st;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_streams.erase(s)) return fail(cudaErrorInvalidResourceHandle);
  if (g_captures.erase(s)) g_n_captures.fetch_sub(1);  // a capture left open dies with its stream
  delete s;
  return cudaSuccess;
}
// Synchronising or querying a capturing stream is illegal (nothing it holds will ever run).
static cudaError_t refuse_if_capturing(cudaStream_t s, const char* what) {
  cudaError_t why = cudaSuccess;
  switch (capture_action(s, what, &why)) {
    case Capture::refuse: return why;
    case Capture::record: {
      std::lock_guard<std::mutex> lock(g_mu);
      invalidate(s, g_captures.at(s), std::string(what) + " of the capturing stream itself");
      return fail(cudaErrorStreamCaptureUnsupported);
    }
    case Capture::run: break;
  }
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = refuse_if_capturing(s, "cudaStreamSynchronize")) return e;
  std::lock_guard<std::mutex> lock(g_mu);
  StreamState* S = state_of(s);
  mark_done(S, S->seq);
  return cudaSuccess;
}
cudaError_t cudaStreamQuery(cudaStream_t s) {  // always complete
  if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
  if (const cudaError_t e = refuse_if_capturing(s, "cudaStreamQuery")) return e;
  return cudaStreamSynchronize(s);
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned) {
  if (!stream_ok(s) || !event_ok(e)) return fail(cudaErrorInvalidResourceHandle);
  cudaError_t why = cudaSuccess;
  const Capture act = capture_action(s, "cudaStreamWaitEvent", &why);
  if (act == Capture::refuse) return why;
  std::lock_guard<std::mutex> lock(g_mu);
  if (act == Capture::record) {  // only the capture's own events (one stream: already in order)
    CaptureState& c = g_captures.at(s);
    if (e->capture_id != c.id) {
      invalidate(s, c, "cudaStreamWaitEvent on an event recorded outside the capture (not emulated)");
      return fail(cudaErrorStreamCaptureUnsupported);
    }
    return cudaSuccess;
  }
  if (e->capture_id != 0) {
    for (auto& [cs, c] : g_captures)
      if (c.id == e->capture_id) {  // on a GPU the waiting stream would join the capture
        invalidate(cs, c, "another stream waits on an event recorded in the capture (fork: not emulated)");
        return fail(cudaErrorStreamCaptureUnsupported);
      }
  }
  if (e->st != nullptr) {
    StreamState* S = state_of(s);
    S->waited[e->st] = std::max(S->waited[e->st], e->seq);
  }
  return cudaSuccess;
}
cudaError_t cudaStreamGetDevice(cudaStream_t s, int* dev) {
  if (!dev) return fail(cudaErrorInvalidValue);
  return stream_ok(s, dev) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned flags) {
  if (!e) return fail(cudaErrorInvalidValue);
  auto* ev = new CUevent_st{t_device, flags};
  std::lock_guard<std::mutex> lock(g_mu);
  g_events.insert(ev);
  *e = ev;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_events.erase(e)) return fail(cudaErrorInvalidResourceHandle);
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  int sdev = 0;
  if (!event_ok(e) || !stream_ok(s, &sdev) || sdev != e->device) return fail(cudaErrorInvalidResourceHandle);
  cudaError_t why = cudaSuccess;
  switch (capture_action(s, "cudaEventRecord", &why)) {
    case Capture::refuse: return why;
    case Capture::record: {
      {
        std::lock_guard<std::mutex> lock(g_mu);
        e->capture_id = g_captures.at(s).id;
      }
      capture_record(s, [e](cudaStream_t rs) { return cudaEventRecord(e, rs); });
      return cudaSuccess;
    }
    case Capture::run: break;
  }
  std::lock_guard<std::mutex> lock(g_mu);
  e->capture_id = 0;
  e->recorded = true;
  e->at = std::chrono::steady_clock::now();
  e->st = state_of(s);
  e->seq = issue(e->st);
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!event_ok(e)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lock(g_mu);
  if (e->capture_id != 0)
    for (auto& [cs, c] : g_captures)
      if (c.id == e->capture_id) {
        invalidate(cs, c, "cudaEventSynchronize / cudaEventQuery of an event recorded in the capture");
        return fail(cudaErrorCapturedEvent);
      }
  if (e->st != nullptr) mark_done(e->st, e->seq);
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return cudaEventSynchronize(e); }  // always complete
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!ms) return fail(cudaErrorInvalidValue);
  if (!event_ok(a) || !event_ok(b)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lock(g_mu);
  if ((a->flags | b->flags) & cudaEventDisableTiming) return fail(cudaErrorInvalidResourceHandle);
  if (!a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}

// ---- stream capture and graphs -------------------------------------------------------------------
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode) {
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorInvalidValue);
  if (s == nullptr || s == cudaStreamLegacy) {
    warn("cudaStreamBeginCapture: the legacy default stream cannot be captured");
    return fail(cudaErrorStreamCaptureUnsupported);
  }
  if (s == cudaStreamPerThread) {
    warn("cudaStreamBeginCapture: the per-thread default stream is not emulated for capture");
    return fail(cudaErrorInvalidValue);
  }
  if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_captures.count(s)) return fail(cudaErrorIllegalState);
  g_captures.emplace(s, CaptureState{++g_capture_ids, mode, std::this_thread::get_id(), false, {}});
  g_n_captures.fetch_add(1, std::memory_order_release);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph) {
  if (graph == nullptr) return fail(cudaErrorInvalidValue);
  *graph = nullptr;
  if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_captures.find(s);
  if (it == g_captures.end()) return fail(cudaErrorIllegalState);
  CaptureState& c = it->second;
  if (c.mode != cudaStreamCaptureModeRelaxed && c.owner != std::this_thread::get_id()) {
    invalidate(s, c, "cudaStreamEndCapture from another thread");
    return fail(cudaErrorStreamCaptureWrongThread);
  }
  const bool bad = c.invalidated;
  auto* g = bad ? nullptr : new CUgraph_st{std::move(c.ops)};
  g_captures.erase(it);
  g_n_captures.fetch_sub(1, std::memory_order_release);
  if (bad) return fail(cudaErrorStreamCaptureInvalidated);
  g_graphs.insert(g);
  *graph = g;
  return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status) {
  if (status == nullptr) return fail(cudaErrorInvalidValue);
  if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_captures.find(s);
  *status = it == g_captures.end()   ? cudaStreamCaptureStatusNone
            : it->second.invalidated ? cudaStreamCaptureStatusInvalidated
                                     : cudaStreamCaptureStatusActive;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags) {
  if (exec == nullptr || flags != 0) return fail(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_graphs.count(graph)) return fail(cudaErrorInvalidResourceHandle);
  auto* x = new CUgraphExec_st{graph->ops};  // independent of the graph, which may be destroyed
  g_execs.insert(x);
  static const bool stats = std::getenv("CUDA_EMU_GRAPH_STATS") != nullptr;
  if (stats) warn("cudaGraphInstantiate: " + std::to_string(x->ops.size()) + " operations");
  *exec = x;
  return cudaSuccess;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s) {
  if (!stream_ok(s)) return fail(cudaErrorInvalidResourceHandle);
  std::vector<CapturedOp> ops;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!g_execs.count(exec)) return fail(cudaErrorInvalidResourceHandle);
    ops = exec->ops;
  }
  cudaError_t why = cudaSuccess;
  switch (capture_action(s, "cudaGraphLaunch", &why)) {
    case Capture::refuse: return why;
    case Capture::record:  // a child graph: its operations, replayed in place
      capture_record(s, [ops](cudaStream_t rs) {
        for (const CapturedOp& op : ops)
          if (const cudaError_t e = op(rs)) return e;
        return cudaSuccess;
      });
      return cudaSuccess;
    case Capture::run: break;
  }
  for (const CapturedOp& op : ops)
    if (const cudaError_t e = op(s)) return fail(e);
  return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_execs.erase(exec)) return fail(cudaErrorInvalidResourceHandle);
  delete exec;
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_graphs.erase(graph)) return fail(cudaErrorInvalidResourceHandle);
  delete graph;
  return cudaSuccess;
}
