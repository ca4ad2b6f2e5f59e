// The sparse backward's kernels (kernels/train/train_backward.cu) against cpu::train_backward,
// on the CPU twin's forward (so only the backward is under test): dz by whole rows and by column
// slabs (16 and 32 threads per row), the entries regrouped by latent, dW_dec, dW_enc + db_enc and
// db_dec (with the W_enc @ db_enc term), and their squared norm. Also AuxK's gather path, whose T
// entries join the same lists (d_in / 2 = 18 per row).
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cmath>

#include "cuda_train_phase_setup.h"

namespace topksae::test {
namespace {

// dz_tpt 0: dz_rows; else dz_slabs with that many threads per row (S entries only).
void run_backward(bool with_aux, int dz_tpt) {
  SCOPED_TRACE(std::string(with_aux ? "AuxK gather path" : "no AuxK") + ", dz threads " + std::to_string(dz_tpt));
  cuda::Context ctx;
  const cudaStream_t st = cuda::detail::stream(ctx);
  const PhaseProblem P(with_aux);
  const TrainForward<float>& f = P.f;
  const int64_t B = P.B(), d = P.d(), n = P.n(), k = P.k();
  const int64_t kT = with_aux ? f.k_aux : 0;
  ASSERT_EQ(kT, with_aux ? 18 : 0);
  // The selections' raw pre-activations (+ b_enc) and the CPU's forward outputs, on the device.
  std::vector<float> hS_h(static_cast<size_t>(B * k));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < k; ++i) hS_h[size_t(b * k + i)] = f.h[size_t(b * n + f.idx[size_t(b * k + i)])];
  DevVec<int32_t> idxS(f.idx), idxT(with_aux ? f.aux_idx : std::vector<int32_t>(1, 0));
  DevVec<float> hS(hS_h), hT(with_aux ? f.za : std::vector<float>(1, 0.f)), g(f.g);
  DevVec<float> ga(with_aux ? f.ga : std::vector<float>(static_cast<size_t>(B * d), 0.f));
  DevVec<float> u(f.u), W_enc(P.p.W_enc), W_dec(P.p.W_dec);
  const int64_t per = B * (k + kT);
  DevVec<float> arena(static_cast<size_t>(6 * per));
  const cuda::train::EntryArrays ea = cuda::train::carve_entries(arena.p(), per);
  int sort_bits = 1;
  while ((int64_t(1) << sort_bits) <= n) ++sort_bits;
  const size_t tmp_bytes = cuda::train::sort_entries_tmp_bytes(per, sort_bits);
  DevVec<uint8_t> tmp(std::max<size_t>(tmp_bytes, 1));
  DevVec<int32_t> start(static_cast<size_t>(n + 1));
  const int64_t slabs = dz_tpt > 0 ? (d + 4 * dz_tpt - 1) / (4 * dz_tpt) : 0;
  DevVec<float> part(static_cast<size_t>(std::max<int64_t>(slabs * B * k, 1)));
  DevVec<float> dW_enc(static_cast<size_t>(d * n)), db_enc(static_cast<size_t>(n)), dW_dec(static_cast<size_t>(n * d)), db_dec(static_cast<size_t>(d));
  DevRecord rec(cuda::train::StepControl{f.aux_scale, int32_t(f.k_aux), 0, 1.f});

  if (dz_tpt > 0)
    cuda::train::dz_slabs(st, dz_tpt, W_dec.p(), g.p(), idxS.p(), hS.p(), B, d, k, slabs, part.p(), ea);
  else
    cuda::train::dz_rows(st, W_dec.p(), g.p(), ga.p(), idxS.p(), hS.p(), idxT.p(), hT.p(), B, d, k, kT, rec.C(), ea);
  const int32_t* order = cuda::train::sort_entries(st, idxS.p(), idxT.p(), B, k, kT, n, sort_bits, rec.C(), tmp.p(),
                                                   tmp_bytes, ea, start.p());
  cuda::train::grad_dec(st, start.p(), order, ea.w, g.p(), ga.p(), B, d, n, k, kT, nullptr, nullptr, dW_dec.p(),
                        rec.M());
  cuda::train::grad_enc(st, start.p(), order, ea.dh, u.p(), B, d, n, k, kT, nullptr, nullptr, nullptr, dW_enc.p(),
                        db_enc.p(), rec.M());
  cuda::train::grad_bias_dec(ctx, g.p(), with_aux ? ga.p() : nullptr, B, d, P.cfg.apply_b_dec_to_input, W_enc.p(),
                             db_enc.p(), n, db_dec.p());
  cuda::train::add_sumsq(st, db_dec.p(), d, rec.M());
  ctx.synchronize();

  Params<float> want;
  cpu::train_backward(P.cfg, P.p, f, &want);
  Params<float> got;
  got.W_enc = dW_enc.get();
  got.b_enc = db_enc.get();
  got.W_dec = dW_dec.get();
  got.b_dec = db_dec.get();
  EXPECT_ALLCLOSE(got.W_enc.data(), want.W_enc.data(), want.W_enc.size(), 1e-6, 1e-4) << "dW_enc";
  EXPECT_ALLCLOSE(got.b_enc.data(), want.b_enc.data(), want.b_enc.size(), 1e-6, 1e-4) << "db_enc";
  EXPECT_ALLCLOSE(got.W_dec.data(), want.W_dec.data(), want.W_dec.size(), 1e-6, 1e-4) << "dW_dec";
  EXPECT_ALLCLOSE(got.b_dec.data(), want.b_dec.data(), want.b_dec.size(), 1e-6, 1e-4) << "db_dec";
  EXPECT_NONZERO(got.W_enc);
  EXPECT_NONZERO(got.W_dec);
  EXPECT_NONZERO(got.b_dec);
  // start[] brackets each latent's entries: every entry once.
  const std::vector<int32_t> s = start.get();
  EXPECT_EQ(s[0], 0);
  EXPECT_EQ(s[size_t(n)], int32_t(per));
  for (int64_t j = 0; j < n; ++j) ASSERT_LE(s[size_t(j)], s[size_t(j + 1)]) << j;
  // The squared norm of the four gradients, as clip_grad_norm needs it.
  Params<float> clipped = want;
  const double N = cpu::clip_grad_norm(&clipped);
  EXPECT_NEAR(std::sqrt(rec.get().metrics.sumsq), N, 1e-4 * N);
}

TEST(CudaTrainBackward, WholeRowDzMatchesTheCpuTwin) {
  SKIP_WITHOUT_GPU();
  run_backward(false, 0);
}

TEST(CudaTrainBackward, SlabDzMatchesTheCpuTwin) {
  SKIP_WITHOUT_GPU();
  run_backward(false, 16);
  run_backward(false, 32);
}

TEST(CudaTrainBackward, AuxKGatherEntriesMatchTheCpuTwin) {
  SKIP_WITHOUT_GPU();
  run_backward(true, 0);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTrainBackward, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
