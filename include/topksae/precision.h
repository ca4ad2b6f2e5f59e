// The precision of the GPU's encoder GEMM, and its names (fp32, tf32, bf16) as the command line,
// ModelOptions::cuda_precision and the benches spell them. Host-only and built in every build (with
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

}  // namespace topksae::cuda
