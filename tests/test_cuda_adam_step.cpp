// The train step's Adam kernel (kernels/train/adam_step.cu) against cpu::adam_step: one fused
// pass over [W_enc | b_enc | W_dec | b_dec] with the clip factor applied to the gradient first,
// and the bf16 copy of W_enc it refreshes. P is odd, so the float4 body and the scalar tail both run.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cmath>
#include <cstring>

#include "cuda_train_test_util.h"
#include "topksae/train.h"

namespace topksae::test {
namespace {

constexpr int64_t kD = 13, kN = 30;  // P = 2*13*30 + 30 + 13 = 823: not a multiple of 4

// The bf16 bits of f, round to nearest even (finite f).
uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

void run_case(float clip, int64_t t) {
  SCOPED_TRACE("clip " + std::to_string(clip) + ", t " + std::to_string(t));
  cuda::Context ctx;
  const Params<float> p0 = random_params(kD, kN, 11);
  Params<float> m0 = random_params(kD, kN, 21, 0.01f), v0 = random_params(kD, kN, 31, 0.01f);
  for (auto* a : {&v0.W_enc, &v0.b_enc, &v0.W_dec, &v0.b_dec})
    for (float& x : *a) x = x * x;  // second moments are >= 0
  const Params<float> grad = random_params(kD, kN, 41, 0.5f);
  const int64_t P = int64_t(flat(p0).size());
  ASSERT_NE(P % 4, 0);
  const double lr = 3e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8;

  DevVec<float> p(flat(p0)), m(flat(m0)), v(flat(v0)), g(flat(grad));
  DevVec<uint16_t> w16(static_cast<size_t>(kD * kN));
  DevRecord rec(cuda::train::StepControl{0.0, 0, 0, clip});
  cuda::train::adam(reinterpret_cast<cudaStream_t>(ctx.stream()), ctx.sm_count(), p.p(), m.p(), v.p(), g.p(), P,
                    rec.C(), lr, b1, b2, eps, t, w16.p(), kD * kN);
  ctx.synchronize();

  // The CPU twin on the clipped gradient (the kernel scales by the clip factor first).
  Params<float> pc = p0, mc = m0, vc = v0, gc = grad;
  for (auto* a : {&gc.W_enc, &gc.b_enc, &gc.W_dec, &gc.b_dec})
    for (float& x : *a) x *= clip;
  cpu::adam_step(&pc, &mc, &vc, gc, lr, b1, b2, eps, t);
  const std::vector<float> pw = flat(pc), mw = flat(mc), vw = flat(vc);
  const std::vector<float> pg = p.get(), mg = m.get(), vg = v.get();
  EXPECT_ALLCLOSE(pg.data(), pw.data(), pw.size(), 1e-7, 1e-6) << "parameters";
  EXPECT_ALLCLOSE(mg.data(), mw.data(), mw.size(), 1e-9, 1e-6) << "first moments";
  EXPECT_ALLCLOSE(vg.data(), vw.data(), vw.size(), 1e-12, 1e-6) << "second moments";
  // Every parameter moved (a kernel that skipped the tail or a quarter of the float4s would not).
  const std::vector<float> p0f = flat(p0);
  for (int64_t i = 0; i < P; ++i) ASSERT_NE(pg[size_t(i)], p0f[size_t(i)]) << i;
  const std::vector<uint16_t> w = w16.get();
  for (int64_t i = 0; i < kD * kN; ++i) ASSERT_EQ(w[size_t(i)], bf16_bits(pg[size_t(i)])) << i;
}

TEST(CudaAdamStep, MatchesTheCpuTwinWithAndWithoutClipping) {
  SKIP_WITHOUT_GPU();
  run_case(1.0f, 1);
  run_case(0.37f, 3);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaAdamStep, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
