// CUDA twin of cpu::init_params_counter (src/cpu/init_params.cpp; MATH.md, Initialisation): W_dec
// element (j, i) from the counter-based stream of src/core/counter_rng.h, mapped to
// U(-sqrt(6/d_in), sqrt(6/d_in)), each row scaled to decoder_init_norm, W_enc = W_dec^T.
// One block per row: the row's sum of squares in double (block_sum_to_all), then the row drawn
// again (cheaper than keeping d_in doubles per block) and written to W_dec (coalesced) and to
// W_enc's column j (strided: a write per 32-byte sector, about 8x the bytes of a transposed
// write, paid once per run: tens of milliseconds at 4096 x 2^20 on an H200).
#include <cmath>

#include "core/counter_rng.h"
#include "common/reduce.cuh"
#include "cuda_internal.h"
#include "topksae/error.h"
#include "topksae/train_cuda.h"

namespace topksae::cuda {

namespace {
constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    init_params_counter_kernel(float* __restrict__ W_enc, float* __restrict__ W_dec, int64_t d, int64_t n,
                               uint64_t seed, double bound, double norm /* <= 0: none */) {
  const int64_t j = blockIdx.x;
  const uint64_t base = uint64_t(j * d);
  double s = 0;
  for (int64_t i = threadIdx.x; i < d; i += kThreads) {
    const double x = bound * (2.0 * topksae::detail::counter_u01(seed, base + uint64_t(i)) - 1.0);
    s += x * x;
  }
  s = detail::block_sum_to_all(s);
  const double f = norm > 0 ? norm / sqrt(s) : 1.0;
  for (int64_t i = threadIdx.x; i < d; i += kThreads) {
    const double x = bound * (2.0 * topksae::detail::counter_u01(seed, base + uint64_t(i)) - 1.0);
    const float v = float(x * f);
    W_dec[j * d + i] = v;
    W_enc[i * n + j] = v;
  }
}
}  // namespace

void init_params_counter(Context& ctx, const TrainConfig& cfg, float* W_enc, float* W_dec) {
  cfg.sae_config().validate();
  const int64_t d = cfg.d_in, n = cfg.d_sae;
  TOPKSAE_CHECK(n <= 0x7fffffffLL, "init_params_counter: d_sae ", n, " exceeds the grid's 2^31-1 blocks");
  const double norm = cfg.decoder_init_norm ? *cfg.decoder_init_norm : 0.0;
  TOPKSAE_CHECK(!cfg.decoder_init_norm || norm > 0, "init_params_counter: decoder_init_norm must be positive");
  init_params_counter_kernel<<<unsigned(n), kThreads, 0, detail::stream(ctx)>>>(
      W_enc, W_dec, d, n, uint64_t(cfg.seed), std::sqrt(6.0 / double(d)), norm);
  CUDA_CHECK_LAUNCH();
}

}  // namespace topksae::cuda
