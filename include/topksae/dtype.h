// Element types a tensor or file can hold, and host conversions between the 16-bit floats and f32.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace topksae {

enum class DType : uint8_t { f32, f16, bf16, f64, i32, i64, u8, boolean };

// Bytes per element.
size_t itemsize(DType t);
// Our short name: "f32", "bf16", ... (used in messages and `topksae info`).
std::string_view dtype_name(DType t);
// safetensors names ("F32", "BF16", "BOOL", ...) and back; parse throws Error on an unknown name.
std::string_view safetensors_dtype_name(DType t);
DType dtype_from_safetensors(std::string_view name);
// sae_lens cfg.json names ("float32", "float16", "bfloat16"); parse throws Error on others.
std::string_view torch_dtype_name(DType t);
DType dtype_from_torch_name(std::string_view name);

// IEEE half <-> float, round to nearest even.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
// bfloat16 <-> float; f32_to_bf16 rounds to nearest even (as torch does); NaN stays NaN.
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Converts n elements of type `from` at src to float (f32, f16, bf16, f64 only).
void convert_to_f32(DType from, const void* src, float* dst, size_t n);
// Converts n floats to type `to` (f32, f16, bf16, f64 only).
void convert_from_f32(DType to, const float* src, void* dst, size_t n);

}  // namespace topksae
