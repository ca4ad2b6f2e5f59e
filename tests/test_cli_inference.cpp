// The code behind `topksae encode / decode / eval` (tools/topksae/cli_inference.h) on the
// inference API: on a CPU model it gives exactly (bit for bit) what the commands computed with the
// CPU twins before they were wired through the API; on a CUDA model (CudaCli.*, skipped without a
// GPU) the same indices as the CPU and values, reconstructions and metrics within float rounding.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "cli_inference.h"
#include "precision_check.h"
#include "test_util.h"
#include "topksae/ops_cpu.h"
#include "topksae/safetensors.h"

namespace topksae::test {
namespace {

constexpr int64_t kDin = 37, kDsae = 203, kK = 7, kRows = 301, kBatch = 128;  // batches 128, 128, 45
constexpr double kTieGap = 2e-5;  // far above fp32 GEMM rounding at d_in 37 (pre-activations are O(1))

// Activations where every 10th row is tiny, so its pre-activations are all below 0 (b_enc is
// shifted down) and its top-k values are 0: CSR drops them, top-k pairs keep them.
struct Case {
  Sae sae;
  std::vector<float> x;  // [kRows, kDin]
};
Case make_case(Normalize norm = Normalize::none) {
  Case c{random_sae(kDin, kDsae, kK, 11, norm), randn(size_t(kRows * kDin), 12)};
  for (float& b : c.sae.params.b_enc) b -= 0.3f;
  for (int64_t r = 0; r < kRows; r += 10)
    for (int64_t i = 0; i < kDin; ++i) c.x[size_t(r * kDin + i)] *= 1e-3f;
  return c;
}

cli::Features encode_in_batches(const Model& m, const std::vector<float>& x, bool csr) {
  cli::FeatureEncoder enc(m, csr);
  for (int64_t b0 = 0; b0 < kRows; b0 += kBatch) enc.add(x.data() + b0 * kDin, std::min(kBatch, kRows - b0));
  return enc.features();
}

bool same_bits(const void* a, const void* b, size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

EvalMetrics eval_in_batches(const Model& m, const std::vector<float>& x) {
  cli::EvalRunner run(m);
  for (int64_t b0 = 0; b0 < kRows; b0 += kBatch) run.add(x.data() + b0 * kDin, std::min(kBatch, kRows - b0));
  return run.result(20);
}

// The loop `topksae eval` ran before the API: cpu::forward and cpu::encode_topk per batch.
EvalMetrics eval_with_twins(const Sae& sae, const std::vector<float>& x) {
  MetricsAccumulator acc(kDin, kDsae);
  std::vector<float> xhat(size_t(kBatch * kDin));
  for (int64_t b0 = 0; b0 < kRows; b0 += kBatch) {
    const int64_t n = std::min(kBatch, kRows - b0);
    cpu::forward(sae, x.data() + b0 * kDin, n, xhat.data());
    acc.add(x.data() + b0 * kDin, xhat.data(), cpu::encode_topk(sae, x.data() + b0 * kDin, n));
  }
  return acc.result(20);
}

// Smallest gap between neighbours among each row's k+1 largest pre-activations, and between the k
// largest and 0: above the GEMM's rounding differences, the GPU must pick (and order) the same
// latents as the CPU, and zero the same ones.
double min_top_gap(const Sae& sae, const std::vector<float>& x) {
  std::vector<float> u(size_t(kRows * kDin)), h(size_t(kRows * kDsae));
  cpu::process_sae_in(sae, x.data(), kRows, u.data(), nullptr);
  cpu::encode_pre(sae, u.data(), kRows, h.data());
  double gap = INFINITY;
  for (int64_t b = 0; b < kRows; ++b) {
    std::vector<float> row(h.begin() + b * kDsae, h.begin() + (b + 1) * kDsae);
    std::sort(row.begin(), row.end(), std::greater<float>());
    for (int64_t i = 0; i < kK; ++i)
      gap = std::min({gap, double(row[size_t(i)]) - double(row[size_t(i + 1)]), std::abs(double(row[size_t(i)]))});
  }
  return gap;
}

// The CudaCli tests' data must be tie-free for them to mean anything; checked here, without a GPU.
TEST(CliInference, TestDataIsTieFree) {
  for (Normalize norm : {Normalize::none, Normalize::layer_norm}) {
    Case c = make_case(norm);
    EXPECT_GT(min_top_gap(c.sae, c.x), kTieGap) << normalize_name(norm);
  }
}

TEST(CliInference, CpuEncodeIsTheTwinsBitForBit) {
  Case c = make_case();
  auto m = Model::from_sae(c.sae);
  const cpu::TopKCodes ref = cpu::encode_topk(c.sae, c.x.data(), kRows);
  const cli::Features topk = encode_in_batches(*m, c.x, false);
  ASSERT_EQ(topk.rows, kRows);
  ASSERT_EQ(topk.indices, ref.indices);
  ASSERT_EQ(topk.values.size(), ref.values.size());
  EXPECT_TRUE(same_bits(topk.values.data(), ref.values.data(), ref.values.size() * 4));
  EXPECT_NONZERO(topk.values);

  const cpu::Csr sref = cpu::topk_to_csr(ref);
  const cli::Features csr = encode_in_batches(*m, c.x, true);
  ASSERT_LT(sref.indptr.back(), kRows * kK) << "the test data should have zeros for CSR to drop";
  EXPECT_EQ(csr.indptr, sref.indptr);
  EXPECT_EQ(csr.indices, sref.indices);
  ASSERT_EQ(csr.values.size(), sref.values.size());
  EXPECT_TRUE(same_bits(csr.values.data(), sref.values.data(), sref.values.size() * 4));
}

// `topksae encode` streams its file (FeatureFileWriter): the bytes are those it wrote when it
// gathered every row and wrote them with SafetensorsWriter, for both formats and every values dtype.
TEST(CliInference, StreamedFeatureFileIsTheGatheredOneByteForByte) {
  Case c = make_case();
  auto m = Model::from_sae(c.sae);
  TempDir tmp("topksae_feats");
  for (bool csr : {false, true})
    for (DType vdt : {DType::f32, DType::f16, DType::bf16}) {
      SCOPED_TRACE(std::string(csr ? "csr " : "topk ") + std::string(dtype_name(vdt)));
      // The writing `topksae encode` did before it streamed.
      const cli::Features f = encode_in_batches(*m, c.x, csr);
      SafetensorsWriter ref;
      if (!csr) {
        ref.add("indices", DType::i32, {f.rows, kK}, f.indices.data());
        ref.add_f32("values", {f.rows, kK}, f.values.data(), vdt);
      } else {
        ref.add("indptr", DType::i64, {f.rows + 1}, f.indptr.data());
        ref.add("indices", DType::i32, {int64_t(f.indices.size())}, f.indices.data());
        ref.add_f32("values", {int64_t(f.values.size())}, f.values.data(), vdt);
      }
      ref.set_metadata("format", csr ? "csr" : "topk");
      ref.set_metadata("k", std::to_string(kK));

      const auto path = tmp.path / "f.safetensors";
      cli::FeatureFileWriter out(path, csr, kK, vdt);
      cli::FeatureEncoder enc(*m, csr, [&](const cli::Features& b) { out.append(b); });
      for (int64_t b0 = 0; b0 < kRows; b0 += kBatch) enc.add(c.x.data() + b0 * kDin, std::min(kBatch, kRows - b0));
      EXPECT_EQ(enc.features().rows, 0) << "a streaming encoder gathers nothing";
      out.set_metadata("k", std::to_string(kK));
      out.set_metadata("format", csr ? "csr" : "topk");
      out.finish();
      EXPECT_EQ(out.rows(), kRows);
      EXPECT_EQ(out.entries(), int64_t(f.indices.size()));
      std::ifstream in(path, std::ios::binary);
      const std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      const std::string want = ref.to_bytes();
      ASSERT_GT(want.size(), size_t(kRows * 4));
      EXPECT_TRUE(got == want) << got.size() << " bytes vs " << want.size();
      EXPECT_NONZERO(f.values);
    }
}

TEST(CliInference, CpuDecodeIsTheTwinsBitForBit) {
  Case c = make_case();
  auto m = Model::from_sae(c.sae);
  const cpu::TopKCodes codes = cpu::encode_topk(c.sae, c.x.data(), kRows);
  const cpu::Csr csr = cpu::topk_to_csr(codes);
  std::vector<float> ref(size_t(kRows * kDin)), got(ref.size(), -1.f);
  cpu::decode_topk(c.sae, codes, ref.data());
  cli::decode_topk_rows(*m, codes.indices.data(), codes.values.data(), kRows, kK, got.data(), 100);
  EXPECT_TRUE(same_bits(got.data(), ref.data(), ref.size() * 4));
  EXPECT_NONZERO(got);
  cpu::decode_csr(c.sae, csr, ref.data());
  for (cli::CsrDecode how : {cli::CsrDecode::automatic, cli::CsrDecode::native, cli::CsrDecode::as_pairs}) {
    std::fill(got.begin(), got.end(), -1.f);
    cli::decode_csr_rows(*m, csr.indptr.data(), csr.indices.data(), csr.values.data(), kRows, got.data(), 100, how);
    EXPECT_TRUE(same_bits(got.data(), ref.data(), ref.size() * 4)) << int(how);
  }

  // width 0 decodes to b_dec (the API itself needs a width >= 1)
  cli::decode_topk_rows(*m, nullptr, nullptr, 3, 0, got.data(), 100);
  for (int64_t i = 0; i < 3 * kDin; ++i) EXPECT_EQ(got[size_t(i)], c.sae.params.b_dec[size_t(i % kDin)]);

  // A bad indptr is refused before any batch reads past indices.
  std::vector<int64_t> bad = csr.indptr;
  bad[150] = bad.back() + 1000;  // inside the first batches, beyond nnz: found as a decrease later
  EXPECT_THROW(cli::decode_csr_rows(*m, bad.data(), csr.indices.data(), csr.values.data(), kRows, got.data(), 100),
               Error);
  bad = csr.indptr;
  bad[0] = 1;
  EXPECT_THROW(cli::decode_csr_rows(*m, bad.data(), csr.indices.data(), csr.values.data(), kRows, got.data(), 100),
               Error);
  std::vector<int32_t> bad_idx = csr.indices;
  bad_idx.back() = int32_t(kDsae);
  EXPECT_THROW(cli::decode_csr_rows(*m, csr.indptr.data(), bad_idx.data(), csr.values.data(), kRows, got.data(), 100),
               Error);
}

TEST(CliInference, CpuEvalIsTheTwinsBitForBit) {
  for (Normalize norm : {Normalize::none, Normalize::layer_norm}) {
    Case c = make_case(norm);
    auto m = Model::from_sae(c.sae);
    const EvalMetrics got = eval_in_batches(*m, c.x), ref = eval_with_twins(c.sae, c.x);
    EXPECT_EQ(got.to_json(), ref.to_json());
    EXPECT_EQ(got.log10_density, ref.log10_density);
    EXPECT_GT(got.l0, 0);
    EXPECT_GT(got.mse, 0);
  }
}

// ---- the same on a CUDA model --------------------------------------------------------------------

std::shared_ptr<const Model> on_gpu(const Sae& sae, const char* precision = "fp32") {
  ModelOptions o;
  o.device = Device::cuda;
  o.cuda_precision = precision;
  return Model::from_sae(sae, o);
}

TEST(CudaCli, EncodeMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  Case c = make_case();
  ASSERT_GT(min_top_gap(c.sae, c.x), kTieGap) << "near-tied data: the test could not tell a bug from rounding";
  auto cpu_model = Model::from_sae(c.sae);
  auto gpu_model = on_gpu(c.sae);
  for (bool csr : {false, true}) {
    SCOPED_TRACE(csr ? "csr" : "topk");
    const cli::Features ref = encode_in_batches(*cpu_model, c.x, csr), got = encode_in_batches(*gpu_model, c.x, csr);
    EXPECT_EQ(got.rows, ref.rows);
    EXPECT_EQ(got.indptr, ref.indptr);
    EXPECT_EQ(got.indices, ref.indices);
    ASSERT_EQ(got.values.size(), ref.values.size());
    EXPECT_ALLCLOSE(got.values.data(), ref.values.data(), ref.values.size(), 1e-5, 1e-5);
    EXPECT_NONZERO(got.values);
  }
  // tf32 / bf16 (their latents may differ where pre-activations nearly tie): distinct latents per
  // row, each a CPU winner up to near-ties, values within the precision's tolerance of the CPU
  // (tests/precision_check.h), and most latents the CPU's.
  for (const char* p : {"tf32", "bf16"}) {
    SCOPED_TRACE(p);
    const cli::Features got = encode_in_batches(*on_gpu(c.sae, p), c.x, false);
    ASSERT_EQ(got.rows, kRows);
    ASSERT_EQ(got.indices.size(), size_t(kRows * kK));
    ASSERT_EQ(got.values.size(), size_t(kRows * kK));
    EXPECT_NONZERO(got.values);
    const int64_t winners =
        expect_topk_near_cpu(c.sae, c.x.data(), kRows, got.indices.data(), got.values.data(), precision_tol(p));
    EXPECT_GE(double(winners), 0.8 * double(kRows * kK)) << "latents among the CPU's top k";
  }
}

TEST(CudaCli, DecodeMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  Case c = make_case();
  auto cpu_model = Model::from_sae(c.sae);
  auto gpu_model = on_gpu(c.sae);
  const cpu::TopKCodes codes = cpu::encode_topk(c.sae, c.x.data(), kRows);
  const cpu::Csr csr = cpu::topk_to_csr(codes);
  std::vector<float> ref(size_t(kRows * kDin)), got(ref.size());
  cli::decode_topk_rows(*cpu_model, codes.indices.data(), codes.values.data(), kRows, kK, ref.data(), 100);
  cli::decode_topk_rows(*gpu_model, codes.indices.data(), codes.values.data(), kRows, kK, got.data(), 100);
  EXPECT_ALLCLOSE(got.data(), ref.data(), ref.size(), 1e-5, 1e-5);
  EXPECT_NONZERO(got);
  // A CSR file decodes bit for bit as the top-k file it came from (`topksae decode` on either).
  std::vector<float> from_csr(ref.size(), 0.f);
  cli::decode_csr_rows(*gpu_model, csr.indptr.data(), csr.indices.data(), csr.values.data(), kRows, from_csr.data(),
                       100);
  EXPECT_TRUE(std::memcmp(from_csr.data(), got.data(), got.size() * 4) == 0);
  // The API's own CSR decode (cuSPARSE) agrees to rounding.
  cli::decode_csr_rows(*gpu_model, csr.indptr.data(), csr.indices.data(), csr.values.data(), kRows, from_csr.data(),
                       100, cli::CsrDecode::native);
  EXPECT_ALLCLOSE(from_csr.data(), ref.data(), ref.size(), 1e-5, 1e-5);
}

TEST(CudaCli, EvalMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  for (Normalize norm : {Normalize::none, Normalize::layer_norm}) {
    Case c = make_case(norm);
    ASSERT_GT(min_top_gap(c.sae, c.x), kTieGap);
    const EvalMetrics ref = eval_in_batches(*Model::from_sae(c.sae), c.x), got = eval_in_batches(*on_gpu(c.sae), c.x);
    EXPECT_EQ(got.l0, ref.l0);
    EXPECT_EQ(got.dead, ref.dead);
    EXPECT_EQ(got.log10_density, ref.log10_density);
    for (auto [g, r] : {std::pair{got.mse, ref.mse}, {got.explained_variance, ref.explained_variance},
                        {got.cosine_similarity, ref.cosine_similarity}, {got.l1, ref.l1}, {got.l2_ratio, ref.l2_ratio}})
      EXPECT_NEAR(g, r, 1e-5 + 1e-4 * std::abs(r));
    EXPECT_GT(got.mse, 0);
  }
}

}  // namespace
}  // namespace topksae::test
