#include "topksae/dtype.h"

#include <cmath>
#include <cstring>

#include "topksae/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define TOPKSAE_X86_F16C 1
#endif

namespace topksae {

namespace {
struct DTypeInfo {
  DType type;
  size_t size;
  std::string_view name, safetensors, torch;
};
constexpr DTypeInfo kInfo[] = {
    {DType::f32, 4, "f32", "F32", "float32"},     {DType::f16, 2, "f16", "F16", "float16"},
    {DType::bf16, 2, "bf16", "BF16", "bfloat16"}, {DType::f64, 8, "f64", "F64", "float64"},
    {DType::i32, 4, "i32", "I32", "int32"},       {DType::i64, 8, "i64", "I64", "int64"},
    {DType::u8, 1, "u8", "U8", "uint8"},          {DType::boolean, 1, "bool", "BOOL", "bool"},
};
const DTypeInfo& info(DType t) { return kInfo[static_cast<int>(t)]; }
}  // namespace

size_t itemsize(DType t) { return info(t).size; }
std::string_view dtype_name(DType t) { return info(t).name; }
std::string_view safetensors_dtype_name(DType t) { return info(t).safetensors; }
std::string_view torch_dtype_name(DType t) { return info(t).torch; }

DType dtype_from_safetensors(std::string_view name) {
  for (const auto& i : kInfo)
    if (i.safetensors == name) return i.type;
  TOPKSAE_FAIL("unknown safetensors dtype '", name, "' (known: F32, F16, BF16, F64, I32, I64, U8, BOOL)");
}

DType dtype_from_torch_name(std::string_view name) {
  if (name == "float32" || name == "torch.float32") return DType::f32;
  if (name == "float16" || name == "torch.float16") return DType::f16;
  if (name == "bfloat16" || name == "torch.bfloat16") return DType::bf16;
  TOPKSAE_FAIL("unsupported SAE dtype '", name, "' (expected float32, float16 or bfloat16)");
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal half: value = man * 2^-24
      float f = std::ldexp(float(man), -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return sign | 0x7e00u;  // NaN
  if (absu >= 0x477ff000u) return sign | 0x7c00u;  // overflow (>= 65520 rounds to inf) or inf
  if (absu < 0x38800000u) {                          // below the smallest normal half: subnormal
    float a;
    std::memcpy(&a, &absu, 4);
    // nearbyint rounds half to even in the default rounding mode.
    return sign | uint16_t(std::nearbyint(a * 16777216.0f));  // a / 2^-24
  }
  // normal: rebias exponent, round mantissa to 10 bits, nearest even
  uint32_t v = absu - (112u << 23);
  v += 0xfffu + ((v >> 13) & 1u);
  return sign | uint16_t(v >> 13);
}

namespace {
#ifdef TOPKSAE_X86_F16C
// float16 -> float32 eight at a time with the F16C instruction (every x86-64 CPU since 2012): the
// training data path widens whole float16 rows, and the scalar loop runs at a fraction of memory
// speed. The conversion is exact, as f16_to_f32 (NaNs stay NaN; a signalling NaN comes out quiet).
__attribute__((target("avx,f16c"))) void f16_rows_to_f32(const uint16_t* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  for (; i < n; ++i) d[i] = f16_to_f32(s[i]);
}
// F16C from CPUID leaf 1 (clang 14's __builtin_cpu_supports does not know "f16c"); "avx" also
// checks that the OS saves the AVX registers.
bool have_f16c() {
  static const bool yes = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
  }();
  return yes;
}
#endif
}  // namespace

void convert_to_f32(DType from, const void* src, float* dst, size_t n) {
  switch (from) {
    case DType::f32: std::memcpy(dst, src, n * 4); return;
    case DType::f16: {
      const auto* s = static_cast<const uint16_t*>(src);
#ifdef TOPKSAE_X86_F16C
      if (have_f16c()) {
        f16_rows_to_f32(s, dst, n);
        return;
      }
#endif
      for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::bf16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::f64: {
      const auto* s = static_cast<const double*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]);
      return;
    }
    default: TOPKSAE_FAIL("cannot convert ", dtype_name(from), " to f32");
  }
}

void convert_from_f32(DType to, const float* src, void* dst, size_t n) {
  switch (to) {
    case DType::f32: std::memcpy(dst, src, n * 4); return;
    case DType::f16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::bf16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::f64: {
      auto* d = static_cast<double*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = double(src[i]);
      return;
    }
    default: TOPKSAE_FAIL("cannot convert f32 to ", dtype_name(to));
  }
}

}  // namespace topksae
