// CUDA twin of topk_select: one block per row, a radix selection on an order-preserving uint32 key
// (larger value, larger key), never a sort of the row. Works for any n < 2^31 and k <= kMaxTopK;
// the bias add (encoder b_enc) and AuxK's dead-latent mask are fused into the key computation.
//
// Pass 1 histograms the top 11 bits of every key and finds the threshold digit t (the digit of the
// k-th largest key); c = (entries with digit > t) + hist[t] >= k entries can still win.
//  - Common case, c <= the shared-memory candidate capacity (cap >= 4096): pass 2 appends all c
//    candidates (digit >= t) to shared memory, a bitonic sort of them (padded to a power of two)
//    puts them in the output order, and the first k are the answer. The row is read twice.
//  - Crowded top bin (c > cap, e.g. thousands of near-equal values): the two remaining radix passes
//    (11 + 10 bits) pin the k-th key T exactly, an ordered collection pass takes every key > T and
//    the lowest-index keys == T, and a bitonic sort orders the k winners. The row is read four times.
// Both paths yield the first k entries of the same total order (value descending, then index
// ascending; masked-out entries below every value), so they agree exactly with each other and
// with the CPU twin. Shared memory: cap = max(4096, sort_n) uint64 candidates (sort_n: the power
// of two >= k), i.e. 32 KiB for k <= 4096 (4 blocks of 512 threads still fit an SM) and 64 KiB
// above, plus the 8 KiB histogram.
#include <atomic>
#include <cstdint>

#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2048;  // 11-bit digits
// Smallest candidate capacity of the two-read path (32 KiB of dynamic shared memory, under the
// default 48 KiB limit): room for the k = 64 / AuxK k = 1152 cuts plus a well-filled threshold bin.
constexpr int kMinCandCap = 4096;
// The default dynamic limit is 48 KiB minus the static shared memory (histogram + a few words).
static_assert(kMinCandCap * sizeof(unsigned long long) + kBins * sizeof(int) + 1024 <= 48 * 1024,
              "k <= kMinCandCap must launch without raising the shared-memory limit");

// Rows that took each path ([0] two reads, [1] four reads), summed over launches on this device:
// a test hook (topk_path_rows below). One atomic per row.
__device__ unsigned long long g_path_rows[2];

// Order-preserving map float -> uint32 (larger float, larger key). NaN ranks as -inf and -0 as +0,
// as in the CPU twin (which compares floats). Key 0 is reserved for masked-out entries.
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) f = -INFINITY;
  if (f == 0.f) f = 0.f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Sort key of a candidate: larger value first, then lower index first, as one descending uint64.
// Never 0 for a real entry (j < 2^31), so 0 pads a sort and sorts after every candidate.
__device__ __forceinline__ unsigned long long pack(uint32_t key, int64_t j) {
  return (static_cast<unsigned long long>(key) << 32) | static_cast<unsigned long long>(0xFFFFFFFFu - uint32_t(j));
}

// Sorts a[0, sn) descending; sn a power of two. Called by the whole block with the same sn; the
// caller's writes to a must be behind a barrier, and the last stage ends with one.
__device__ void bitonic_sort_desc(unsigned long long* a, int sn) {
  for (int size = 2; size <= sn; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < sn; i += blockDim.x) {
        const int p = i ^ stride;
        if (p > i) {
          const unsigned long long x = a[i], y = a[p];
          const bool desc = (i & size) == 0;
          if (desc ? (x < y) : (x > y)) {
            a[i] = y;
            a[p] = x;
          }
        }
      }
      __syncthreads();
    }
  }
}

