// Kernel execution of the CUDA emulation: the blocks of a grid run one after another; the threads
// of a block run as cooperative fibers on the calling OS thread (a hand-written x86-64 context
// switch, pooled stacks with a guard page). A fiber runs until it reaches a barrier
// (__syncthreads, a warp intrinsic) or returns; the scheduler then runs the next ready fiber.
// When no fiber can go on and the block barrier cannot complete, the launch is a deadlock on a
// GPU too: the emulator aborts naming the kernel, the block and what every thread waits for.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu/kernel.h"

#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif
#ifdef CUDA_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "the CUDA emulation's fiber switch is written for x86-64"
#endif

uint3 threadIdx{0, 0, 0};
uint3 blockIdx{0, 0, 0};
dim3 blockDim{1, 1, 1};
dim3 gridDim{1, 1, 1};

// void cuda_emu_switch(void** save_sp, void* new_sp): saves the callee-saved registers, the SSE
// control word and the x87 control word on the current stack, stores the stack pointer in
// *save_sp, and resumes the context whose stack pointer is new_sp.
// cuda_emu_fiber_start: the first "return address" of a fresh fiber; calls r12(r13), never returns.
asm(R"(
.text
.globl cuda_emu_switch
.type cuda_emu_switch,@function
cuda_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size cuda_emu_switch,.-cuda_emu_switch
.globl cuda_emu_fiber_start
.type cuda_emu_fiber_start,@function
cuda_emu_fiber_start:
  movq %r13, %rdi
  callq *%r12
  ud2
.size cuda_emu_fiber_start,.-cuda_emu_fiber_start
.section .note.GNU-stack,"",@progbits
.text
)");
extern "C" void cuda_emu_switch(void** save_sp, void* new_sp);
extern "C" void cuda_emu_fiber_start();

