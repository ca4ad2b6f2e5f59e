// The CUDA encode / convert / decode twins against the CPU twins on seeded data whose sizes are
// not multiples of any block size; tolerances per GEMM precision.
#include "test_util.h"
#include "topksae/ops_cuda.h"  // encode_chunk_rows is host arithmetic: tested in every build

#ifdef TOPKSAE_HAS_CUDA
#include <cuda_runtime.h>

#include <climits>
#include <cmath>

#include "cuda_test_util.h"
#include "gemm_lt.h"
#include "topksae/dtype.h"
#include "topksae/error.h"
#include "topksae/ops_cpu.h"
#include "topksae/ops_cuda.h"

namespace topksae::test {
namespace {

struct Tol {
  double atol, rtol;
};
Tol tol_for(cuda::Precision p) {
  switch (p) {
    case cuda::Precision::fp32: return {1e-4, 1e-4};
    case cuda::Precision::tf32: return {2e-2, 5e-3};
    case cuda::Precision::bf16: return {5e-2, 2e-2};
  }
  return {0, 0};
}

TEST(CudaEncode, PreActivationsPerPrecision) {
  SKIP_WITHOUT_GPU();
  const int64_t d_in = 100, d_sae = 1003, k = 17, B = 67;
  const Sae sae = random_sae(d_in, d_sae, k, 11);
  const std::vector<float> x = randn(size_t(B * d_in), 12);
  std::vector<float> u(size_t(B * d_in)), h(size_t(B * d_sae));
  cpu::process_sae_in(sae, x.data(), B, u.data(), nullptr);
  cpu::encode_pre(sae, u.data(), B, h.data());

  cuda::Context ctx;
  cuda::DeviceSae ds = cuda::DeviceSae::upload(sae);
  ds.ensure_bf16(ctx);
  DevVec<float> dx(x), du(size_t(B * d_in)), dh(size_t(B * d_sae));
  cuda::process_sae_in(ctx, ds, dx.p(), B, du.p());
  ctx.synchronize();
  const std::vector<float> gu = du.get();
  EXPECT_ALLCLOSE(gu.data(), u.data(), u.size(), 1e-6, 1e-6);
  // Each precision through cuBLAS (bias: a fill, then beta = 1) and cublasLt (its bias epilogue);
  // tf32 also through the timed choice of the two.
  for (cuda::EncoderGemm how : {cuda::EncoderGemm::cublas, cuda::EncoderGemm::lt, cuda::EncoderGemm::automatic})
  for (cuda::Precision p : {cuda::Precision::fp32, cuda::Precision::tf32, cuda::Precision::bf16}) {
    if (how == cuda::EncoderGemm::automatic && p != cuda::Precision::tf32) continue;  // (emulation time)
    SCOPED_TRACE(::testing::Message() << cuda::precision_name(p) << ", " << cuda::encoder_gemm_name(how));
    cuda::fill_random(ctx, dh.p(), B * d_sae, 5, 100.f);  // no value of an earlier call survives
    cuda::encode_pre(ctx, ds, du.p(), B, dh.p(), p, /*add_bias=*/true, how);
    ctx.synchronize();
    const std::vector<float> gh = dh.get();
    EXPECT_NONZERO(gh);
    EXPECT_ALLCLOSE(gh.data(), h.data(), h.size(), tol_for(p).atol, tol_for(p).rtol);
  }
  // The weights survive the round trip.
  const Sae back = ds.download();
  EXPECT_EQ(back.params.W_enc, sae.params.W_enc);
  EXPECT_EQ(back.params.b_dec, sae.params.b_dec);
}

// The cublasLt selection (kernels/gemm_lt.h): candidates from the heuristic, one kept, timed once
// per problem (a second prepare returns the cached choice), the automatic mode's cuBLAS time
// beside it; a problem with other operand alignments is a problem of its own, and its product is
// still right.
TEST(CudaEncode, LtSelectionIsTimedOncePerProblem) {
  SKIP_WITHOUT_GPU();
  const int64_t M = 13, N = 301, K = 29;
  const std::vector<float> A = randn(size_t((M + 1) * K), 31), W = randn(size_t(K * N), 32);
  cuda::Context ctx;
  DevVec<float> dA(A), dW(W), dC(size_t(M * N));
  const auto first = cuda::detail::encoder_gemm_prepare(ctx, cuda::EncoderGemm::lt, cuda::Precision::tf32, M, N, K,
                                                        dA.p(), dW.p(), nullptr, dC.p());
  EXPECT_TRUE(first.use_lt);
  EXPECT_GT(first.candidates, 0);
  EXPECT_GE(first.algo_rank, 0);
  EXPECT_LT(first.algo_rank, first.candidates);
  EXPECT_LE(first.workspace, cuda::detail::kLtWorkspaceBytes);
  const auto again = cuda::detail::encoder_gemm_prepare(ctx, cuda::EncoderGemm::lt, cuda::Precision::tf32, M, N, K,
                                                        dA.p(), dW.p(), nullptr, dC.p());
  EXPECT_EQ(again.algo_rank, first.algo_rank);
  EXPECT_EQ(again.lt_ms, first.lt_ms) << "a second call must reuse the selection, not time again";
  const auto au = cuda::detail::encoder_gemm_prepare(ctx, cuda::EncoderGemm::automatic, cuda::Precision::tf32, M, N, K,
                                                     dA.p(), dW.p(), nullptr, dC.p());
  EXPECT_EQ(au.algo_rank, first.algo_rank);
  EXPECT_GE(au.cublas_ms, 0.f);
  EXPECT_EQ(au.use_lt, au.lt_ms < au.cublas_ms);
  // A starts one row in (K * 4 = 116 bytes: 4-byte aligned only).
  for (int64_t r0 : {int64_t(0), int64_t(1)}) {
    cuda::detail::encoder_gemm(ctx, cuda::EncoderGemm::lt, cuda::Precision::fp32, M, N, K, dA.p() + r0 * K, dW.p(), nullptr,
                       dC.p());
    const std::vector<float> c = dC.get();
    std::vector<float> want(size_t(M * N), 0.f);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t p = 0; p < K; ++p)
        for (int64_t j = 0; j < N; ++j) want[size_t(i * N + j)] += A[size_t((i + r0) * K + p)] * W[size_t(p * N + j)];
    EXPECT_NONZERO(c);
    EXPECT_ALLCLOSE(c.data(), want.data(), want.size(), 1e-5, 1e-4) << "rows from " << r0;
  }
}

// encode_topk end to end, over the whole batch at once and in chunks of 8 rows (45 = 5 x 8 + 5).
// Rounding can swap two latents whose pre-activations are within the GEMM error, so the check
// is: every GPU winner is a CPU winner OR within tolerance of the CPU's k-th value, and every GPU
// value matches the CPU pre-activation (after ReLU) of that latent.
TEST(CudaEncode, EncodeTopKPerPrecision) {
  SKIP_WITHOUT_GPU();
  const int64_t d_in = 131, d_sae = 2049, k = 37, B = 45;
  const Sae sae = random_sae(d_in, d_sae, k, 21);
  const std::vector<float> x = randn(size_t(B * d_in), 22);
  std::vector<float> u(size_t(B * d_in)), h(size_t(B * d_sae));
  cpu::process_sae_in(sae, x.data(), B, u.data(), nullptr);
  cpu::encode_pre(sae, u.data(), B, h.data());
  const cpu::TopKCodes ref = cpu::encode_topk(sae, x.data(), B);

  cuda::Context ctx;
  cuda::DeviceSae ds = cuda::DeviceSae::upload(sae);
  ds.ensure_bf16(ctx);
  DevVec<float> dx(x);
  for (cuda::EncoderGemm how : {cuda::EncoderGemm::cublas, cuda::EncoderGemm::lt})
  for (int64_t chunk_rows : {int64_t(-1), int64_t(8)})
  for (cuda::Precision p : {cuda::Precision::fp32, cuda::Precision::tf32, cuda::Precision::bf16}) {
    // cublasLt in chunks only: chunks of 8 rows of 131 floats start at 32- to 256-byte alignments,
    // each a problem of its own (the emulation's run time keeps the whole-batch case out).
    if (how == cuda::EncoderGemm::lt && chunk_rows < 0) continue;
    SCOPED_TRACE(::testing::Message() << cuda::precision_name(p) << ", chunk_rows " << chunk_rows << ", "
                                      << cuda::encoder_gemm_name(how));
    const Tol t = tol_for(p);
    cuda::TopKCodes codes;
    cuda::encode_topk(ctx, ds, dx.p(), B, p, codes, chunk_rows, how);
    const cpu::TopKCodes got = codes.download();
    ASSERT_EQ(got.rows, B);
    ASSERT_EQ(got.k, k);
    EXPECT_NONZERO(got.values);
    int64_t exact_rows = 0;
    for (int64_t b = 0; b < B; ++b) {
      const float kth = ref.values[size_t(b * k + k - 1)];  // after ReLU; CPU raw k-th value below
      std::vector<int32_t> rs(ref.indices.begin() + b * k, ref.indices.begin() + (b + 1) * k);
      std::vector<int32_t> gs(got.indices.begin() + b * k, got.indices.begin() + (b + 1) * k);
      std::sort(rs.begin(), rs.end());
      std::sort(gs.begin(), gs.end());
      EXPECT_TRUE(std::adjacent_find(gs.begin(), gs.end()) == gs.end()) << "row " << b << " names a latent twice";
      exact_rows += rs == gs;
      const float raw_kth = h[size_t(b * d_sae + ref.indices[size_t(b * k + k - 1)])];
      for (int64_t i = 0; i < k; ++i) {
        const int32_t j = got.indices[size_t(b * k + i)];
        ASSERT_GE(j, 0);
        ASSERT_LT(j, d_sae);
        const float hv = h[size_t(b * d_sae + j)];
        EXPECT_GE(hv, raw_kth - 2 * (t.atol + t.rtol * std::abs(raw_kth))) << "row " << b << " picked latent " << j;
        const float v = got.values[size_t(b * k + i)];
        EXPECT_LE(std::abs(v - std::max(hv, 0.f)), t.atol + t.rtol * std::abs(hv)) << "row " << b << " slot " << i;
      }
      // Sorted descending.
      for (int64_t i = 1; i < k; ++i) EXPECT_GE(got.values[size_t(b * k + i - 1)], got.values[size_t(b * k + i)]);
      (void)kth;
    }
    if (p == cuda::Precision::fp32) EXPECT_GE(exact_rows, B - 2) << "fp32 should pick the CPU's sets";
  }
}

// Codes with zeros (which CSR/COO drop) for the conversion and decode tests.
cpu::TopKCodes make_codes(int64_t B, int64_t k, int64_t d_sae, uint64_t seed) {
  cpu::TopKCodes c;
  c.rows = B;
  c.k = k;
  c.d_sae = d_sae;
  std::mt19937_64 rng(seed);
  c.indices.resize(size_t(B * k));
  c.values = uniform(size_t(B * k), seed + 1, 0.f, 2.f);
  std::vector<int32_t> perm(static_cast<size_t>(d_sae));
  for (int64_t b = 0; b < B; ++b) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t i = 0; i < k; ++i) {
      c.indices[size_t(b * k + i)] = perm[size_t(i)];
      if ((b + i) % 5 == 2) c.values[size_t(b * k + i)] = 0.f;  // L0 < k
    }
  }
  return c;
}