__global__ void __launch_bounds__(kThreads) topk_kernel(const float* __restrict__ h, const float* __restrict__ bias,
                                                        const uint8_t* __restrict__ mask,
                                                        const int32_t* __restrict__ k_dev, int64_t n, int k_cap,
                                                        int sort_n, int cap, int relu, int32_t* __restrict__ out_idx,
                                                        float* __restrict__ out_val) {
  extern __shared__ unsigned long long cand[];  // [cap], cap a power of two >= sort_n
  __shared__ int hist[kBins];
  __shared__ int warp_sums[kWarps];
  __shared__ int s_digit, s_remain, s_count, s_fill, s_gt, s_eq_base, s_done;

  const int64_t b = blockIdx.x;
  const float* row = h + b * n;
  int k = k_cap;
  if (k_dev != nullptr) k = min(*k_dev, k_cap);
  if (k <= 0) return;  // uniform over the block

  auto key_at = [&](int64_t j) -> uint32_t {
    if (mask != nullptr && mask[j] == 0) return 0u;
    float f = row[j];
    if (bias != nullptr) f += bias[j];
    return order_key(f);
  };

  // Fill counter of the two-read path; first used after the first pass's barriers.
  if (threadIdx.x == 0) s_fill = 0;

  // ---- radix selection of the threshold key T, and how many entries equal to T to take --------
  uint32_t prefix = 0, pmask = 0;
  int remain = k;   // rank of T among the entries still matching the prefix, counted from the top
  int n_cand = -1;  // >= 0: the two-read path, with this many candidates (keys >= t << 21)
#pragma unroll 1
  for (int pass = 0; pass < 3; ++pass) {
    const int sh = pass == 0 ? 21 : (pass == 1 ? 10 : 0);
    const int nbits = pass == 2 ? 10 : 11;
    const uint32_t dm = (1u << nbits) - 1u;
    for (int i = threadIdx.x; i < kBins; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    // Key 0 (masked out; AuxK masks ~95% of a row) has digit 0 in every pass: counted in a register
    // and added once per warp, instead of thousands of atomics on one shared-memory word.
    int zeros = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const uint32_t key = key_at(j);
      if ((key & pmask) == prefix) {
        if (key == 0u)
          ++zeros;
        else
          atomicAdd(&hist[(key >> sh) & dm], 1);
      }
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) zeros += __shfl_xor_sync(0xffffffffu, zeros, off);
    if ((threadIdx.x & 31) == 0 && zeros > 0) atomicAdd(&hist[0], zeros);
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l owns `per` bins below nb - l*per: lane 0 holds the largest digits. Exactly one lane
      // brackets `remain` (the prefix sums grow with the lane and end at >= remain).
      const int lane = threadIdx.x;
      const int nb = int(dm) + 1, per = nb / 32;
      const int hi = nb - lane * per;
      int s = 0;
      for (int t = hi - per; t < hi; ++t) s += hist[t];
      int incl = s;
#pragma unroll
      for (int off = 1; off < 32; off *= 2) {
        const int v = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += v;
      }
      const int excl = incl - s;
      if (excl < remain && remain <= incl) {
        int acc = excl;
        for (int t = hi - 1; t >= hi - per; --t) {
          const int c = hist[t];
          if (acc + c >= remain) {
            s_digit = t;
            s_remain = remain - acc;
            s_count = acc + c;  // entries (matching the prefix) whose digit is >= t
            break;
          }
          acc += c;
        }
      }
    }
    __syncthreads();
    prefix |= uint32_t(s_digit) << sh;
    pmask |= dm << sh;
    remain = s_remain;
    const int count = s_count;
    __syncthreads();  // everyone has read s_*, which the next pass may overwrite
    // Uniform: pass and count (read from shared memory between two barriers) are the same in
    // every thread. In the first pass every entry matches the (empty) prefix, so count is the
    // number of keys >= prefix = t << 21 (t: the top digit of the k-th largest key), and >= k.
    if (pass == 0 && count <= cap) {
      n_cand = count;
      break;
    }
  }

  if (n_cand >= 0) {
    // ---- two reads: every entry with key >= prefix (the top-digit bin and above) --------------
    // Exactly n_cand keys qualify (the same keys the first pass counted); p < cap only guards memory.
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const uint32_t key = key_at(j);
      if (key >= prefix) {
        const int p = atomicAdd(&s_fill, 1);
        if (p < cap) cand[p] = pack(key, j);
      }
    }
    int sn = 1;
    while (sn < n_cand) sn <<= 1;  // n_cand <= cap, a power of two, so sn <= cap
    for (int i = n_cand + threadIdx.x; i < sn; i += blockDim.x) cand[i] = 0ull;
    if (threadIdx.x == 0) atomicAdd(&g_path_rows[0], 1ull);
    __syncthreads();
    bitonic_sort_desc(cand, sn);  // n_cand >= k, so the first k are real candidates
  } else {
    // ---- four reads: collection: > T anywhere (order fixed by the sort), == T in index order --
    const uint32_t T = prefix;
    const int need_eq = remain;   // entries equal to T that make the cut (the lowest indices)
    const int n_gt = k - remain;  // entries strictly above T (all make the cut)
    if (threadIdx.x == 0) {
      s_gt = 0;
      s_eq_base = 0;
      atomicAdd(&g_path_rows[1], 1ull);
    }
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int64_t base = 0; base < n; base += blockDim.x) {
      const int64_t j = base + threadIdx.x;
      const bool in = j < n;
      const uint32_t key = in ? key_at(j) : 0u;
      const bool gt = in && key > T;
      const bool eq = in && key == T;
      if (gt) cand[atomicAdd(&s_gt, 1)] = pack(key, j);
      const unsigned bal = __ballot_sync(0xffffffffu, eq);
      if (lane == 0) warp_sums[warp] = __popc(bal);
      __syncthreads();
      int wbase = s_eq_base;
      for (int w = 0; w < warp; ++w) wbase += warp_sums[w];
      if (eq) {
        const int r = wbase + __popc(bal & ((1u << lane) - 1u));
        if (r < need_eq) cand[n_gt + r] = pack(key, j);
      }
      __syncthreads();
      // Thread 0 decides for the block: s_gt is final for this round here (its atomics happened
      // before the barrier above), whereas reading it after the next barrier would race with the
      // next round's atomicAdds of threads that already went on (a non-uniform break, a deadlock).
      if (threadIdx.x == 0) {
        int tot = 0;
        for (int w = 0; w < kWarps; ++w) tot += warp_sums[w];
        s_eq_base += tot;
        s_done = (s_eq_base >= need_eq && s_gt >= n_gt) ? 1 : 0;
      }
      __syncthreads();
      if (s_done) break;  // uniform: all winners found
    }
    // Bitonic sort of the k winners (padded with 0, which sorts last), descending.
    for (int i = k + threadIdx.x; i < sort_n; i += blockDim.x) cand[i] = 0ull;
    __syncthreads();
    bitonic_sort_desc(cand, sort_n);
  }

  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    const int64_t j = int64_t(0xFFFFFFFFu - uint32_t(cand[i] & 0xFFFFFFFFull));
    float v = row[j];
    if (bias != nullptr) v += bias[j];
    if (relu) v = (v < 0.f) ? 0.f : v;  // == std::max(v, 0.f): NaN stays NaN
    out_idx[b * k_cap + i] = int32_t(j);
    out_val[b * k_cap + i] = v;
  }
}
}  // namespace

