// The pointer forms of the CUDA sparse conversions (kernels/sparse_convert.cu: topk_row_offsets,
// compact_topk, topk_to_dense), which the containers' topk_to_csr / topk_to_coo and the inference
// engine share, against the CPU twins (src/cpu/sparse_convert.cpp). Rows and k are not multiples
// of a warp; a third of the values are zero (dropped by CSR / COO).
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <numeric>
#include <random>

#include "cuda_test_util.h"
#include "topksae/ops_cpu.h"
#include "topksae/ops_cuda.h"

namespace topksae::test {
namespace {

cpu::TopKCodes codes_with_zeros(int64_t B, int64_t k, int64_t d_sae, uint64_t seed) {
  cpu::TopKCodes c{B, k, d_sae, std::vector<int32_t>(size_t(B * k)), uniform(size_t(B * k), seed + 1, 0.5f, 2.f)};
  std::mt19937_64 rng(seed);
  std::vector<int32_t> perm(static_cast<size_t>(d_sae));
  for (int64_t b = 0; b < B; ++b) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t i = 0; i < k; ++i) {
      c.indices[size_t(b * k + i)] = perm[size_t(i)];
      if ((b * 7 + i) % 3 == 1) c.values[size_t(b * k + i)] = 0.f;
    }
  }
  for (int64_t i = 0; i < k; ++i) c.values[size_t(2 * k + i)] = 0.f;  // an empty row
  return c;
}

TEST(CudaSparseConvert, PointerFormsMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  const int64_t B = 37, k = 45, n = 301;
  const cpu::TopKCodes c = codes_with_zeros(B, k, n, 3);
  const cpu::Csr csr = cpu::topk_to_csr(c);
  const cpu::Coo coo = cpu::topk_to_coo(c);
  const int64_t nnz = csr.indptr.back();
  ASSERT_GT(nnz, 0);
  ASSERT_LT(nnz, B * k);

  cuda::Context ctx;
  DevVec<int32_t> idx(c.indices);
  DevVec<float> val(c.values);
  DevVec<int64_t> offsets(std::vector<int64_t>(size_t(B + 1), -1));
  cuda::topk_row_offsets(ctx, val.p(), B, k, offsets.p());
  ctx.synchronize();
  EXPECT_EQ(offsets.get(), csr.indptr);

  DevVec<int64_t> rows(std::vector<int64_t>(size_t(nnz), -1));
  DevVec<int32_t> cols(std::vector<int32_t>(size_t(nnz), -1));
  DevVec<float> vals(std::vector<float>(size_t(nnz), -1.f));
  cuda::compact_topk(ctx, idx.p(), val.p(), B, k, offsets.p(), rows.p(), cols.p(), vals.p());
  ctx.synchronize();
  EXPECT_EQ(rows.get(), coo.row);
  EXPECT_EQ(cols.get(), csr.indices);
  EXPECT_EQ(vals.get(), csr.values);
  // Without the row output (CSR), the same columns and values.
  DevVec<int32_t> cols2(std::vector<int32_t>(size_t(nnz), -1));
  DevVec<float> vals2(std::vector<float>(size_t(nnz), -1.f));
  cuda::compact_topk(ctx, idx.p(), val.p(), B, k, offsets.p(), nullptr, cols2.p(), vals2.p());
  ctx.synchronize();
  EXPECT_EQ(cols2.get(), csr.indices);
  EXPECT_EQ(vals2.get(), csr.values);

  const std::vector<float> dense = cpu::topk_to_dense(c);
  EXPECT_NONZERO(dense);
  DevVec<float> z(std::vector<float>(dense.size(), NAN));  // poisoned: the zeros must be written too
  cuda::topk_to_dense(ctx, idx.p(), val.p(), B, k, n, z.p());
  ctx.synchronize();
  EXPECT_EQ(z.get(), dense);
}

}  // namespace
}  // namespace topksae::test

#else
TEST(CudaSparseConvert, BuiltWithoutCuda) { GTEST_SKIP() << "topksae was built without its CUDA backend"; }
#endif