TEST(CudaSparse, CsrAndCooMatchCpu) {
  SKIP_WITHOUT_GPU();
  const cpu::TopKCodes c = make_codes(77, 13, 999, 31);
  const cpu::Csr rc = cpu::topk_to_csr(c);
  const cpu::Coo ro = cpu::topk_to_coo(c);
  cuda::Context ctx;
  const cuda::TopKCodes dc = cuda::TopKCodes::upload(c);
  cuda::Csr csr;
  cuda::topk_to_csr(ctx, dc, csr);
  const cpu::Csr gc = csr.download(ctx);
  EXPECT_EQ(gc.rows, rc.rows);
  EXPECT_EQ(gc.cols, rc.cols);
  EXPECT_EQ(gc.indptr, rc.indptr);
  EXPECT_EQ(gc.indices, rc.indices);
  EXPECT_EQ(gc.values, rc.values);
  EXPECT_LT(int64_t(gc.values.size()), c.rows * c.k);  // zeros were dropped
  EXPECT_NONZERO(gc.values);
  cuda::Coo coo;
  cuda::topk_to_coo(ctx, dc, coo);
  const cpu::Coo go = coo.download(ctx);
  EXPECT_EQ(go.row, ro.row);
  EXPECT_EQ(go.col, ro.col);
  EXPECT_EQ(go.values, ro.values);
}

