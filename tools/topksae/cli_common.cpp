// Shared subcommand helpers (cli_common.h).
#include "cli_common.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <vector>

#include "topksae/error.h"
#include "topksae/precision.h"

namespace topksae::cli {

Device resolve_device(const std::string& flag, bool cuda_backend, const std::string& what) {
  if (flag == "cpu") return Device::cpu;
  const std::string reason = cuda_unavailable_reason();
  if (flag == "cuda") {
    TOPKSAE_CHECK(reason.empty(), "--device cuda: ", reason);
    TOPKSAE_CHECK(cuda_backend, "--device cuda: the topksae command does not run ", what,
                  " on the GPU yet (only the CPU path is wired in); run with --device cpu (or auto)");
    return Device::cuda;
  }
  TOPKSAE_CHECK(flag == "auto", "--device must be auto, cpu or cuda, got '", flag, "'");
  if (reason.empty() && cuda_backend) return Device::cuda;
  if (reason.empty()) std::cerr << "note: a GPU is available but " << what << " runs on the CPU in this build\n";
  return Device::cpu;
}

void add_device_option(CLI::App* cmd, std::string* flag) {
  cmd->add_option("--device", *flag, "auto (a GPU when there is one and the command supports it), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))
      ->capture_default_str();
}

void add_precision_option(CLI::App* cmd, std::string* precision) {
  cmd->add_option("--precision", *precision,
                  "GPU encoder GEMM: fp32 (matches the CPU), tf32 or bf16 (faster, looser: a latent whose "
                  "pre-activation nearly ties may differ); the CPU always runs fp32")
      ->check(
          [](const std::string& v) {
            try {
              (void)cuda::precision_from_name(v);
              return std::string();
            } catch (const Error& e) {
              return std::string(e.what());
            }
          },
          "fp32, tf32 or bf16")
      ->capture_default_str();
}

ModelOptions model_options(const std::string& device_flag, const std::string& precision, const std::string& what) {
  ModelOptions o;
  o.device = resolve_device(device_flag, true, what);
  TOPKSAE_CHECK(o.device == Device::cuda || precision == "fp32" || device_flag == "auto", "--precision ", precision,
                " applies to the GPU's encoder GEMM; --device cpu computes in fp32");
  if (o.device == Device::cpu && precision != "fp32")
    std::cerr << "note: no GPU here (" << cuda_unavailable_reason() << "); " << what << " runs on the CPU in fp32, "
              << "--precision " << precision << " ignored\n";
  if (o.device == Device::cuda) o.cuda_precision = precision;
  return o;
}

void check_d_in(const Sae& sae, int64_t d_in, const std::string& data_name) {
  TOPKSAE_CHECK(d_in == sae.cfg.d_in, data_name, " has rows of d_in ", d_in, " but the SAE expects d_in ", sae.cfg.d_in);
}

int64_t for_each_batch(ActivationSource& src, int64_t batch, int64_t max_rows,
                       const std::function<void(const float*, int64_t)>& fn) {
  std::vector<float> buf(static_cast<size_t>(batch * src.d_in()));  // [batch, d_in]
  int64_t seen = 0;
  for (;;) {
    int64_t want = max_rows < 0 ? batch : std::min(batch, max_rows - seen);
    if (want <= 0) break;
    int64_t n = src.next(buf.data(), want);
    if (n == 0) break;
    fn(buf.data(), n);
    seen += n;
    if (n < want) break;
  }
  return seen;
}

bool stdout_is_tty() {
  const char* term = std::getenv("TERM");
  return ::isatty(STDOUT_FILENO) && !(term && std::strcmp(term, "dumb") == 0);
}

}  // namespace topksae::cli
