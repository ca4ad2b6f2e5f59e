// CUDA twin of topk_select: one block per row, a radix selection on an order-preserving uint32 key
// (larger value, larger key), never a sort of the row. Works for any n < 2^31 and k <= kMaxTopK;
// the bias add (encoder b_enc) and AuxK's dead-latent mask are fused into the key computation.
// Every path gathers candidates in shared memory and ends in a bitonic sort of them; the first k
// are the answer. Three paths, tried in this order:
//  - One read (n >= kSampleMinN and 3k <= cap): a sample of S = 4096 keys (32 contiguous chunks
//    of 128 spread evenly over the row; more rounds of 4096 on long rows, sample_rounds) is
//    histogrammed on the top 11 bits; the digit d at which the sample's count from the top
//    reaches r = ceil(E * S / n) (E = min(4k, cap/2): the full-row count aimed at) gives the
//    threshold tau = d << 21. One full read of the row (float4
//    loads where n and the pointers allow) appends every key >= tau. If k <= that count <= cap, the
//    candidates hold the top k and the row cost one read plus the sample (4096 entries, 1/16 of a
//    65536 row, read just before and likely still in L2). Otherwise (a sample that missed, or
//    d == 0: mostly masked rows, where the full read is skipped) the two paths below run as before.
//  - Two reads: pass 1 histograms the top 11 bits of every key and finds the threshold digit t (the
//    digit of the k-th largest key); c = (entries with digit > t) + hist[t] >= k entries can still
//    win. If c <= cap, a second read appends those c candidates (digit >= t).
//  - Four reads (crowded top bin, c > cap, e.g. thousands of near-equal values): the two remaining
//    radix passes (11 + 10 bits) pin the k-th key T exactly, an ordered collection pass takes every
//    key > T and the lowest-index keys == T: the k winners.
// Unsorted (TopKOptions::sorted = false, AuxK's dense path, whose consumers need only the set):
// the three radix passes pin T, then one ordered pass writes every key > T and the lowest-index
// keys == T straight to the output in index order: no candidates and no sort (a bitonic sort of
// 2048..4096 candidates per row was most of AuxK's top-k time on an H200).
// All paths yield the first k entries of the same total order (value descending, then index
// ascending; masked-out entries below every value), so they agree exactly with each other and
// with the CPU twin. Shared memory: cap = max(4096, sort_n) uint64 candidates (sort_n: the power
// of two >= k), i.e. 32 KiB for k <= 4096 and 64 KiB above, plus the 8 KiB histogram. Registers
// (ptxas, sm_90): 40 per thread for the sorted kernel (the collection's 16 keys in flight), so 3
// blocks of 512 threads per SM (4 at 32, which spills), and 32 for the unsorted one: two template
// instances, since one kernel with both (runs 3 and 5 on the H200 measured that) needed 53, i.e. 2
// blocks per SM. The split is not yet timed on a GPU. Each path is one device function below
// (one_read_path, radix_select + two_read_collect, threshold_pass, sort_and_write); the test-only
// path counters (topk_select_testing.h) exist only in two more instances (kCount), which
// topk_select launches only while a test has switched counting on.
// Over 600 lines: one kernel's paths and the row-level helpers they share (keys, loads, the
// collection pass, the digit search, the sort) read best together.
#include <atomic>
#include <cstdint>

#include "common/reduce.cuh"
#include "cuda_internal.h"
#include "topk_select_testing.h"

namespace topksae::cuda {

namespace {
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2048;  // 11-bit digits
constexpr int kTopShift = 21;  // the first radix digit: key >> 21
// Smallest candidate capacity (32 KiB of dynamic shared memory, under the default 48 KiB limit):
// room for the k = 64 / AuxK k = 1152 cuts plus a well-filled threshold bin.
constexpr int kMinCandCap = 4096;
// The default dynamic limit is 48 KiB minus the static shared memory (histogram + a few words).
static_assert(kMinCandCap * sizeof(unsigned long long) + kBins * sizeof(int) + 1024 <= 48 * 1024,
              "k <= kMinCandCap must launch without raising the shared-memory limit");

// The one-read path's sample: rounds of kSampleChunks contiguous runs of kSampleChunkLen entries
// (coalesced loads), all rounds' runs spread evenly over the row. Rows shorter than kSampleMinN
// skip it: the sample would be half the row or more, and such rows are cheap to read twice anyway.
// One round (4096 keys) while the aimed-at rank r = ceil(E * S / n) (S sampled keys) stays >=
// kSampleMinRank; longer rows take more rounds (sample_rounds), at most 1/8 of the row: with one
// round r hits its floor of 1 at n = 4096 * E (2^20 latents for k = 64), and past ~2^22 the full-row
// count above the sample's largest key (~n / 4096 entries) overflows the capacity, so the one-read
// path missed on nearly every row and each row was read twice.
constexpr int kSampleChunks = 32;
constexpr int kSampleChunkLen = 128;
constexpr int kSample = kSampleChunks * kSampleChunkLen;  // 4096 per round
constexpr int64_t kSampleMinN = 8192;
constexpr int64_t kSampleMinRank = 4;
static_assert(kSampleMinN / kSampleChunks >= kSampleChunkLen, "the sample's chunks must not overlap");
static_assert(kSample % kThreads == 0, "each thread reads the same number of sample entries");
// The full-row candidate count the sample aims at: E = kTargetPerK * k, at most cap / 2, and the
// path is tried only when that leaves E >= 1.5 k (3k <= cap). The count must land in [k, cap]:
// the sample's estimate of the rank varies by ~1/sqrt(r) and the threshold bin (a quarter octave
// of values) adds the entries below the r-th sampled key, so E keeps a margin on both sides.
constexpr int kTargetPerK = 4;
// Independent loads in flight per thread per round of a collection pass: float4 and scalar.
constexpr int kIlpVec = 4;
constexpr int kIlpScalar = 8;

// The test-only path counters (topk_select_testing.h), per device, summed over the launches of
// the counting kernel instances: rows that took two reads, four reads, one read; rows whose
// one-read pass ran but missed (they also count as two or four reads); collection passes (one- or
// two-read) that used float4 loads.
enum PathCounter : int { kPathTwoReads, kPathFourReads, kPathOneRead, kPathOneReadMissed, kPathVecPasses, kPathCounters };
__device__ unsigned long long g_path_rows[kPathCounters];
// Whether topk_select launches the counting instances (set_topk_path_counting; off by default).
std::atomic<bool> g_count_paths{false};

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

// The key of entry j: 0 when masked out, else order_key(row[j] + bias[j]).
__device__ __forceinline__ uint32_t key_at(const float* __restrict__ row, const float* __restrict__ bias,
                                           const uint8_t* __restrict__ mask, int64_t j) {
  if (mask != nullptr && mask[j] == 0) return 0u;
  float f = row[j];
  if (bias != nullptr) f += bias[j];
  return order_key(f);
}

// The keys of entries [W*v, W*v + W): W = 1 (scalar) or 4 (one float4 of the row and of the bias,
// 4 mask bytes as one word; the caller checked n % 4 == 0 and the alignment). The same float adds
// as key_at, so the same keys.
template <int W>
__device__ __forceinline__ void load_keys(const float* __restrict__ row, const float* __restrict__ bias,
                                          const uint8_t* __restrict__ mask, int64_t v, uint32_t (&key)[W]) {
  if constexpr (W == 1) {
    key[0] = key_at(row, bias, mask, v);
  } else {
    static_assert(W == 4, "scalar or float4 loads");
    float4 x = reinterpret_cast<const float4*>(row)[v];
    if (bias != nullptr) {
      const float4 y = reinterpret_cast<const float4*>(bias)[v];
      x.x += y.x;
      x.y += y.y;
      x.z += y.z;
      x.w += y.w;
    }
    key[0] = order_key(x.x);
    key[1] = order_key(x.y);
    key[2] = order_key(x.z);
    key[3] = order_key(x.w);
    if (mask != nullptr) {
      // Little-endian on the GPU (and the host): byte e of the word is mask[4v + e].
      const uint32_t m = reinterpret_cast<const uint32_t*>(mask)[v];
#pragma unroll
      for (int e = 0; e < 4; ++e)
        if (((m >> (8 * e)) & 0xFFu) == 0u) key[e] = 0u;
    }
  }
}

// One collection pass: appends every entry with key >= tau (tau > 0, so masked-out entries never
// qualify) to cand[0, cap) and counts them in *fill: exactly when there are at most cap; else the
// count ends > cap (a warp that sees it pass cap stops reading: the caller then falls back and
// needs no more). Each thread issues U independent loads of W entries per round before using any;
// a warp then takes its slots with one shared atomicAdd (an inclusive scan of the lanes' counts
// places each lane), and skips that when no lane has a candidate. Candidate order does not matter:
// the caller sorts. Called by the whole block; no barrier inside, and the warp ops see whole warps
// (the round loop and the early exit are uniform over a warp).
template <int W, int U>
__device__ void collect_ge(const float* __restrict__ row, const float* __restrict__ bias,
                           const uint8_t* __restrict__ mask, int64_t n, uint32_t tau, unsigned long long* cand,
                           int cap, int* fill) {
  const int64_t nv = n / W;
  const int lane = threadIdx.x & 31;
  for (int64_t base = 0; base < nv; base += int64_t(U) * blockDim.x) {
    uint32_t key[U][W];
    int c = 0;
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t v = base + int64_t(u) * blockDim.x + threadIdx.x;
      if (v < nv) {
        load_keys<W>(row, bias, mask, v, key[u]);
      } else {
#pragma unroll
        for (int e = 0; e < W; ++e) key[u][e] = 0u;
      }
#pragma unroll
      for (int e = 0; e < W; ++e) c += key[u][e] >= tau ? 1 : 0;
    }
    if (!__any_sync(0xffffffffu, c > 0)) continue;
    const int incl = detail::warp_inclusive_scan(c);
    int start = 0;
    if (lane == 31) start = atomicAdd(fill, incl);  // incl of lane 31: the warp's total
    start = __shfl_sync(0xffffffffu, start, 31);
    if (start >= cap) break;  // over capacity already: nothing more to store (warp-uniform)
    int pos = start + incl - c;
#pragma unroll
    for (int u = 0; u < U; ++u) {
#pragma unroll
      for (int e = 0; e < W; ++e) {
        if (key[u][e] >= tau) {
          const int64_t j = (base + int64_t(u) * blockDim.x + threadIdx.x) * W + e;
          if (pos < cap) cand[pos] = pack(key[u][e], j);
          ++pos;
        }
      }
    }
  }
}

// Run by warp 0 (threads 0..31) over hist[0, nb), nb a multiple of 32: the digit t at which the
// count from the top reaches remain (count of digits > t < remain <= count of digits >= t; needs
// 1 <= remain <= the total). Writes t, remain minus the count above t, and the count of >= t.
__device__ void find_digit(const int* hist, int nb, int remain, int* s_digit, int* s_remain, int* s_count) {
  // Lane l owns `per` bins below nb - l*per: lane 0 holds the largest digits. Exactly one lane
  // brackets `remain` (the prefix sums grow with the lane and end at >= remain).
  const int lane = threadIdx.x;
  const int per = nb / 32;
  const int hi = nb - lane * per;
  int s = 0;
  for (int t = hi - per; t < hi; ++t) s += hist[t];
  const int incl = detail::warp_inclusive_scan(s);
  const int excl = incl - s;
  if (excl < remain && remain <= incl) {
    int acc = excl;
    for (int t = hi - 1; t >= hi - per; --t) {
      const int c = hist[t];
      if (acc + c >= remain) {
        *s_digit = t;
        *s_remain = remain - acc;
        *s_count = acc + c;
        break;
      }
      acc += c;
    }
  }
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

// The kernel's shared state besides the candidates (one struct, so the paths below take it whole).
struct TopKShared {
  int hist[kBins];
  int warp_sums[kWarps], warp_gt[kWarps];
  int digit, remain, count, fill, gt, eq_base, done;
};

// One row's input: the keys are order_key(row[j] + bias[j]), 0 where mask[j] == 0.
struct RowIn {
  const float* __restrict__ row;
  const float* __restrict__ bias;
  const uint8_t* __restrict__ mask;
  int64_t n;
  bool vec;  // float4 loads allowed (n % 4 == 0, aligned row / bias / mask)
};

// The test-only path counters (topk_select_testing.h): compiled into the kCount instances only.
template <bool kCount>
__device__ __forceinline__ void count_path(int which) {
  if constexpr (kCount) atomicAdd(&g_path_rows[which], 1ull);
}

// A collection pass of every key >= tau into cand; returns how many there are (all threads,
// after it). Called by the whole block.
template <bool kCount>
__device__ __forceinline__ int collect(const RowIn& r, uint32_t tau, unsigned long long* cand, int cap,
                                       TopKShared& sm) {
  if (r.vec)
    collect_ge<4, kIlpVec>(r.row, r.bias, r.mask, r.n, tau, cand, cap, &sm.fill);
  else
    collect_ge<1, kIlpScalar>(r.row, r.bias, r.mask, r.n, tau, cand, cap, &sm.fill);
  if (r.vec && threadIdx.x == 0) count_path<kCount>(kPathVecPasses);
  __syncthreads();
  const int count = sm.fill;
  __syncthreads();  // everyone has read fill before anyone resets it
  return count;
}

// Sample rounds for a row of n entries aiming at E candidates (see kSampleMinRank).
__host__ __device__ __forceinline__ int64_t sample_rounds(int64_t n, int64_t E) {
  const int64_t want = (kSampleMinRank * n + E * kSample - 1) / (E * kSample);
  const int64_t most = n / (8 * int64_t(kSample));
  return want < 1 ? 1 : (want < most ? want : (most < 1 ? 1 : most));
}

// ---- path 1, one read: a threshold from a sample, then one collection pass ---------------------
// Returns the candidate count when cand[0, count) holds the top k (k <= count <= cap), else -1
// (the sample missed, or it saw mostly masked keys): the radix passes run next.
template <bool kCount>
__device__ int one_read_path(const RowIn& r, int k, unsigned long long* cand, int cap, TopKShared& sm) {
  for (int i = threadIdx.x; i < kBins; i += blockDim.x) sm.hist[i] = 0;
  __syncthreads();
  const int64_t target = min(int64_t(kTargetPerK) * k, int64_t(cap / 2));
  const int64_t rounds = sample_rounds(r.n, target);  // uniform
  // The row's runs g = 0 .. 32 * rounds - 1 start at g * n / (32 * rounds). Round q takes the
  // runs g = c * rounds + q (c = 0..31); round 0's start at c * n / 32 whatever the rounds.
  const int64_t chunks = rounds * kSampleChunks;
  int zeros = 0;  // masked-out keys: one shared atomic per warp, not one each
  {
    uint32_t sk[kSample / kThreads];  // all loads first, then the atomics
#pragma unroll
    for (int m = 0; m < kSample / kThreads; ++m) {
      const int i = m * kThreads + int(threadIdx.x);
      const int64_t j = int64_t(i / kSampleChunkLen) * r.n / kSampleChunks + i % kSampleChunkLen;
      sk[m] = key_at(r.row, r.bias, r.mask, j);
    }
#pragma unroll
    for (int m = 0; m < kSample / kThreads; ++m) {
      if (sk[m] == 0u)
        ++zeros;
      else
        atomicAdd(&sm.hist[sk[m] >> kTopShift], 1);
    }
  }
  // Rounds 1.. (rows past ~2^18 entries at k = 64): one key at a time, so the loop adds no
  // registers to the kernel (8 loads in flight there took it from 40 to 59-64, ptxas sm_90).
#pragma unroll 1
  for (int64_t t = threadIdx.x; t < (rounds - 1) * kSample; t += kThreads) {
    const int64_t g = t / kSampleChunkLen;  // the (g / 32 + 1)-th round's run g % 32
    const int64_t run = (g % kSampleChunks) * rounds + g / kSampleChunks + 1;
    const uint32_t key = key_at(r.row, r.bias, r.mask, run * r.n / chunks + t % kSampleChunkLen);
    if (key == 0u)
      ++zeros;
    else
      atomicAdd(&sm.hist[key >> kTopShift], 1);
  }
  zeros = detail::warp_sum(zeros);
  if ((threadIdx.x & 31) == 0 && zeros > 0) atomicAdd(&sm.hist[0], zeros);
  __syncthreads();
  // 1 <= rank <= the sample: 4 <= target <= n. At most 2^31 / 8 keys are sampled, so rank fits an int.
  const int rank = int((target * rounds * kSample + r.n - 1) / r.n);
  if (threadIdx.x < 32) find_digit(sm.hist, kBins, rank, &sm.digit, &sm.remain, &sm.count);
  __syncthreads();
  const int d = sm.digit;  // uniform; digit is next written after more barriers
  // d == 0: fewer than rank sampled keys above the lowest bin (mostly masked rows): tau would take
  // the whole row, so go straight to the radix passes.
  if (d == 0) return -1;
  const int count = collect<kCount>(r, uint32_t(d) << kTopShift, cand, cap, sm);
  if (k <= count && count <= cap) {  // uniform: count came from shared memory
    if (threadIdx.x == 0) count_path<kCount>(kPathOneRead);
    return count;
  }
  if (threadIdx.x == 0) {
    sm.fill = 0;  // the radix passes' barriers order this before the next collection
    count_path<kCount>(kPathOneReadMissed);
  }
  return -1;
}

// ---- the radix selection of the k-th key ---------------------------------------------------------
// Up to three histogram passes (11 + 11 + 10 bits) pin the k-th largest key T (*prefix) and how
// many keys equal to T make the cut (*remain, the lowest-index ones). With stop_at_cap (the
// two-read path), returns after the first pass when the top-digit bin and above hold <= cap keys:
// that count (then *prefix = the bin's lowest key); else -1.
__device__ int radix_select(const RowIn& r, int k, int cap, bool stop_at_cap, TopKShared& sm, uint32_t* prefix_out,
                            int* remain_out) {
  uint32_t prefix = 0, pmask = 0;
  int remain = k;  // rank of T among the entries still matching the prefix, counted from the top
  int result = -1;
#pragma unroll 1
  for (int pass = 0; pass < 3; ++pass) {
    const int sh = pass == 0 ? kTopShift : (pass == 1 ? 10 : 0);
    const int nbits = pass == 2 ? 10 : 11;
    const uint32_t dm = (1u << nbits) - 1u;
    for (int i = threadIdx.x; i < kBins; i += blockDim.x) sm.hist[i] = 0;
    __syncthreads();
    // Key 0 (masked out; AuxK masks ~95% of a row) has digit 0 in every pass: counted in a
    // register and added once per warp, instead of thousands of atomics on one shared word.
    int zeros = 0;
    if (pass == 0 && r.vec) {
      // Every entry matches the empty prefix: float4 loads, 4 keys at a time.
      for (int64_t v = threadIdx.x; v < r.n / 4; v += blockDim.x) {
        uint32_t key[4];
        load_keys<4>(r.row, r.bias, r.mask, v, key);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (key[e] == 0u)
            ++zeros;
          else
            atomicAdd(&sm.hist[key[e] >> kTopShift], 1);
        }
      }
    } else {
      for (int64_t j = threadIdx.x; j < r.n; j += blockDim.x) {
        const uint32_t key = key_at(r.row, r.bias, r.mask, j);
        if ((key & pmask) == prefix) {
          if (key == 0u)
            ++zeros;
          else
            atomicAdd(&sm.hist[(key >> sh) & dm], 1);
        }
      }
    }
    zeros = detail::warp_sum(zeros);
    if ((threadIdx.x & 31) == 0 && zeros > 0) atomicAdd(&sm.hist[0], zeros);
    __syncthreads();
    if (threadIdx.x < 32) find_digit(sm.hist, int(dm) + 1, remain, &sm.digit, &sm.remain, &sm.count);
    __syncthreads();
    prefix |= uint32_t(sm.digit) << sh;
    pmask |= dm << sh;
    remain = sm.remain;
    const int count = sm.count;  // entries (matching the prefix) whose digit is >= digit
    __syncthreads();             // everyone has read sm.*, which the next pass may overwrite
    // Uniform: pass and count (read from shared memory between two barriers) are the same in
    // every thread. In the first pass every entry matches the (empty) prefix, so count is the
    // number of keys >= prefix = t << 21 (t: the top digit of the k-th largest key), and >= k.
    if (stop_at_cap && pass == 0 && count <= cap) {
      result = count;
      break;
    }
  }
  *prefix_out = prefix;
  *remain_out = remain;
  return result;
}

// ---- path 2, two reads: every entry with key >= prefix (the top-digit bin and above) -----------
template <bool kCount>
__device__ void two_read_collect(const RowIn& r, uint32_t prefix, unsigned long long* cand, int cap, TopKShared& sm) {
  if (prefix > 0) {
    collect<kCount>(r, prefix, cand, cap, sm);
  } else {
    // The threshold digit is 0 (possible only when n <= cap, e.g. fewer than k unmasked entries):
    // every entry is a candidate, masked-out ones (key 0) included. collect_ge needs tau > 0, as
    // it pads the tail of its last round with key 0.
    for (int64_t j = threadIdx.x; j < r.n; j += blockDim.x) cand[j] = pack(key_at(r.row, r.bias, r.mask, j), j);
  }
  if (threadIdx.x == 0) count_path<kCount>(kPathTwoReads);
}

// ---- path 3, four reads (after the three radix passes): the k winners, once T is pinned ---------
// One ordered pass over the row takes every key > T and the need_eq lowest-index keys == T. The
// == T keys are ranked by per-warp ballots and the running total of earlier rounds. Then:
//  - kDirect false (the sorted kernel): > T keys go to cand[0, n_gt) in any order (an atomic
//    slot; the sort orders them), == T ones to cand[n_gt + rank]; the caller sorts cand[0, k).
//  - kDirect true (the unsorted kernel): every winner goes straight to the output in index order;
//    its slot is the number of winners before it, so the > T keys are ranked by ballots too.
// Two instances of one loop, not one kernel with a runtime flag: the direct ranking's extra
// block-wide counts would take the sorted kernel from 40 to 61 registers (ptxas, sm_90), i.e.
// 3 -> 2 blocks of 512 threads per SM, which the one-read path (the common one) would pay for.
// Called by the whole block.
template <bool kDirect>
__device__ void threshold_pass(const RowIn& r, uint32_t T, int need_eq, int k, int relu, TopKShared& sm,
                               unsigned long long* cand, int32_t* __restrict__ out_idx, float* __restrict__ out_val) {
  const int n_gt = k - need_eq;  // entries strictly above T (all make the cut)
  if (threadIdx.x == 0) {
    sm.gt = 0;
    sm.eq_base = 0;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned below = (1u << lane) - 1u;
  for (int64_t base = 0; base < r.n; base += blockDim.x) {
    const int64_t j = base + threadIdx.x;
    const bool in = j < r.n;
    const uint32_t key = in ? key_at(r.row, r.bias, r.mask, j) : 0u;
    const bool gt = in && key > T;
    const bool eq = in && key == T;
    const unsigned beq = __ballot_sync(0xffffffffu, eq);
    unsigned bgt = 0;
    if constexpr (kDirect) {
      bgt = __ballot_sync(0xffffffffu, gt);
      if (lane == 0) sm.warp_gt[warp] = __popc(bgt);
    } else {
      if (gt) cand[atomicAdd(&sm.gt, 1)] = pack(key, j);
    }
    if (lane == 0) sm.warp_sums[warp] = __popc(beq);
    __syncthreads();
    int eq_before = sm.eq_base + __popc(beq & below);
    int gt_before = 0;
    if constexpr (kDirect) gt_before = sm.gt + __popc(bgt & below);
    for (int w = 0; w < warp; ++w) {
      eq_before += sm.warp_sums[w];
      if constexpr (kDirect) gt_before += sm.warp_gt[w];
    }
    if constexpr (kDirect) {
      if (gt || (eq && eq_before < need_eq)) {
        const int slot = gt_before + min(eq_before, need_eq);
        float v = r.row[j];
        if (r.bias != nullptr) v += r.bias[j];
        if (relu) v = (v < 0.f) ? 0.f : v;
        out_idx[slot] = int32_t(j);
        out_val[slot] = v;
      }
    } else {
      if (eq && eq_before < need_eq) cand[n_gt + eq_before] = pack(key, j);
    }
    __syncthreads();  // every thread has read gt, eq_base and the warp counts
    // Thread 0 decides for the block: the sorted kernel's gt is final for this round here (its
    // atomics happened before the barrier above), whereas reading it after the next barrier would
    // race with the next round's atomicAdds of threads that already went on (a non-uniform break,
    // a deadlock).
    if (threadIdx.x == 0) {
      for (int w = 0; w < kWarps; ++w) {
        sm.eq_base += sm.warp_sums[w];
        if constexpr (kDirect) sm.gt += sm.warp_gt[w];
      }
      if constexpr (kDirect)
        sm.done = sm.gt + min(sm.eq_base, need_eq) >= k ? 1 : 0;
      else
        sm.done = (sm.eq_base >= need_eq && sm.gt >= n_gt) ? 1 : 0;
    }
    __syncthreads();
    if (sm.done) break;  // uniform: all k winners placed
  }
}

// ---- the end of the sorted paths: sort the candidates, write the first k -------------------------
// cand[0, n_cand) holds the top k (and maybe more); padded with 0 (which sorts last) to a power
// of two and sorted descending.
__device__ void sort_and_write(const RowIn& r, unsigned long long* cand, int n_cand, int k, int relu,
                               int32_t* __restrict__ out_idx, float* __restrict__ out_val) {
  int sn = 1;
  while (sn < n_cand) sn <<= 1;  // n_cand <= cap, a power of two, so sn <= cap
  for (int i = n_cand + threadIdx.x; i < sn; i += blockDim.x) cand[i] = 0ull;
  __syncthreads();
  bitonic_sort_desc(cand, sn);  // n_cand >= k, so the first k are real candidates
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    const int64_t j = int64_t(0xFFFFFFFFu - uint32_t(cand[i] & 0xFFFFFFFFull));
    float v = r.row[j];
    if (r.bias != nullptr) v += r.bias[j];
    if (relu) v = (v < 0.f) ? 0.f : v;  // == std::max(v, 0.f): NaN stays NaN
    out_idx[i] = int32_t(j);
    out_val[i] = v;
  }
}

// Launched with blockDim.x == kThreads (warp_sums and the sample's per-thread count assume it).
// kSorted false: TopKOptions::sorted = false. Template arguments, not kernel arguments, so that
// the sorted kernel carries none of the unsorted code and the production kernels none of the
// test counters (kCount): registers decide how many blocks fit an SM.
template <bool kSorted, bool kCount>
__global__ void __launch_bounds__(kThreads) topk_kernel(const float* __restrict__ h, const float* __restrict__ bias,
                                                        const uint8_t* __restrict__ mask,
                                                        const int32_t* __restrict__ k_dev, int64_t n, int k_cap,
                                                        int cap, int relu, int32_t* __restrict__ out_idx,
                                                        float* __restrict__ out_val) {
  extern __shared__ unsigned long long cand[];  // [cap], cap a power of two >= sort_n
  __shared__ TopKShared sm;

  const int64_t b = blockIdx.x;
  int k = k_cap;
  if (k_dev != nullptr) k = min(*k_dev, k_cap);
  if (k <= 0) return;  // uniform over the block
  RowIn r{h + b * n, bias, mask, n, false};
  // float4 loads need n % 4 == 0 (each row then starts 16-byte aligned when h does) and aligned
  // bias / mask; uniform over the block.
  r.vec = n % 4 == 0 && reinterpret_cast<uintptr_t>(r.row) % 16 == 0 && reinterpret_cast<uintptr_t>(bias) % 16 == 0 &&
          reinterpret_cast<uintptr_t>(mask) % 4 == 0;
  out_idx += b * k_cap;
  out_val += b * k_cap;
  // Fill counter of the collection passes; first used after barriers on every path.
  if (threadIdx.x == 0) sm.fill = 0;

  if constexpr (!kSorted) {
    // The three radix passes pin T, then the k winners go straight to the output in index order
    // (counted as four reads): no candidates, no sort.
    uint32_t T;
    int need_eq;
    radix_select(r, k, cap, false, sm, &T, &need_eq);
    if (threadIdx.x == 0) count_path<kCount>(kPathFourReads);
    threshold_pass<true>(r, T, need_eq, k, relu, sm, cand, out_idx, out_val);
    return;
  } else {
    int n_cand = -1;  // >= 0: cand[0, n_cand) holds the top k (and maybe more)
    if (n >= kSampleMinN && 3 * k <= cap) n_cand = one_read_path<kCount>(r, k, cand, cap, sm);
    if (n_cand < 0) {
      uint32_t T;
      int need_eq;
      n_cand = radix_select(r, k, cap, true, sm, &T, &need_eq);
      if (n_cand >= 0) {
        two_read_collect<kCount>(r, T, cand, cap, sm);
      } else {
        if (threadIdx.x == 0) count_path<kCount>(kPathFourReads);
        threshold_pass<false>(r, T, need_eq, k, relu, sm, cand, out_idx, out_val);
        n_cand = k;  // exactly the k winners, in cand[0, k)
      }
    }
    sort_and_write(r, cand, n_cand, k, relu, out_idx, out_val);
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
  // Candidate capacity: a power of two >= sort_n (the four-read path sorts its k winners there).
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
      for (auto* kernel : {topk_kernel<true, false>, topk_kernel<false, false>, topk_kernel<true, true>,
                           topk_kernel<false, true>})
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(kMaxTopK * sizeof(unsigned long long))));
      if (dev < kMaxDevices) attr_set[dev].store(true, std::memory_order_release);
    }
  }
  const cudaStream_t st = detail::stream(ctx);
  const int relu = opt.relu ? 1 : 0;
  const bool count = g_count_paths.load(std::memory_order_relaxed);
  auto* kernel = opt.sorted ? (count ? topk_kernel<true, true> : topk_kernel<true, false>)
                            : (count ? topk_kernel<false, true> : topk_kernel<false, false>);
  kernel<<<unsigned(B), kThreads, smem, st>>>(h, opt.bias, opt.mask, opt.k_dev, n, int(k), cap, relu, idx, val);
  CUDA_CHECK_LAUNCH();
}

namespace detail {
void set_topk_path_counting(bool on) { g_count_paths.store(on, std::memory_order_relaxed); }

TopKPathRows take_topk_path_rows() {
  unsigned long long c[kPathCounters] = {};
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaMemcpyFromSymbol(c, g_path_rows, sizeof(c)));
  const unsigned long long zero[kPathCounters] = {};
  CUDA_CHECK(cudaMemcpyToSymbol(g_path_rows, zero, sizeof(zero)));
  TopKPathRows r;
  r.two_reads = int64_t(c[kPathTwoReads]);
  r.four_reads = int64_t(c[kPathFourReads]);
  r.one_read = int64_t(c[kPathOneRead]);
  r.one_read_missed = int64_t(c[kPathOneReadMissed]);
  r.vec_passes = int64_t(c[kPathVecPasses]);
  return r;
}
}  // namespace detail

}  // namespace topksae::cuda