// Decode three (four) ways vs the CPU: gather over pairs, cuSPARSE CSR and COO, dense cuBLAS.
// d_in 67 takes the scalar gather path, 132 the float4 path; k 300 crosses the staging chunk.
TEST(CudaDecode, AllWaysMatchCpu) {
  SKIP_WITHOUT_GPU();
  const struct {
    int64_t d_in, d_sae, k, B;
  } shapes[] = {{67, 501, 9, 23}, {132, 1111, 300, 5}, {8, 40, 40, 3}, {260, 777, 33, 29}};
  for (auto s : shapes) {
    SCOPED_TRACE(::testing::Message() << "d_in=" << s.d_in << " d_sae=" << s.d_sae << " k=" << s.k);
    const Sae sae = random_sae(s.d_in, s.d_sae, s.k, 41 + uint64_t(s.d_in));
    const cpu::TopKCodes c = make_codes(s.B, s.k, s.d_sae, 43);
    std::vector<float> ref(size_t(s.B * s.d_in));
    cpu::decode_topk(sae, c, ref.data());
    EXPECT_NONZERO(ref);

    cuda::Context ctx;
    const cuda::DeviceSae ds = cuda::DeviceSae::upload(sae);
    const cuda::TopKCodes dc = cuda::TopKCodes::upload(c);
    DevVec<float> out(std::vector<float>(size_t(s.B * s.d_in), NAN));  // poisoned: every element must be written
    const double atol = 1e-4, rtol = 1e-4;

    cuda::decode_topk(ctx, ds, dc, out.p());
    ctx.synchronize();
    std::vector<float> got = out.get();
    EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), atol, rtol) << "gather";
    // Every slab width of the gather kernel: partial token groups (B not a multiple of the 8, 4
    // or 2 tokens per block), partial slabs (d_in not a multiple of 64..512), d_in % 4 != 0.
    for (int tpt : {16, 32, 64, 128}) {
      out = DevVec<float>(std::vector<float>(size_t(s.B * s.d_in), NAN));
      cuda::gather_decode(ctx, ds.w_dec(), ds.bias_dec(), dc.idx(), dc.val(), s.B, s.k, s.k, nullptr, s.d_in,
                          out.p(), s.d_sae, tpt);
      ctx.synchronize();
      got = out.get();
      EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), atol, rtol) << "gather, " << tpt << " threads per token";
      // k from device memory (AuxK's form): only the first k_used pairs of each row count.
      for (int64_t k_used : {s.k / 2, int64_t(0)}) {
        cpu::TopKCodes head = c;
        for (int64_t b = 0; b < s.B; ++b)
          for (int64_t i = k_used; i < s.k; ++i) head.values[size_t(b * s.k + i)] = 0.f;
        std::vector<float> ref_head(size_t(s.B * s.d_in));
        cpu::decode_topk(sae, head, ref_head.data());
        DevVec<int32_t> kd(std::vector<int32_t>{int32_t(k_used)});
        out = DevVec<float>(std::vector<float>(size_t(s.B * s.d_in), NAN));
        cuda::gather_decode(ctx, ds.w_dec(), ds.bias_dec(), dc.idx(), dc.val(), s.B, s.k, s.k, kd.p(), s.d_in,
                            out.p(), s.d_sae, tpt);
        ctx.synchronize();
        got = out.get();
        EXPECT_ALLCLOSE(got.data(), ref_head.data(), ref_head.size(), atol, rtol)
            << "gather with k_dev=" << k_used << ", " << tpt << " threads per token";
      }
    }
    EXPECT_THROW(cuda::gather_decode(ctx, ds.w_dec(), ds.bias_dec(), dc.idx(), dc.val(), s.B, s.k, s.k, nullptr,
                                     s.d_in, out.p(), s.d_sae, 48),
                 Error);

    cuda::Csr csr;
    cuda::topk_to_csr(ctx, dc, csr);
    out = DevVec<float>(std::vector<float>(size_t(s.B * s.d_in), NAN));
    cuda::decode_csr(ctx, ds, csr, out.p());
    ctx.synchronize();
    got = out.get();
    EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), atol, rtol) << "cuSPARSE CSR";

    cuda::Coo coo;
    cuda::topk_to_coo(ctx, dc, coo);
    out = DevVec<float>(std::vector<float>(size_t(s.B * s.d_in), NAN));
    cuda::decode_coo(ctx, ds, coo, out.p());
    ctx.synchronize();
    got = out.get();
    EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), atol, rtol) << "cuSPARSE COO";

    DevVec<float> dz(cpu::topk_to_dense(c));
    out = DevVec<float>(std::vector<float>(size_t(s.B * s.d_in), NAN));
    cuda::decode_dense(ctx, ds, dz.p(), s.B, out.p());
    ctx.synchronize();
    got = out.get();
    EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), atol, rtol) << "dense cuBLAS fp32";
  }
}