namespace cuda_emu {
namespace {

enum class Wait : uint8_t { ready, sync, warp, exited };

struct ThreadState {
  Wait wait = Wait::ready;
  WarpOp op = kSyncWarp;
  unsigned mask = 0;
  int param = 0;
  int width = 32;
  uint64_t value = 0;
  uint64_t result = 0;
  uint3 tid{0, 0, 0};
  void* sp = nullptr;  // saved stack pointer while switched out
  void* asan_fake = nullptr;
};

size_t stack_bytes() {
  static const size_t n = [] {
    size_t kb = 0;
#ifdef CUDA_EMU_ASAN
    kb = 256;
#else
    kb = 64;
#endif
    if (const char* e = std::getenv("CUDA_EMU_STACK_KB")) kb = size_t(std::strtoul(e, nullptr, 10));
    return kb * 1024;
  }();
  return n;
}

// Stacks for up to 1024 fibers, made once (memory is only committed where a fiber touched it).
struct StackPool {
  char* base = nullptr;
  size_t slot = 0, count = 0;
  char* stack(size_t i) {
    if (base == nullptr) {
      const size_t page = size_t(sysconf(_SC_PAGESIZE));
      slot = stack_bytes() + page;
      count = 1024;
      void* m = mmap(nullptr, slot * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (m == MAP_FAILED) {
        std::fprintf(stderr, "cuda_emu: cannot map the fiber stacks\n");
        std::abort();
      }
      base = static_cast<char*>(m);
      for (size_t k = 0; k < count; ++k) mprotect(base + k * slot, page, PROT_NONE);  // guard page below each
    }
    return base + i * slot + (slot - stack_bytes());
  }
};

struct Scheduler {
  StackPool pool;
  std::vector<ThreadState> ts;
  std::vector<int> ready;  // a FIFO: [head, end)
  size_t head = 0;
  int cur = -1;
  int n_threads = 0, n_live = 0, n_at_sync = 0;
  void* sched_sp = nullptr;
  const char* kernel = "";
  void (*body)(void*) = nullptr;
  void* arg = nullptr;
  std::vector<void*> shared_seen;  // the __shared__ variables already filled in this block
  size_t static_smem = 0;          // their bytes: the static shared memory the block reached
  int smem_limit = 0;
  bool reverse = false;           // CUDA_EMU_ORDER=reverse: blocks and ready threads last to first
  std::unique_ptr<char[]> smem;  // the dynamic shared memory of the block, exactly the launch's size
  size_t smem_bytes = 0;
#ifdef CUDA_EMU_ASAN
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
#endif
};

Scheduler g;
std::mutex g_launch_mutex;  // one grid at a time in the process: shared memory is static storage

std::string block_name() {
  return "block (" + std::to_string(blockIdx.x) + "," + std::to_string(blockIdx.y) + "," + std::to_string(blockIdx.z) +
         ")";
}
std::string thread_name(int t) {
  const uint3 d = g.ts[size_t(t)].tid;
  return "thread (" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}

[[noreturn]] void fail(const std::string& msg) {
  std::fprintf(stderr, "\ncuda_emu: kernel %s, %s: %s\n", g.kernel, block_name().c_str(), msg.c_str());
  std::fflush(stderr);
  std::abort();
}

// From the running fiber back to the scheduler (the fiber waits, or has exited).
void yield_to_scheduler(bool exiting) {
  ThreadState& me = g.ts[size_t(g.cur)];
#ifdef CUDA_EMU_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &me.asan_fake, g.sched_stack_bottom, g.sched_stack_size);
#endif
  cuda_emu_switch(&me.sp, g.sched_sp);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(g.ts[size_t(g.cur)].asan_fake, nullptr, nullptr);
#endif
  (void)exiting;
}

void fiber_main() {
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &g.sched_stack_bottom, &g.sched_stack_size);
#endif
  g.body(g.arg);
  ThreadState& me = g.ts[size_t(g.cur)];
  me.wait = Wait::exited;
  --g.n_live;
  yield_to_scheduler(true);
  std::abort();  // an exited fiber is never resumed
}

void prepare_fiber(int t) {
  char* lo = g.pool.stack(size_t(t));
  auto top = reinterpret_cast<uintptr_t>(lo + stack_bytes()) & ~uintptr_t(15);
  auto* w = reinterpret_cast<uint64_t*>(top);
  // Matches cuda_emu_switch's restore order; after its `ret` the stack pointer is top - 16.
  w[-3] = reinterpret_cast<uint64_t>(&cuda_emu_fiber_start);  // return address
  w[-4] = 0;                                                    // rbp
  w[-5] = 0;                                                    // rbx
  w[-6] = reinterpret_cast<uint64_t>(&fiber_main);              // r12: the function
  w[-7] = 0;                                                    // r13: its argument
  w[-8] = 0;                                                    // r14
  w[-9] = 0;                                                    // r15
  const uint32_t csr[2] = {0x1F80u, 0x037Fu};                   // MXCSR, x87 control word
  std::memcpy(&w[-10], csr, 8);
  g.ts[size_t(t)].sp = &w[-10];
}

void run_fiber(int t) {
  g.cur = t;
  threadIdx = g.ts[size_t(t)].tid;
  char* lo = g.pool.stack(size_t(t));
#ifdef CUDA_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, lo, stack_bytes());
#else
  (void)lo;
#endif
  cuda_emu_switch(&g.sched_sp, g.ts[size_t(t)].sp);
#ifdef CUDA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g.cur = -1;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case kShflIdx: return "__shfl_sync";
    case kShflUp: return "__shfl_up_sync";
    case kShflDown: return "__shfl_down_sync";
    case kShflXor: return "__shfl_xor_sync";
    case kBallot: return "__ballot_sync";
    case kAny: return "__any_sync";
    case kAll: return "__all_sync";
    case kSyncWarp: return "__syncwarp";
  }
  return "?";
}

std::string describe(int t) {
  const ThreadState& s = g.ts[size_t(t)];
  char buf[128];
  switch (s.wait) {
    case Wait::ready: return thread_name(t) + " ready";
    case Wait::exited: return thread_name(t) + " exited";
    case Wait::sync: return thread_name(t) + " waits at __syncthreads";
    case Wait::warp: {
      std::snprintf(buf, sizeof buf, " waits at %s (mask 0x%08x)", op_name(s.op), s.mask);
      std::string d = thread_name(t) + buf;
      const int warp0 = t & ~31;
      for (int l = 0; l < 32; ++l)
        if ((s.mask >> l & 1u) && warp0 + l < g.n_threads && g.ts[size_t(warp0 + l)].wait == Wait::exited) {
          d += ", which names lane " + std::to_string(l) + ", which has exited";
          break;
        }
      return d;
    }
  }
  return "?";
}

[[noreturn]] void report_deadlock() {
  std::string msg = "DEADLOCK: no thread can go on (" + std::to_string(g.n_at_sync) + " of " +
                    std::to_string(g.n_live) + " live threads wait at __syncthreads, the rest at warp barriers "
                    "that cannot complete; " + std::to_string(g.n_threads - g.n_live) + " exited). Threads:";
  int shown = 0;
  Wait last = Wait::ready;
  for (int t = 0; t < g.n_threads; ++t) {
    const ThreadState& s = g.ts[size_t(t)];
    // Every thread waiting at a warp barrier, and the first thread of each run of other states.
    if (s.wait == Wait::warp || t == 0 || s.wait != last) {
      if (shown++ < 64) msg += "\n  " + describe(t);
    }
    last = s.wait;
  }
  if (shown > 64) msg += "\n  ...";
  fail(msg);
}

}  // namespace

