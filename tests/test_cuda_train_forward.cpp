// The training forward's kernels (kernels/train/train_forward.cu) against cpu::train_forward,
// without AuxK (tests/test_cuda_train_aux.cpp has it): u = s*x - b_dec, relu of the selections,
// the column means, and per row the MSE, its gradient g and the metric sums, on the GPU's own
// encoder GEMM, top-k and gather decode (the shared ops), as train_step.cu strings them; the
// encoder GEMM through cuBLAS and through cublasLt (TrainStepOptions::encoder_gemm).
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cmath>

#include "cuda_train_phase_setup.h"

namespace topksae::test {
namespace {

class CudaTrainForward : public ::testing::TestWithParam<cuda::EncoderGemm> {};

TEST_P(CudaTrainForward, LossesAndGradientsMatchTheCpuTwin) {
  SKIP_WITHOUT_GPU();
  cuda::Context ctx;
  const cudaStream_t st = cuda::detail::stream(ctx);
  const PhaseProblem P(false);
  const int64_t B = P.B(), d = P.d(), k = P.k();
  GpuForward G(ctx, P, GetParam());
  DevVec<float> xhat(static_cast<size_t>(B * d)), g(static_cast<size_t>(B * d)), ga(std::vector<float>(static_cast<size_t>(B * d), 7.f));
  DevVec<double> mu(static_cast<size_t>(d)), stats(static_cast<size_t>(B * 4));
  DevRecord rec;
  cuda::gather_decode(ctx, G.W_dec.p(), G.b_dec.p(), G.idxS.p(), G.zS.p(), B, k, k, nullptr, d, xhat.p(), P.n());
  cuda::train::column_sums(st, G.x.p(), nullptr, B, d, P.scaling / double(B), mu.p(), nullptr);
  cuda::train::loss_rows(st, G.x.p(), float(P.scaling), xhat.p(), nullptr, mu.p(), G.zS.p(), B, d, k,
                         P.cfg.aux_loss_coefficient, rec.C(), g.p(), ga.p(), stats.p());
  cuda::train::reduce_loss_rows(st, stats.p(), B, rec.M());
  ctx.synchronize();

  const TrainForward<float>& f = P.f;
  const std::vector<float> u = G.u.get(), z = G.zS.get(), xh = xhat.get(), gg = g.get();
  EXPECT_ALLCLOSE(u.data(), f.u.data(), f.u.size(), 1e-6, 1e-6) << "u";
  EXPECT_EQ(G.idxS.get(), f.idx) << "the main top-k";
  EXPECT_ALLCLOSE(z.data(), f.z.data(), f.z.size(), 1e-5, 1e-5) << "z";
  EXPECT_ALLCLOSE(xh.data(), f.xhat.data(), f.xhat.size(), 1e-5, 1e-5) << "xhat";
  EXPECT_ALLCLOSE(gg.data(), f.g.data(), f.g.size(), 1e-6, 1e-5) << "g";
  EXPECT_NONZERO(gg);
  EXPECT_EQ(ga.get(), std::vector<float>(static_cast<size_t>(B * d), 0.f)) << "ga is zeroed without AuxK";
  // The column means of s*x, in double.
  const std::vector<double> m = mu.get();
  for (int64_t c = 0; c < d; ++c) {
    double want = 0;
    for (int64_t b = 0; b < B; ++b) want += double(f.xs[size_t(b * d + c)]);
    EXPECT_NEAR(m[size_t(c)], want / double(B), 1e-6) << c;
  }
  const cuda::train::DevMetrics M = rec.get().metrics;
  EXPECT_NEAR(M.mse_sum / double(B), f.mse_loss, 1e-5 * f.mse_loss);
  EXPECT_NEAR(1.0 - M.mse_sum / M.tv_sum, f.explained_variance, 1e-5);
  EXPECT_EQ(int64_t(M.nnz), f.nnz);
  EXPECT_EQ(M.aux_sum, 0.0);
}
INSTANTIATE_TEST_SUITE_P(Cuda, CudaTrainForward, ::testing::Values(cuda::EncoderGemm::cublas, cuda::EncoderGemm::lt),
                         [](const ::testing::TestParamInfo<cuda::EncoderGemm>& i) {
                           return std::string(cuda::encoder_gemm_name(i.param));
                         });

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaTrainForward, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