// Downloads are ordered after the ops that wrote the data even on a cudaStreamNonBlocking stream
// (which the legacy default stream of a plain cudaMemcpy does not wait for). About 2 GiB of copies
// are queued ahead of each encode, so a download that does not wait reads the previous round's
// codes, which differ from this round's.
TEST(CudaOps, DownloadsWaitForANonBlockingStream) {
  SKIP_WITHOUT_GPU();
  const int64_t d_in = 131, d_sae = 2049, k = 37, B = 45;
  const Sae sae = random_sae(d_in, d_sae, k, 71);
  const std::vector<float> x1 = randn(size_t(B * d_in), 72), x2 = randn(size_t(B * d_in), 73);
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  {
    cuda::Context ctx(reinterpret_cast<Stream>(s));
    const cuda::DeviceSae ds = cuda::DeviceSae::upload(sae);
    DevVec<float> dx1(x1), dx2(x2);
    const size_t big = size_t(256) << 20;
    DeviceBuffer a(big), b(big);
    auto delay = [&] {
      for (int i = 0; i < 8; ++i) cuda::device_copy(ctx, b.data(), a.data(), big);
    };
    // What the codes hold once everything has finished (device-wide sync, then a plain copy).
    auto settled = [&](const cuda::TopKCodes& c) {
      EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<int32_t> v(size_t(c.rows * c.k));
      detail::copy_bytes(v.data(), Device::cpu, c.idx(), Device::cuda, v.size() * 4);
      return v;
    };
    cuda::TopKCodes codes;
    cuda::encode_topk(ctx, ds, dx2.p(), B, cuda::Precision::fp32, codes);  // allocates (and syncs) here
    const std::vector<int32_t> want2 = settled(codes);
    cuda::encode_topk(ctx, ds, dx1.p(), B, cuda::Precision::fp32, codes);
    const std::vector<int32_t> want1 = settled(codes);
    ASSERT_NE(want1, want2) << "the two rounds must differ for this test to see a stale download";

    for (int round = 0; round < 2; ++round) {
      SCOPED_TRACE(round == 0 ? "download(ctx)" : "download()");
      cuda::encode_topk(ctx, ds, dx2.p(), B, cuda::Precision::fp32, codes);
      ctx.synchronize();
      delay();
      cuda::encode_topk(ctx, ds, dx1.p(), B, cuda::Precision::fp32, codes);  // warm: no sync inside
      const cpu::TopKCodes got = round == 0 ? codes.download(ctx) : codes.download();
      EXPECT_EQ(got.indices, want1);
      EXPECT_NONZERO(got.values);
    }
  }
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// encode_topk / topk_to_csr / topk_to_coo keep their buffers when the batch shrinks: no
// allocation (same pointers, same scratch), and the smaller batch's results are those of a fresh
// output.
TEST(CudaOps, OutputsKeepTheirCapacityForASmallerBatch) {
  SKIP_WITHOUT_GPU();
  const int64_t d_in = 67, d_sae = 1001, k = 13, B = 45, Bs = 20;
  const Sae sae = random_sae(d_in, d_sae, k, 81);
  const std::vector<float> x = randn(size_t(B * d_in), 82);
  cuda::Context ctx;
  const cuda::DeviceSae ds = cuda::DeviceSae::upload(sae);
  DevVec<float> dx(x);
  cuda::TopKCodes codes;
  cuda::Csr csr;
  cuda::Coo coo;
  cuda::encode_topk(ctx, ds, dx.p(), B, cuda::Precision::fp32, codes);
  cuda::topk_to_csr(ctx, codes, csr);
  cuda::topk_to_coo(ctx, codes, coo);
  ctx.synchronize();
  const void* p[] = {codes.indices.data(), codes.values.data(), csr.indptr.data(), csr.indices.data(),
                     csr.values.data(),    coo.row.data(),      coo.col.data(),    coo.values.data(),
                     coo.count.data()};
  const size_t scratch = ctx.scratch_bytes();

  cuda::encode_topk(ctx, ds, dx.p(), Bs, cuda::Precision::fp32, codes);
  cuda::topk_to_csr(ctx, codes, csr);
  cuda::topk_to_coo(ctx, codes, coo);
  const void* q[] = {codes.indices.data(), codes.values.data(), csr.indptr.data(), csr.indices.data(),
                     csr.values.data(),    coo.row.data(),      coo.col.data(),    coo.values.data(),
                     coo.count.data()};
  for (size_t i = 0; i < std::size(p); ++i) EXPECT_EQ(q[i], p[i]) << "buffer " << i << " was reallocated";
  EXPECT_EQ(ctx.scratch_bytes(), scratch);
  EXPECT_EQ(codes.rows, Bs);
  EXPECT_EQ(csr.rows, Bs);
  EXPECT_EQ(coo.rows, Bs);

  const cpu::TopKCodes small = codes.download(ctx);
  cuda::TopKCodes fresh;
  cuda::encode_topk(ctx, ds, dx.p(), Bs, cuda::Precision::fp32, fresh);
  const cpu::TopKCodes want = fresh.download(ctx);
  ASSERT_EQ(small.indices.size(), size_t(Bs * k));
  EXPECT_EQ(small.indices, want.indices);
  EXPECT_EQ(small.values, want.values);
  EXPECT_NONZERO(small.values);
  const cpu::Csr gc = csr.download(ctx);
  const cpu::Csr rc = cpu::topk_to_csr(small);
  EXPECT_EQ(gc.rows, Bs);
  EXPECT_EQ(gc.indptr, rc.indptr);
  EXPECT_EQ(gc.indices, rc.indices);
  EXPECT_EQ(gc.values, rc.values);
  const cpu::Coo go = coo.download(ctx);
  const cpu::Coo ro = cpu::topk_to_coo(small);
  EXPECT_EQ(go.row, ro.row);
  EXPECT_EQ(go.col, ro.col);
  EXPECT_EQ(go.values, ro.values);
}

// decode_topk on codes naming latents outside [0, d_sae): the CPU twin throws; the CUDA twin
// cannot without a synchronisation, so it never reads outside W_dec and such a pair adds nothing
// (the inference API refuses such codes on both engines, see test_api_cuda.cpp).
TEST(CudaOps, DecodeSkipsOutOfRangeLatents) {
  SKIP_WITHOUT_GPU();
  const struct {
    int64_t d_in, d_sae, k, B;
  } shapes[] = {{67, 501, 9, 23}, {132, 777, 300, 5}};  // scalar and float4 paths; k crosses a chunk
  for (auto sh : shapes) {
    SCOPED_TRACE(::testing::Message() << "d_in=" << sh.d_in << " k=" << sh.k);
    const Sae sae = random_sae(sh.d_in, sh.d_sae, sh.k, 91);
    cpu::TopKCodes bad = make_codes(sh.B, sh.k, sh.d_sae, 93);
    const int32_t wild[] = {-1, int32_t(sh.d_sae), INT32_MAX, INT32_MIN};
    for (size_t i = 0; i < std::size(wild); ++i) {
      const size_t at = size_t(int64_t(i) * (sh.B - 1) / 3 * sh.k + int64_t(i));  // rows 0 .. B-1
      bad.indices[at] = wild[i];
      bad.values[at] = 1.5f;
    }
    std::vector<float> ref(size_t(sh.B * sh.d_in));
    EXPECT_THROW(cpu::decode_topk(sae, bad, ref.data()), Error);
    cpu::TopKCodes clean = bad;
    for (size_t i = 0; i < clean.indices.size(); ++i)
      if (clean.indices[i] < 0 || clean.indices[i] >= sh.d_sae) {
        clean.indices[i] = 0;
        clean.values[i] = 0.f;
      }
    cpu::decode_topk(sae, clean, ref.data());
    EXPECT_NONZERO(ref);

    cuda::Context ctx;
    const cuda::DeviceSae ds = cuda::DeviceSae::upload(sae);
    const cuda::TopKCodes dc = cuda::TopKCodes::upload(bad);
    DevVec<float> out(std::vector<float>(size_t(sh.B * sh.d_in), NAN));
    cuda::decode_topk(ctx, ds, dc, out.p());
    ASSERT_NO_THROW(ctx.synchronize());
    const std::vector<float> got = out.get();
    EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), 1e-4, 1e-4);
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// The gather kernel over CSR rows (the inference engine's decode of CSR codes) against the CPU's
// decode_csr: rows of different lengths in one block (empty rows, rows past the 256-pair staging
// chunk), every slab width, scalar (d_in 67) and float4 (d_in 132) paths; zero values add nothing.
TEST(CudaDecode, GatherOverCsrRowsMatchesCpu) {
  SKIP_WITHOUT_GPU();
  for (int64_t d_in : {int64_t(67), int64_t(132)}) {
    SCOPED_TRACE(::testing::Message() << "d_in=" << d_in);
    const int64_t d_sae = 700, B = 11;
    const Sae sae = random_sae(d_in, d_sae, 8, 101);
    const int64_t lengths[B] = {3, 0, 300, 1, 17, 0, 260, 5, 9, 513, 2};
    cpu::Csr c;
    c.rows = B;
    c.cols = d_sae;
    c.indptr.push_back(0);
    std::mt19937_64 rng(103);
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int32_t> perm(static_cast<size_t>(d_sae));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int64_t i = 0; i < lengths[b]; ++i) {
        c.indices.push_back(perm[size_t(i)]);
        c.values.push_back(i % 7 == 3 ? 0.f : float(int64_t(rng() % 1000) + 1) * 1e-3f);
      }
      c.indptr.push_back(int64_t(c.indices.size()));
    }
    std::vector<float> ref(size_t(B * d_in));
    cpu::decode_csr(sae, c, ref.data());
    EXPECT_NONZERO(ref);

    cuda::Context ctx;
    const cuda::DeviceSae ds = cuda::DeviceSae::upload(sae);
    DevVec<int64_t> ptr(c.indptr);
    DevVec<int32_t> idx(c.indices);
    DevVec<float> val(c.values);
    for (int tpt : {0, 16, 32, 64, 128}) {
      DevVec<float> out(std::vector<float>(size_t(B * d_in), NAN));  // poisoned
      cuda::gather_decode_csr(ctx, ds.w_dec(), ds.bias_dec(), ptr.p(), idx.p(), val.p(), B, d_in, out.p(), d_sae, tpt);
      ctx.synchronize();
      const std::vector<float> got = out.get();
      EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), 1e-4, 1e-4) << tpt << " threads per token";
    }
  }
}