void* dynamic_smem() { return g.smem.get(); }

void shared_decl(void* p, size_t bytes) {
  for (void* q : g.shared_seen)
    if (q == p) return;
  g.shared_seen.push_back(p);
  std::memset(p, 0xFF, bytes);
  g.static_smem += bytes;
  if (g.static_smem + g.smem_bytes > size_t(g.smem_limit))
    fail("static (" + std::to_string(g.static_smem) + " bytes so far) + dynamic (" + std::to_string(g.smem_bytes) +
         " bytes) shared memory exceed the kernel's limit of " + std::to_string(g.smem_limit) +
         " bytes: the launch would fail on a GPU (above 48 KiB it needs cudaFuncSetAttribute)");
}

void device_trap(const char* what) {
  fail(std::string(what) + " in " + (g.cur >= 0 ? thread_name(g.cur) : std::string("?")));
}

void syncthreads() {
  if (g.cur < 0) fail("__syncthreads outside a kernel");
  g.ts[size_t(g.cur)].wait = Wait::sync;
  ++g.n_at_sync;
  yield_to_scheduler(false);
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int param, int width) {
  if (g.cur < 0) fail(std::string(op_name(op)) + " outside a kernel");
  const int me = g.cur;
  const int lane = me & 31, warp0 = me & ~31;
  const int warp_lanes = std::min(32, g.n_threads - warp0);
  char buf[256];
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) {
    std::snprintf(buf, sizeof buf, "%s with width %d (must be a power of two <= 32)", op_name(op), width);
    fail(thread_name(me) + ": " + buf);
  }
  if (!(mask >> lane & 1u)) {
    std::snprintf(buf, sizeof buf, "%s with mask 0x%08x that does not name the calling lane %d", op_name(op), mask, lane);
    fail(thread_name(me) + ": " + buf);
  }
  if (warp_lanes < 32 && (mask >> warp_lanes) != 0u) {
    std::snprintf(buf, sizeof buf,
                  "%s with mask 0x%08x names lanes that do not exist (the block's last warp has %d lanes)",
                  op_name(op), mask, warp_lanes);
    fail(thread_name(me) + ": " + buf);
  }
  ThreadState& s = g.ts[size_t(me)];
  s.wait = Wait::warp;
  s.op = op;
  s.mask = mask;
  s.param = param;
  s.width = width;
  s.value = value;
  // A lane already waiting with a mask that names this lane must meet the same operation.
  for (int l = 0; l < warp_lanes; ++l) {
    const ThreadState& o = g.ts[size_t(warp0 + l)];
    if (l == lane || o.wait != Wait::warp || !(o.mask >> lane & 1u)) continue;
    if (o.mask != mask || o.op != op || o.width != width) {
      std::snprintf(buf, sizeof buf, "%s (mask 0x%08x, width %d) meets lane %d waiting at %s (mask 0x%08x, width %d)",
                    op_name(op), mask, width, l, op_name(o.op), o.mask, o.width);
      fail(thread_name(me) + ": " + buf);
    }
  }
  // Has every lane of the mask arrived at the same operation with the same mask?
  bool complete = true;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    const ThreadState& o = g.ts[size_t(warp0 + l)];
    if (o.wait == Wait::exited) {
      std::snprintf(buf, sizeof buf, "%s with mask 0x%08x names lane %d, which has exited", op_name(op), mask, l);
      fail(thread_name(me) + ": " + buf);
    }
    if (o.wait != Wait::warp) {
      complete = false;
      continue;
    }
    if (o.mask != mask || o.op != op || o.width != width) {
      std::snprintf(buf, sizeof buf, "%s (mask 0x%08x, width %d) meets lane %d waiting at %s (mask 0x%08x, width %d)",
                    op_name(op), mask, width, l, op_name(o.op), o.mask, o.width);
      fail(thread_name(me) + ": " + buf);
    }
  }
  if (!complete) {
    yield_to_scheduler(false);
    return g.ts[size_t(me)].result;  // the lane that completed the barrier left it here
  }
  // All arrived: every lane's result, then the others are ready again (in lane order).
  uint64_t bits = 0;
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) bits |= uint64_t(g.ts[size_t(warp0 + l)].value != 0) << l;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    ThreadState& o = g.ts[size_t(warp0 + l)];
    const int seg = l & ~(width - 1);
    int src = l;
    switch (op) {
      case kShflIdx: src = seg + (o.param & (width - 1)); break;
      case kShflUp: src = l - o.param >= seg ? l - o.param : l; break;
      case kShflDown: src = l + o.param < seg + width ? l + o.param : l; break;
      case kShflXor: src = (l ^ o.param) < seg + width ? (l ^ o.param) : l; break;
      default: break;
    }
    if (src < 0 || src > 31 || !(mask >> src & 1u)) {
      std::snprintf(buf, sizeof buf, "%s: lane %d reads lane %d, which is not in the mask 0x%08x (undefined on a GPU)",
                    op_name(op), l, src, mask);
      fail(thread_name(warp0 + l) + ": " + buf);
    }
    switch (op) {
      case kBallot: o.result = bits; break;
      case kAny: o.result = bits != 0; break;
      case kAll: o.result = bits == uint64_t(mask); break;
      case kSyncWarp: o.result = 0; break;
      default: o.result = g.ts[size_t(warp0 + src)].value; break;
    }
  }
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    ThreadState& o = g.ts[size_t(warp0 + l)];
    o.wait = Wait::ready;
    if (warp0 + l != me) g.ready.push_back(warp0 + l);
  }
  return s.result;
}

namespace {
// Runs the block blockIdx to completion: every thread until it returns.
void run_block() {
  const int n = g.n_threads;
  g.shared_seen.clear();
  g.static_smem = 0;
  // Shared memory starts as garbage on a GPU: NaN floats, -1 integers here.
  if (g.smem) std::memset(g.smem.get(), 0xFF, g.smem_bytes);
  g.ready.clear();
  g.head = 0;
  for (int t = 0; t < n; ++t) {
    g.ts[size_t(t)].wait = Wait::ready;
    prepare_fiber(t);
    g.ready.push_back(t);
  }
  g.n_live = n;
  g.n_at_sync = 0;
  for (;;) {
    // Forward: a FIFO (thread order); reverse: a LIFO (the last ready thread first), which makes
    // a missing barrier between a writer and a lower-numbered reader show up.
    while (g.head < g.ready.size()) {
      int t;
      if (g.reverse) {
        t = g.ready.back();
        g.ready.pop_back();
      } else {
        t = g.ready[g.head++];
      }
      run_fiber(t);
    }
    g.ready.clear();
    g.head = 0;
    if (g.n_live == 0) return;
    if (g.n_at_sync != g.n_live) report_deadlock();
    // The barrier completes: every waiting thread goes on, in thread order.
    for (int t = 0; t < n; ++t)
      if (g.ts[size_t(t)].wait == Wait::sync) {
        g.ts[size_t(t)].wait = Wait::ready;
        g.ready.push_back(t);
      }
    g.n_at_sync = 0;
  }
}
}  // namespace

void run_grid(const LaunchCfg& cfg, const char* name, int smem_limit, void (*body)(void*), void* arg) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  const dim3 gd = cfg.grid, bd = cfg.block;
  const int n = int(bd.x * bd.y * bd.z);
  g.kernel = name;
  g.body = body;
  g.arg = arg;
  g.n_threads = n;
  g.ts.assign(size_t(n), ThreadState{});
  g.ready.reserve(size_t(n) * 2);
  g.smem_bytes = cfg.smem;
  g.smem_limit = smem_limit;
  g.smem.reset(cfg.smem > 0 ? new char[cfg.smem] : nullptr);
  gridDim = gd;
  blockDim = bd;
  for (int t = 0; t < n; ++t)
    g.ts[size_t(t)].tid = uint3{unsigned(t) % bd.x, (unsigned(t) / bd.x) % bd.y, unsigned(t) / (bd.x * bd.y)};
  static const bool reverse = [] {
    const char* e = std::getenv("CUDA_EMU_ORDER");
    return e != nullptr && std::strcmp(e, "reverse") == 0;
  }();
  g.reverse = reverse;
  const unsigned long long n_blocks = 1ull * gd.x * gd.y * gd.z;
  for (unsigned long long i = 0; i < n_blocks; ++i) {
    const unsigned long long lin = reverse ? n_blocks - 1 - i : i;
    blockIdx = uint3{unsigned(lin % gd.x), unsigned(lin / gd.x % gd.y), unsigned(lin / (1ull * gd.x * gd.y))};
    run_block();
  }
  g.smem.reset();
  g.kernel = "";
  threadIdx = uint3{0, 0, 0};
  blockIdx = uint3{0, 0, 0};
}

}  // namespace cuda_emu
