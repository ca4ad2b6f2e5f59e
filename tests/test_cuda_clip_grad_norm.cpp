// The train step's gradient norm and clip factor (kernels/train/clip_grad_norm.cu) against
// cpu::clip_grad_norm: the squared norms summed over the four gradients (several calls, each over
// more elements than one block's threads), then grad_norm and min(1, 1 / (N + 1e-6)).
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cmath>

#include "cuda_train_test_util.h"
#include "topksae/train.h"

namespace topksae::test {
namespace {

void run_case(float scale, bool expect_clipped) {
  SCOPED_TRACE("gradient scale " + std::to_string(scale));
  cuda::Context ctx;
  const cudaStream_t st = reinterpret_cast<cudaStream_t>(ctx.stream());
  const int64_t d = 37, n = 203;
  Params<float> grad = random_params(d, n, 5, 1.f);
  for (auto* a : {&grad.W_enc, &grad.b_enc, &grad.W_dec, &grad.b_dec})
    for (float& x : *a) x *= scale;
  DevRecord rec;
  std::vector<DevVec<float>> parts;
  for (const auto* a : {&grad.W_enc, &grad.b_enc, &grad.W_dec, &grad.b_dec}) {
    parts.emplace_back(*a);
    cuda::train::add_sumsq(st, parts.back().p(), int64_t(a->size()), rec.M());
  }
  cuda::train::clip_factor(st, rec.M(), rec.C());
  ctx.synchronize();
  const cuda::train::StepRecord r = rec.get();

  Params<float> clipped = grad;
  const double N = cpu::clip_grad_norm(&clipped);
  EXPECT_NEAR(r.metrics.grad_norm, N, 1e-12 * N);
  EXPECT_NEAR(r.metrics.sumsq, N * N, 1e-12 * N * N);
  const double c = std::min(1.0, kClipMaxNorm / (N + kClipEps));
  EXPECT_FLOAT_EQ(r.control.clip, float(c));
  EXPECT_EQ(r.control.clip < 1.f, expect_clipped);
  // The CPU twin scales by the same factor.
  EXPECT_FLOAT_EQ(clipped.W_dec[7], float(double(grad.W_dec[7]) * c));
}

TEST(CudaClipGradNorm, NormAndFactorMatchTheCpuTwin) {
  SKIP_WITHOUT_GPU();
  run_case(0.5f, true);    // N ~ 0.5 * sqrt(2 * 37 * 203) ~ 60 (the biases smaller): clipped
  run_case(1e-4f, false);  // N ~ 0.01: factor 1
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaClipGradNorm, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
