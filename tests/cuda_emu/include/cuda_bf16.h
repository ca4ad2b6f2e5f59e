// CUDA emulation (tests/cuda_emu/README.md): the bfloat16 type and the conversions the kernels use,
// with the GPU's rounding (round to nearest, ties to even; NaN stays NaN).
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  unsigned short __x;
};

inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  __nv_bfloat16 r;
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep it a (quiet) NaN
    r.__x = static_cast<unsigned short>((u >> 16) | 0x40u);
    return r;
  }
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  r.__x = static_cast<unsigned short>((u + rounding) >> 16);
  return r;
}
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = uint32_t(b.__x) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
