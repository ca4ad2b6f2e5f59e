// A small training problem for the per-phase CUDA tests (forward, AuxK, backward): the config,
// parameters and batch, the CPU twin's forward on them, and the GPU forward up to the main top-k
// (u, h, the selections), which those tests build on. Only included under TOPKSAE_HAS_CUDA.
#pragma once
#include <cstdint>
#include <vector>

#include "cuda_internal.h"  // detail::stream
#include "gemm_lt.h"        // detail::encoder_gemm
#include "cuda_train_test_util.h"
#include "topksae/ops_cuda.h"
#include "topksae/train.h"

namespace topksae::test {

// d_in 36 (a multiple of 4: the float4 dz slabs can run), d_sae 203, k 5, batch 19: no size is a
// multiple of a block. since_fired = j % 7 with window 3: 3/7 of the latents dead (AuxK active,
// k_aux = 18 < n_dead).
struct PhaseProblem {
  TrainConfig cfg;
  Params<float> p;
  std::vector<float> x;
  double scaling = 1.7;
  std::vector<uint8_t> dead;  // [d_sae]
  TrainForward<float> f;      // cpu::train_forward with `dead`

  explicit PhaseProblem(bool with_aux) {
    cfg.d_in = 36;
    cfg.d_sae = 203;
    cfg.k = 5;
    cfg.batch_size = 19;
    cfg.dead_feature_window = 3;
    cfg.training_tokens = 19 * 10;
    p = random_params(cfg.d_in, cfg.d_sae, 90);
    x = randn(static_cast<size_t>(cfg.batch_size * cfg.d_in), 91, 1.f);
    dead.assign(static_cast<size_t>(cfg.d_sae), 0);
    if (with_aux)
      for (int64_t j = 0; j < cfg.d_sae; ++j) dead[size_t(j)] = j % 7 > 3;
    cpu::train_forward(cfg, p, x.data(), cfg.batch_size, scaling, with_aux ? dead.data() : nullptr, &f);
  }
  int64_t B() const { return cfg.batch_size; }
  int64_t d() const { return cfg.d_in; }
  int64_t n() const { return cfg.d_sae; }
  int64_t k() const { return cfg.k; }
};

// The GPU's forward up to the main top-k, as train_step.cu runs it: u = s*x - b_dec, h = u @ W_enc
// (fp32, through `how`'s library), S = top-k(h + b_enc) into idxS / hS, z = relu(hS).
struct GpuForward {
  DevVec<float> W_enc, b_enc, W_dec, b_dec, x, u, h, hS, zS;
  DevVec<int32_t> idxS;
  GpuForward(cuda::Context& ctx, const PhaseProblem& P, cuda::EncoderGemm how = cuda::EncoderGemm::cublas)
      : W_enc(P.p.W_enc), b_enc(P.p.b_enc), W_dec(P.p.W_dec), b_dec(P.p.b_dec), x(P.x), u(static_cast<size_t>(P.B() * P.d())),
        h(static_cast<size_t>(P.B() * P.n())), hS(static_cast<size_t>(P.B() * P.k())), zS(static_cast<size_t>(P.B() * P.k())), idxS(static_cast<size_t>(P.B() * P.k())) {
    const cudaStream_t st = cuda::detail::stream(ctx);
    cuda::train::prep_input(st, x.p(), float(P.scaling), b_dec.p(), P.B(), P.d(), u.p());
    cuda::detail::encoder_gemm(ctx, how, cuda::Precision::fp32, P.B(), P.n(), P.d(), u.p(), W_enc.p(), nullptr, h.p());
    cuda::TopKOptions o;
    o.bias = b_enc.p();
    cuda::topk_select(ctx, h.p(), P.B(), P.n(), P.k(), idxS.p(), hS.p(), o);
    cuda::train::relu(st, hS.p(), zS.p(), P.B() * P.k());
  }
};

}  // namespace topksae::test
