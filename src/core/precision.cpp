// The names of the GPU encoder GEMM's precisions (include/topksae/precision.h), in every build.
#include "topksae/precision.h"

#include "topksae/error.h"

namespace topksae::cuda {

std::string_view precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

Precision precision_from_name(std::string_view name) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16})
    if (precision_name(p) == name) return p;
  TOPKSAE_FAIL("unknown precision '", name, "' (expected fp32, tf32 or bf16)");
}

std::string_view encoder_gemm_name(EncoderGemm g) {
  switch (g) {
    case EncoderGemm::cublas: return "cublas";
    case EncoderGemm::lt: return "lt";
    case EncoderGemm::automatic: return "auto";
  }
  return "?";
}

EncoderGemm encoder_gemm_from_name(std::string_view name) {
  for (EncoderGemm g : {EncoderGemm::cublas, EncoderGemm::lt, EncoderGemm::automatic})
    if (encoder_gemm_name(g) == name) return g;
  TOPKSAE_FAIL("unknown encoder GEMM '", name, "' (expected cublas, lt or auto)");
}

}  // namespace topksae::cuda
