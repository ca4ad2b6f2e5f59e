// Pieces the subcommands share: --device resolution, opening --input data, and the SAE/data
// compatibility checks, so every command refuses bad input with the same words.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "topksae/api.h"
#include "topksae/device.h"
#include "topksae/file_source.h"
#include "topksae/sae.h"

namespace topksae::cli {

// --device auto|cpu|cuda. `cuda_backend` says whether this command has a CUDA implementation yet.
// auto: cuda when a GPU is usable AND the command has a CUDA implementation, else cpu (with a note
// on stderr when a GPU is there but unused). cuda: Error with the reason when it cannot run.
Device resolve_device(const std::string& flag, bool cuda_backend, const std::string& what);
void add_device_option(CLI::App* cmd, std::string* flag);

// --precision fp32|tf32|bf16: the GPU's encoder GEMM (ModelOptions::cuda_precision).
void add_precision_option(CLI::App* cmd, std::string* precision);
// --device and --precision of a command that runs on the inference API (encode, decode, eval):
// the ModelOptions to load its SAE with. tf32 / bf16 with --device cpu is an Error (the CPU computes
// in fp32); with auto on a machine without a GPU it is ignored with a note on stderr.
ModelOptions model_options(const std::string& device_flag, const std::string& precision, const std::string& what);

// Checks that data of width d_in fits the SAE (Error naming both when not).
void check_d_in(const Sae& sae, int64_t d_in, const std::string& data_name);

// Streams `src` in chunks of `batch` rows (at most max_rows in all; -1: everything), calling
// fn(rows, n) for each. Returns the number of rows seen.
int64_t for_each_batch(ActivationSource& src, int64_t batch, int64_t max_rows,
                       const std::function<void(const float* rows, int64_t n)>& fn);

// True when stdout is a terminal (progress bars) and TERM is not "dumb".
bool stdout_is_tty();

}  // namespace topksae::cli
