// A counter-based random stream shared by CPU twins and their CUDA twins: value i of a stream is a
// pure function of (seed, i), so any thread can compute any element and both twins draw the same
// numbers. splitmix64's finaliser over seed-salted counters; [0, 1) by the top 53 bits.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define TOPKSAE_HOST_DEVICE __host__ __device__
#else
#define TOPKSAE_HOST_DEVICE
#endif

namespace topksae::detail {

// splitmix64's output function (a bijection of 64-bit words with full avalanche).
TOPKSAE_HOST_DEVICE inline uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Element i of the stream `seed`: the (i+1)-th splitmix64 output from a state hashed from seed.
TOPKSAE_HOST_DEVICE inline uint64_t counter_u64(uint64_t seed, uint64_t i) {
  const uint64_t state = splitmix64_mix(seed ^ 0x510e527fade682d1ull);
  return splitmix64_mix(state + (i + 1) * 0x9e3779b97f4a7c15ull);
}

// Element i as a double in [0, 1), exactly representable (53 bits).
TOPKSAE_HOST_DEVICE inline double counter_u01(uint64_t seed, uint64_t i) {
  return double(counter_u64(seed, i) >> 11) * 0x1.0p-53;
}

}  // namespace topksae::detail