// The device-side checks of caller codes: each flags exactly the bad input.
TEST(CudaDecode, DeviceChecksOfCallerCodes) {
  SKIP_WITHOUT_GPU();
  cuda::Context ctx;
  auto latents_bad = [&](std::vector<int32_t> v, int64_t n_rows) {
    DevVec<int32_t> idx(v);
    DevVec<int32_t> flag(std::vector<int32_t>{0});
    cuda::check_latents(ctx, idx.p(), int64_t(v.size()), n_rows, flag.p());
    ctx.synchronize();
    return flag.get()[0];
  };
  auto indptr_bad = [&](std::vector<int64_t> v) {
    DevVec<int64_t> p(v);
    DevVec<int32_t> flag(std::vector<int32_t>{0});
    cuda::check_indptr(ctx, p.p(), int64_t(v.size()) - 1, flag.p());
    ctx.synchronize();
    return flag.get()[0];
  };
  std::vector<int32_t> ok(1000);
  std::iota(ok.begin(), ok.end(), 0);
  EXPECT_EQ(latents_bad(ok, 1000), 0);
  EXPECT_EQ(latents_bad(ok, 999), 1);
  ok[517] = -1;
  EXPECT_EQ(latents_bad(ok, 1000), 1);
  std::vector<int64_t> ptr(700);
  std::iota(ptr.begin(), ptr.end(), int64_t(0));
  EXPECT_EQ(indptr_bad(ptr), 0);
  ptr[433] = 500;  // then 434: decreasing
  EXPECT_EQ(indptr_bad(ptr), 1);
  std::iota(ptr.begin(), ptr.end(), int64_t(1));  // indptr[0] != 0
  EXPECT_EQ(indptr_bad(ptr), 1);
}

