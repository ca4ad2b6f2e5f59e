// The precision of the GPU's encoder GEMM and the library that runs it, and their names (fp32,
// tf32, bf16; cublas, lt, auto) as the command line, ModelOptions::cuda_precision and the benches
// spell them. Host-only and built in every build (with
// or without the CUDA backend), so a name can be checked where no GPU code exists.
#pragma once
#include <cstdint>
#include <string_view>

namespace topksae::cuda {

// Exact fp32, tf32 tensor cores (fp32 in and out), or bf16 operands (a bf16 copy of W_enc,
// refreshed after each optimiser step) with fp32 accumulation and output.
enum class Precision : uint8_t { fp32, tf32, bf16 };
std::string_view precision_name(Precision p);
Precision precision_from_name(std::string_view name);  // "fp32" | "tf32" | "bf16"; throws Error naming the bad value

// Which library runs the encoder GEMM (h = u @ W_enc), kernels/gemm_lt.h: cublas (cublasGemmEx,
// the default until a GPU run measures the others), lt (cublasLt: its heuristic's candidates
// timed once per shape, precision and device in the process, the fastest kept) or automatic (the
// faster of the two, timed the same way). The results agree to the precision's rounding.
enum class EncoderGemm : uint8_t { cublas, lt, automatic };
std::string_view encoder_gemm_name(EncoderGemm g);        // "cublas" | "lt" | "auto"
EncoderGemm encoder_gemm_from_name(std::string_view name);  // throws Error naming the bad value

}  // namespace topksae::cuda
