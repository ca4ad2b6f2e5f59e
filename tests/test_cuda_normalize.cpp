// The CUDA normalisation (kernels/normalize.cu: normalize_in / normalize_out / process_sae_in)
// against its CPU twin (src/cpu/normalize.cpp) in all four normalize_activations modes, on
// seeded rows whose length is not a multiple of the row kernel's 256 threads.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <algorithm>
#include <cmath>

#include "cuda_test_util.h"
#include "topksae/error.h"
#include "topksae/ops_cpu.h"
#include "topksae/ops_cuda.h"

namespace topksae::test {
namespace {

constexpr Normalize kModes[] = {Normalize::none, Normalize::expected_average_only_in,
                                Normalize::constant_norm_rescale, Normalize::layer_norm};

// Rows with an offset and a per-row scale, so that centring and rescaling both change them.
std::vector<float> shifted_rows(int64_t B, int64_t d, uint64_t seed) {
  std::vector<float> x = randn(size_t(B * d), seed);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < d; ++i) x[size_t(b * d + i)] = x[size_t(b * d + i)] * float(1 + b % 3) + 0.5f * float(b % 4);
  return x;
}

TEST(CudaNormalize, InAndOutMatchTheCpuInEveryMode) {
  SKIP_WITHOUT_GPU();
  const int64_t B = 19, d = 301;
  const std::vector<float> x = shifted_rows(B, d, 5);
  const std::vector<float> b_dec = randn(size_t(d), 6, 0.1f);
  cuda::Context ctx;
  DevVec<float> dx(x), db(b_dec);
  for (Normalize mode : kModes) {
    SCOPED_TRACE(std::string(normalize_name(mode)));
    // CPU: normalise, then centre (what process_sae_in does).
    std::vector<float> ref(x.size());
    cpu::NormStats stats;
    cpu::normalize_in(mode, x.data(), B, d, ref.data(), &stats);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < d; ++i) ref[size_t(b * d + i)] -= b_dec[size_t(i)];

    DevVec<float> du(std::vector<float>(x.size(), NAN));  // poisoned: every element must be written
    DevVec<float> scale(std::vector<float>(size_t(B), 1.f)), shift(std::vector<float>(size_t(B), 0.f));
    cuda::normalize_in(ctx, mode, dx.p(), db.p(), B, d, du.p(), scale.p(), shift.p());
    ctx.synchronize();
    const std::vector<float> got = du.get();
    EXPECT_NONZERO(got);
    EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), 1e-5, 1e-5);
    const std::vector<float> gs = scale.get(), gm = shift.get();
    EXPECT_ALLCLOSE(gs.data(), stats.scale.data(), size_t(B), 1e-6, 1e-5) << "scale";
    EXPECT_ALLCLOSE(gm.data(), stats.shift.data(), size_t(B), 1e-6, 1e-5) << "shift";
    if (mode == Normalize::constant_norm_rescale || mode == Normalize::layer_norm)
      EXPECT_NE(gs[0], 1.f) << "the statistics were not written";

    // normalize_out undoes it on a reconstruction (here: the centred input plus b_dec again).
    std::vector<float> xhat = ref;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < d; ++i) xhat[size_t(b * d + i)] += b_dec[size_t(i)];
    DevVec<float> dh(xhat);
    cuda::normalize_out(ctx, mode, dh.p(), B, d, scale.p(), shift.p());
    ctx.synchronize();
    const std::vector<float> back = dh.get();
    cpu::normalize_out(mode, xhat.data(), B, d, stats);
    EXPECT_ALLCLOSE(back.data(), xhat.data(), xhat.size(), 1e-5, 1e-5);
    if (mode != Normalize::expected_average_only_in)  // the scaling factor is not undone on the output
      EXPECT_ALLCLOSE(back.data(), x.data(), x.size(), 1e-4, 1e-4) << "out(in(x)) is x";
  }
}

// process_sae_in and encode_topk take every mode now (the GPU refused the two with statistics).
TEST(CudaNormalize, ProcessSaeInAndEncodeInEveryMode) {
  SKIP_WITHOUT_GPU();
  const int64_t d_in = 70, d_sae = 515, k = 11, B = 13;
  const std::vector<float> x = shifted_rows(B, d_in, 15);
  cuda::Context ctx;
  DevVec<float> dx(x);
  for (Normalize mode : kModes) {
    SCOPED_TRACE(std::string(normalize_name(mode)));
    const Sae sae = random_sae(d_in, d_sae, k, 17, mode);
    std::vector<float> u(x.size());
    cpu::NormStats stats;
    cpu::process_sae_in(sae, x.data(), B, u.data(), &stats);
    const cuda::DeviceSae ds = cuda::DeviceSae::upload(sae);
    DevVec<float> du(x.size()), scale(static_cast<size_t>(B)), shift(static_cast<size_t>(B));
    cuda::process_sae_in(ctx, ds, dx.p(), B, du.p(), scale.p(), shift.p());
    ctx.synchronize();
    const std::vector<float> gu = du.get();
    EXPECT_NONZERO(gu);
    EXPECT_ALLCLOSE(gu.data(), u.data(), u.size(), 1e-5, 1e-5);
    if (mode == Normalize::layer_norm) {
      const std::vector<float> gm = shift.get();
      EXPECT_ALLCLOSE(gm.data(), stats.shift.data(), size_t(B), 1e-6, 1e-5);
    }

    const cpu::TopKCodes ref = cpu::encode_topk(sae, x.data(), B);
    cuda::TopKCodes codes;
    cuda::encode_topk(ctx, ds, dx.p(), B, cuda::Precision::fp32, codes);
    const cpu::TopKCodes got = codes.download(ctx);
    EXPECT_NONZERO(got.values);
    // The GEMM's rounding differs from the CPU's: a pick may differ only where two latents are
    // within that rounding of each other, and each value is the CPU's pre-activation of its latent.
    std::vector<float> h(size_t(B * d_sae));
    cpu::encode_pre(sae, u.data(), B, h.data());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < k; ++i) {
        const size_t at = size_t(b * k + i);
        const float hv = h[size_t(b * d_sae + got.indices[at])];
        EXPECT_NEAR(got.values[at], std::max(hv, 0.f), 1e-4 + 1e-4 * std::abs(hv)) << "row " << b << " slot " << i;
        if (got.indices[at] != ref.indices[at])
          EXPECT_NEAR(got.values[at], ref.values[at], 1e-4) << "row " << b << " slot " << i << ": not a near tie";
      }
  }
}

TEST(CudaNormalize, LayerNormNeedsTwoColumnsAndOutNeedsTheStatistics) {
  SKIP_WITHOUT_GPU();
  cuda::Context ctx;
  DevVec<float> x(std::vector<float>{1.f, 2.f}), u(size_t(2)), s(size_t(2));
  EXPECT_THROW(cuda::normalize_in(ctx, Normalize::layer_norm, x.p(), nullptr, 2, 1, u.p(), s.p(), s.p()), Error);
  EXPECT_THROW(cuda::normalize_out(ctx, Normalize::layer_norm, u.p(), 1, 2, nullptr, nullptr), Error);
  cuda::normalize_out(ctx, Normalize::none, u.p(), 1, 2, nullptr, nullptr);  // nothing to undo
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaNormalize, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