// The helpers the bf16 mode and the benches rely on: f32 -> bf16 rounds to nearest even exactly
// as the host conversion; device_copy copies every byte; fill_random is seeded and non-trivial.
TEST(CudaHelpers, Bf16CopyAndRandomFill) {
  SKIP_WITHOUT_GPU();
  std::vector<float> x = randn(1001, 51, 3.f);
  x.insert(x.end(), {0.f, -0.f, 1e-40f, -1e-40f, 3.0e38f, -INFINITY, INFINITY, 1.00390625f, 1.01171875f});
  cuda::Context ctx;
  DevVec<float> dx(x);
  DevVec<uint16_t> d16(x.size());
  cuda::to_bf16(ctx, dx.p(), d16.p(), int64_t(x.size()));
  ctx.synchronize();
  const std::vector<uint16_t> got = d16.get();
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(got[i], f32_to_bf16(x[i])) << "x=" << x[i];

  const std::vector<float> src = randn(4096 + 12, 52);  // bytes a multiple of 16, not of the block
  DevVec<float> a(src), b(std::vector<float>(src.size(), -1.f));
  cuda::device_copy(ctx, b.p(), a.p(), src.size() * 4);
  ctx.synchronize();
  EXPECT_EQ(b.get(), src);

  DevVec<float> r1(size_t(5000)), r2(size_t(5000)), r3(size_t(5000));
  cuda::fill_random(ctx, r1.p(), 5000, 7, 2.f);
  cuda::fill_random(ctx, r2.p(), 5000, 7, 2.f);
  cuda::fill_random(ctx, r3.p(), 5000, 8, 2.f);
  ctx.synchronize();
  const auto v1 = r1.get(), v2 = r2.get(), v3 = r3.get();
  EXPECT_EQ(v1, v2);
  EXPECT_NE(v1, v3);
  double m = 0, s2 = 0;
  for (float v : v1) {
    ASSERT_TRUE(std::isfinite(v));
    m += v;
    s2 += double(v) * v;
  }
  m /= 5000;
  EXPECT_NEAR(m, 0.0, 0.15);
  EXPECT_NEAR(std::sqrt(s2 / 5000 - m * m), 2.0, 0.15);
}

// A Context's handles live on the device that was current at construction: a stream of another
// device is refused there and in set_stream (needs two GPUs).
TEST(CudaOps, ContextRefusesAnotherDevicesStream) {
  SKIP_WITHOUT_GPU();
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs two CUDA devices";
  int prev = 0;
  ASSERT_EQ(cudaGetDevice(&prev), cudaSuccess);
  const int other_dev = prev == 0 ? 1 : 0;
  ASSERT_EQ(cudaSetDevice(other_dev), cudaSuccess);
  cudaStream_t other = nullptr;
  ASSERT_EQ(cudaStreamCreate(&other), cudaSuccess);
  ASSERT_EQ(cudaSetDevice(prev), cudaSuccess);
  EXPECT_THROW(cuda::Context bad(reinterpret_cast<Stream>(other)), Error);
  cuda::Context ctx;
  EXPECT_EQ(ctx.device(), prev);
  EXPECT_THROW(ctx.set_stream(reinterpret_cast<Stream>(other)), Error);
  EXPECT_EQ(ctx.stream(), nullptr);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(other), cudaSuccess);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaOps, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif

// The chunking rule of the encoder GEMM + top-k (host arithmetic: runs in every build).
TEST(EncodeChunkRows, BoundsThePreActivationsOfAChunk) {
  using topksae::cuda::encode_chunk_rows;
  using topksae::cuda::kEncodeChunkBytes;
  // PERF.md's shapes at batch 4096: 1 GiB of h becomes 4 chunks of 1024 rows; 403 MB, 2 of 2048.
  EXPECT_EQ(encode_chunk_rows(65536, 4096, 0), 1024);
  EXPECT_EQ(encode_chunk_rows(24576, 4096, 0), 2048);
  EXPECT_EQ(encode_chunk_rows(24576, 100, 0), 100) << "a small h takes the whole batch";
  EXPECT_EQ(encode_chunk_rows(65536, 4096, -1), 4096);
  EXPECT_EQ(encode_chunk_rows(65536, 4096, 192), 192);
  EXPECT_EQ(encode_chunk_rows(65536, 100, 192), 100) << "capped at the batch";
  EXPECT_EQ(encode_chunk_rows(65536, 0, 0), 1);
  // Any shape: a chunk fits the budget up to the rounding, rows are a multiple of 4 unless
  // they are the whole batch, and the chunk count is the fewest that fit.
  for (int64_t n : {int64_t(1000), int64_t(65536), int64_t(1) << 20, int64_t(3) << 21})
    for (int64_t B : {int64_t(1), int64_t(7), int64_t(1023), int64_t(4096), int64_t(5001)}) {
      SCOPED_TRACE(::testing::Message() << "d_sae " << n << ", batch " << B);
      const int64_t r = encode_chunk_rows(n, B, 0);
      ASSERT_GE(r, 1);
      ASSERT_LE(r, B);
      if (r < B) {
        EXPECT_EQ(r % 4, 0);
        EXPECT_LT(r * n * 4, kEncodeChunkBytes + 4 * n * 4) << "over the budget by more than the rounding to 4 rows";
      } else {
        EXPECT_TRUE(B * n * 4 <= kEncodeChunkBytes || B <= 4) << "whole batch only when it fits";
      }
      const int64_t chunks = (B + r - 1) / r, fewest = (B * n * 4 + kEncodeChunkBytes - 1) / kEncodeChunkBytes;
      EXPECT_LE(chunks, std::max<int64_t>(fewest, 1));
    }
}