void topk_select(Context& ctx, const float* h, int64_t B, int64_t n, int64_t k, int32_t* idx, float* val,
                 const TopKOptions& opt) {
  TOPKSAE_CHECK(k >= 1 && k <= n, "top-k: k=", k, " must be in [1, ", n, "]");
  TOPKSAE_CHECK(k <= kMaxTopK, "top-k on the GPU: k=", k, " exceeds the supported maximum ", kMaxTopK);
  TOPKSAE_CHECK(n < (int64_t(1) << 31), "top-k: n=", n, " must be < 2^31 (int32 latent indices)");
  if (B == 0) return;
  int sort_n = 32;
  while (sort_n < k) sort_n <<= 1;
  // Candidate capacity: a power of two >= sort_n (the four-read path sorts sort_n entries there).
  // 32 KiB for k <= 4096, 64 KiB = kMaxTopK * 8 above.
  const int cap = sort_n > kMinCandCap ? sort_n : kMinCandCap;
  const size_t smem = size_t(cap) * sizeof(unsigned long long);
  // Above the default 48 KiB, the kernel's dynamic shared-memory limit must be raised, once per
  // device (the attribute belongs to the device's context, so a second GPU needs its own call).
  // Atomic flags: several threads may make their first call at once; setting it twice is harmless.
  if (smem > 48 * 1024) {
    constexpr int kMaxDevices = 64;
    static std::atomic<bool> attr_set[kMaxDevices];
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    if (dev >= kMaxDevices || !attr_set[dev].load(std::memory_order_acquire)) {
      // The largest cap: sort_n for k = kMaxTopK (kMinCandCap is smaller).
      static_assert(kMinCandCap <= kMaxTopK, "the attribute below must cover every cap");
      CUDA_CHECK(cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(kMaxTopK * sizeof(unsigned long long))));
      if (dev < kMaxDevices) attr_set[dev].store(true, std::memory_order_release);
    }
  }
  topk_kernel<<<unsigned(B), kThreads, smem, detail::stream(ctx)>>>(h, opt.bias, opt.mask, opt.k_dev, n, int(k),
                                                                     sort_n, cap, opt.relu ? 1 : 0, idx, val);
  CUDA_CHECK_LAUNCH();
}

namespace detail {
// Test hook (declared by tests/test_cuda_topk.cpp, not public): the rows that took the two-read
// and the four-read path on the current device since the last call, then resets both counts.
// Synchronises the device.
void topk_path_rows(int64_t* two_reads, int64_t* four_reads) {
  unsigned long long c[2] = {0, 0};
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpyFromSymbol(c, g_path_rows, sizeof(c)));
  const unsigned long long zero[2] = {0, 0};
  CUDA_CHECK(cudaMemcpyToSymbol(g_path_rows, zero, sizeof(zero)));
  *two_reads = int64_t(c[0]);
  *four_reads = int64_t(c[1]);
}
}  // namespace detail

}  // namespace topksae::cuda
