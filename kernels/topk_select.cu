// CUDA twin of topk_select: one block per row, a radix selection of the k-th largest key in three
// histogram passes (11 + 11 + 10 bits of an order-preserving uint32 key), one ordered collection
// pass (ties at the threshold go to the lowest indices), then a bitonic sort of the k winners
// only. Never sorts the row. Works for any n < 2^31 and k <= kMaxTopK; the bias add (encoder
// b_enc) and AuxK's dead-latent mask are fused into the key computation.
#include <atomic>
#include <cstdint>

#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 2048;  // 11-bit digits

// Order-preserving map float -> uint32 (larger float, larger key). NaN ranks as -inf and -0 as +0,
// as in the CPU twin (which compares floats). Key 0 is reserved for masked-out entries.
__device__ __forceinline__ uint32_t order_key(float f) {
  if (f != f) f = -INFINITY;
  if (f == 0.f) f = 0.f;
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Sort key of a candidate: larger value first, then lower index first, as one descending uint64.
__device__ __forceinline__ unsigned long long pack(uint32_t key, int64_t j) {
  return (static_cast<unsigned long long>(key) << 32) | static_cast<unsigned long long>(0xFFFFFFFFu - uint32_t(j));
}

__global__ void __launch_bounds__(kThreads) topk_kernel(const float* __restrict__ h, const float* __restrict__ bias,
                                                        const uint8_t* __restrict__ mask,
                                                        const int32_t* __restrict__ k_dev, int64_t n, int k_cap,
                                                        int sort_n, int relu, int32_t* __restrict__ out_idx,
                                                        float* __restrict__ out_val) {
  extern __shared__ unsigned long long cand[];  // [sort_n]
  __shared__ int hist[kBins];
  __shared__ int warp_sums[kWarps];
  __shared__ int s_digit, s_remain, s_gt, s_eq_base, s_done;

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

  // ---- radix selection of the threshold key T, and how many entries equal to T to take --------
  uint32_t prefix = 0, pmask = 0;
  int remain = k;  // rank of T among the entries still matching the prefix, counted from the top
#pragma unroll 1
  for (int pass = 0; pass < 3; ++pass) {
    const int sh = pass == 0 ? 21 : (pass == 1 ? 10 : 0);
    const int nbits = pass == 2 ? 10 : 11;
    const uint32_t dm = (1u << nbits) - 1u;
    for (int i = threadIdx.x; i < kBins; i += blockDim.x) hist[i] = 0;
    __syncthreads();
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const uint32_t key = key_at(j);
      if ((key & pmask) == prefix) atomicAdd(&hist[(key >> sh) & dm], 1);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l owns `per` bins below nb - l*per: lane 0 holds the largest digits.
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
    __syncthreads();
  }
  const uint32_t T = prefix;
  const int need_eq = remain;    // entries equal to T that make the cut (the lowest indices)
  const int n_gt = k - remain;   // entries strictly above T (all make the cut)

  // ---- collection: > T anywhere (order fixed by the sort), == T in index order ----------------
  if (threadIdx.x == 0) {
    s_gt = 0;
    s_eq_base = 0;
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

  // ---- bitonic sort of the k winners (padded with 0, which sorts last), descending ------------
  for (int i = k + threadIdx.x; i < sort_n; i += blockDim.x) cand[i] = 0ull;
  __syncthreads();
  for (int size = 2; size <= sort_n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < sort_n; i += blockDim.x) {
        const int p = i ^ stride;
        if (p > i) {
          const unsigned long long a = cand[i], c = cand[p];
          const bool desc = (i & size) == 0;
          if (desc ? (a < c) : (a > c)) {
            cand[i] = c;
            cand[p] = a;
          }
        }
      }
      __syncthreads();
    }
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
  const size_t smem = size_t(sort_n) * sizeof(unsigned long long);
  // Above the default 48 KiB, the kernel's dynamic shared-memory limit must be raised, once per
  // device (the attribute belongs to the device's context, so a second GPU needs its own call).
  // Atomic flags: several threads may make their first call at once; setting it twice is harmless.
  if (smem > 48 * 1024) {
    constexpr int kMaxDevices = 64;
    static std::atomic<bool> attr_set[kMaxDevices];
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    if (dev >= kMaxDevices || !attr_set[dev].load(std::memory_order_acquire)) {
      CUDA_CHECK(cudaFuncSetAttribute(topk_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      int(kMaxTopK * sizeof(unsigned long long))));
      if (dev < kMaxDevices) attr_set[dev].store(true, std::memory_order_release);
    }
  }
  topk_kernel<<<unsigned(B), kThreads, smem, detail::stream(ctx)>>>(h, opt.bias, opt.mask, opt.k_dev, n, int(k),
                                                                     sort_n, opt.relu ? 1 : 0, idx, val);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda
