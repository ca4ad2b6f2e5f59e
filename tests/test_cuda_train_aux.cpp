// AuxK's dense sub-problem (kernels/train/train_aux.cu) against the AuxK part of
// cpu::train_forward: k_aux and the scale from the dead count, the compacted dead list, AuxK's
// top-k over the gathered dead columns, the codes Zd, ehat = b_dec + Zd @ W_dec[dead] and ga, and
// the dza mask of the backward (G keeps each row's k_aux selected entries, each ga_b . W_dec[j]).
// 87 of 203 latents dead, compacted to 96 columns; k_aux = d_in / 2 = 18.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <algorithm>
#include <cmath>

#include "cuda_train_phase_setup.h"

namespace topksae::test {
namespace {

TEST(CudaTrainAux, DenseAuxKMatchesTheCpuTwin) {
  SKIP_WITHOUT_GPU();
  cuda::Context ctx;
  const cudaStream_t st = cuda::detail::stream(ctx);
  const PhaseProblem P(true);
  const TrainForward<float>& f = P.f;
  const int64_t B = P.B(), d = P.d(), n = P.n(), k = P.k();
  ASSERT_EQ(f.n_dead, 87);
  ASSERT_EQ(f.k_aux, 18);
  const int64_t ndc = 96, kc = 18;
  GpuForward F(ctx, P);

  std::vector<int64_t> since_h(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) since_h[size_t(j)] = j % 7;
  DevVec<int64_t> since(since_h);
  DevVec<uint8_t> dead(static_cast<size_t>(n));
  DevVec<int32_t> dead32(static_cast<size_t>(n)), pos(static_cast<size_t>(n)), pos_of(static_cast<size_t>(n)), dead_list(static_cast<size_t>(ndc)), rT(static_cast<size_t>(B * kc));
  DevVec<float> Hc(static_cast<size_t>(B * ndc)), Zd(static_cast<size_t>(B * ndc)), hT(static_cast<size_t>(B * kc)), Wd(static_cast<size_t>(ndc * d));
  DevVec<float> xhat(static_cast<size_t>(B * d)), ehat(static_cast<size_t>(B * d)), g(static_cast<size_t>(B * d)), ga(static_cast<size_t>(B * d)), G(static_cast<size_t>(B * ndc));
  DevVec<double> mu(static_cast<size_t>(d)), stats(static_cast<size_t>(B * 4));
  const size_t tmp_bytes = cuda::train::compact_dead_tmp_bytes(n);
  DevVec<uint8_t> tmp(std::max<size_t>(tmp_bytes, 1));
  DevRecord rec;

  cuda::train::dead_mask(st, since.p(), n, P.cfg.dead_feature_window, dead.p(), dead32.p(), rec.M());
  cuda::train::aux_params(st, d / 2, f.n_dead, rec.M(), rec.C());
  cuda::train::compact_dead(st, dead32.p(), n, ndc, pos.p(), tmp.p(), tmp_bytes, dead_list.p(), pos_of.p(), rec.C());
  cuda::train::gather_dead_cols(st, F.h.p(), F.b_enc.p(), dead_list.p(), B, n, ndc, Hc.p());
  cuda::TopKOptions oc;
  oc.k_dev = &rec.C()->k_aux;
  oc.sorted = false;
  cuda::topk_select(ctx, Hc.p(), B, ndc, kc, rT.p(), hT.p(), oc);
  cuda::train::scatter_aux(st, rT.p(), hT.p(), B, kc, ndc, rec.C(), Zd.p());
  cuda::train::gather_dead_rows(st, F.W_dec.p(), dead_list.p(), ndc, d, Wd.p());
  cuda::detail::fill_rows(ctx, ehat.p(), F.b_dec.p(), B, d);
  cuda::detail::gemm_rowmajor_ex(ctx, false, false, B, d, ndc, Zd.p(), ndc, Wd.p(), d, 1.f, ehat.p(), d,
                                 cuda::Precision::fp32);
  cuda::gather_decode(ctx, F.W_dec.p(), F.b_dec.p(), F.idxS.p(), F.zS.p(), B, k, k, nullptr, d, xhat.p(), n);
  cuda::train::column_sums(st, F.x.p(), nullptr, B, d, P.scaling / double(B), mu.p(), nullptr);
  cuda::train::loss_rows(st, F.x.p(), float(P.scaling), xhat.p(), ehat.p(), mu.p(), F.zS.p(), B, d, k,
                         P.cfg.aux_loss_coefficient, rec.C(), g.p(), ga.p(), stats.p());
  cuda::train::reduce_loss_rows(st, stats.p(), B, rec.M());
  cuda::detail::gemm_rowmajor_ex(ctx, false, true, B, ndc, d, ga.p(), d, Wd.p(), d, 0.f, G.p(), ndc,
                                 cuda::Precision::fp32);
  cuda::train::mask_aux_grad(st, rT.p(), B, kc, ndc, rec.C(), G.p());
  ctx.synchronize();

  const cuda::train::StepRecord r = rec.get();
  EXPECT_EQ(r.control.k_aux, f.k_aux);
  EXPECT_DOUBLE_EQ(r.control.aux_scale, f.aux_scale);
  EXPECT_EQ(r.control.aux_overflow, 0);
  // The compacted list: the dead latents in index order, -1 padding; pos_of its inverse.
  const std::vector<int32_t> dl = dead_list.get(), po = pos_of.get();
  std::vector<int32_t> want_dl;
  for (int64_t j = 0; j < n; ++j)
    if (P.dead[size_t(j)]) want_dl.push_back(int32_t(j));
  want_dl.resize(static_cast<size_t>(ndc), -1);
  EXPECT_EQ(dl, want_dl);
  for (int64_t j = 0; j < n; ++j)
    ASSERT_EQ(po[size_t(j)], P.dead[size_t(j)] ? int32_t(std::find(dl.begin(), dl.end(), j) - dl.begin()) : -1) << j;
  // Zd holds exactly the CPU's AuxK codes at the compacted positions.
  std::vector<float> want_zd(static_cast<size_t>(B * ndc), 0.f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < f.k_aux; ++i)
      want_zd[size_t(b * ndc + po[size_t(f.aux_idx[size_t(b * f.k_aux + i)])])] = f.za[size_t(b * f.k_aux + i)];
  const std::vector<float> zd = Zd.get(), eh = ehat.get(), gag = ga.get(), gm = G.get();
  EXPECT_ALLCLOSE(zd.data(), want_zd.data(), want_zd.size(), 1e-5, 1e-5) << "Zd";
  EXPECT_NONZERO(zd);
  EXPECT_ALLCLOSE(eh.data(), f.ehat.data(), f.ehat.size(), 1e-5, 1e-5) << "ehat";
  EXPECT_ALLCLOSE(gag.data(), f.ga.data(), f.ga.size(), 1e-6, 1e-5) << "ga";
  EXPECT_NONZERO(gag);
  const double aux_loss = P.cfg.aux_loss_coefficient * r.control.aux_scale * r.metrics.aux_sum / double(B);
  EXPECT_NEAR(aux_loss, f.aux_loss, 1e-5 * f.aux_loss);
  // dza: G[b, pos_of[j]] = ga_b . W_dec[j] (the GPU's ga) for the row's AuxK picks j, zero elsewhere.
  std::vector<float> want_g(static_cast<size_t>(B * ndc), 0.f);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < f.k_aux; ++i) {
      const int32_t j = f.aux_idx[size_t(b * f.k_aux + i)];
      double dot = 0;
      for (int64_t c = 0; c < d; ++c) dot += double(gag[size_t(b * d + c)]) * P.p.W_dec[size_t(j * d + c)];
      want_g[size_t(b * ndc + po[size_t(j)])] = float(dot);
    }
  EXPECT_ALLCLOSE(gm.data(), want_g.data(), want_g.size(), 1e-7, 1e-4) << "dza";
  EXPECT_NONZERO(gm);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTrainAux, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
