// CPU inference ops: process_sae_in, encode_topk/encode_dense, the top-k rule, decode in every
// representation, forward, and their error paths.
#include <cmath>

#include "test_util.h"
#include "topksae/error.h"
#include "topksae/ops_cpu.h"

using namespace topksae;
using namespace topksae::test;

namespace {
// Brute-force reference in double: pre-activations of one row.
std::vector<double> pre_ref(const Sae& s, const float* x) {
  const int64_t d = s.cfg.d_in, n = s.cfg.d_sae;
  std::vector<double> h(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    double acc = s.params.b_enc[size_t(j)];
    for (int64_t i = 0; i < d; ++i)
      acc += (double(x[i]) - (s.cfg.apply_b_dec_to_input ? s.params.b_dec[size_t(i)] : 0.0)) *
             s.params.W_enc[size_t(i * n + j)];
    h[size_t(j)] = acc;
  }
  return h;
}
}  // namespace

TEST(EncodeTopK, IndexSetsMatchBruteForceAtOddSizes) {
  for (auto [d_in, d_sae, k, B] : {std::tuple{37, 1000, 7, 23}, std::tuple{64, 333, 1, 5}, std::tuple{19, 257, 64, 9}}) {
    Sae s = random_sae(d_in, d_sae, k, 100 + d_sae);
    auto x = randn(size_t(B * d_in), 7 + k);
    cpu::TopKCodes c = cpu::encode_topk(s, x.data(), B);
    ASSERT_EQ(c.indices.size(), size_t(B * k));
    for (int b = 0; b < B; ++b) {
      auto h = pre_ref(s, x.data() + b * d_in);
      std::vector<int> order(static_cast<size_t>(d_sae));
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int a, int c2) { return h[size_t(a)] > h[size_t(c2)]; });
      // The data must be tie-free at the k-th boundary for a set comparison to mean anything.
      if (k < d_sae) ASSERT_GT(h[size_t(order[size_t(k - 1)])] - h[size_t(order[size_t(k)])], 1e-5);
      std::set<int> want(order.begin(), order.begin() + k);
      std::set<int> got(c.indices.begin() + b * k, c.indices.begin() + (b + 1) * k);
      EXPECT_EQ(got, want) << "row " << b << " d_sae=" << d_sae << " k=" << k;
      for (int i = 0; i < k; ++i) {
        const int j = c.indices[size_t(b * k + i)];
        EXPECT_NEAR(c.values[size_t(b * k + i)], std::max(0.0, h[size_t(j)]), 1e-4 + 1e-4 * std::abs(h[size_t(j)]));
        if (i > 0) EXPECT_GE(c.values[size_t(b * k + i - 1)], c.values[size_t(b * k + i)]) << "not sorted";
      }
    }
    EXPECT_NONZERO(c.values);
  }
}

TEST(EncodeTopK, TieRuleLargerFirstThenLowerIndex) {
  // h = [1, 3, 3, 2, 3, 0]: the three 3s tie; k=2 must take indices 1 then 2.
  std::vector<float> h = {1, 3, 3, 2, 3, 0, /*row 2*/ 5, 5, 5, 5, 5, 5};
  std::vector<int32_t> idx(4);
  std::vector<float> val(4);
  cpu::topk_select(h.data(), 2, 6, 2, idx.data(), val.data());
  EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 0, 1}));
  EXPECT_EQ(val, (std::vector<float>{3, 3, 5, 5}));
  // NaN never wins over a number.
  std::vector<float> hn = {NAN, -1, -2};
  cpu::topk_select(hn.data(), 1, 3, 1, idx.data(), val.data());
  EXPECT_EQ(idx[0], 1);
}

TEST(EncodeTopK, ReluAfterSelectionGivesL0BelowK) {
  Sae s = random_sae(16, 50, 8, 3);
  for (auto& b : s.params.b_enc) b = -0.6f;  // most pre-activations negative
  auto x = randn(16 * 40, 11, 0.5f);
  cpu::TopKCodes c = cpu::encode_topk(s, x.data(), 40);
  size_t zeros = 0, positives = 0;
  for (float v : c.values) {
    EXPECT_GE(v, 0.f);
    (v == 0.f ? zeros : positives)++;
  }
  EXPECT_GT(zeros, 0u) << "some selected latents must have been clamped by the ReLU";
  EXPECT_GT(positives, 0u);
  cpu::Csr csr = cpu::topk_to_csr(c);
  EXPECT_EQ(csr.values.size(), positives) << "CSR drops the zeros";
  EXPECT_LT(double(csr.values.size()) / 40.0, 8.0) << "L0 < k";
}

TEST(Decode, AllRepresentationsAgreeWithDoubleReference) {
  const int64_t d_in = 29, d_sae = 301, k = 9, B = 17;
  Sae s = random_sae(d_in, d_sae, k, 21);
  for (auto& b : s.params.b_enc) b -= 0.3f;  // a few zeros among the selected values
  auto x = randn(size_t(B * d_in), 22);
  cpu::TopKCodes c = cpu::encode_topk(s, x.data(), B);
  std::vector<float> z = cpu::encode_dense(s, x.data(), B);
  std::vector<float> ref(size_t(B * d_in));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < d_in; ++i) {
      double acc = s.params.b_dec[size_t(i)];
      for (int64_t j = 0; j < d_sae; ++j) acc += double(z[size_t(b * d_sae + j)]) * s.params.W_dec[size_t(j * d_in + i)];
      ref[size_t(b * d_in + i)] = float(acc);
    }
  std::vector<float> dense(ref.size()), topk(ref.size()), csr(ref.size()), coo(ref.size());
  cpu::decode_dense(s, z.data(), B, dense.data());
  cpu::decode_topk(s, c, topk.data());
  cpu::decode_csr(s, cpu::topk_to_csr(c), csr.data());
  cpu::Coo co = cpu::topk_to_coo(c);
  std::reverse(co.row.begin(), co.row.end());  // COO order must not matter
  std::reverse(co.col.begin(), co.col.end());
  std::reverse(co.values.begin(), co.values.end());
  cpu::decode_coo(s, co, coo.data());
  EXPECT_NONZERO(ref);
  for (auto* out : {&dense, &topk, &csr, &coo}) EXPECT_ALLCLOSE(out->data(), ref.data(), ref.size(), 1e-5, 1e-5);
}

TEST(Forward, SmallExampleByHand) {
  // d_in=2, d_sae=3, k=2, b_dec=[1, 0], b_enc=[0, 0, -1].
  Sae s;
  s.cfg = {2, 3, 2};
  s.params.W_enc = {1, 0, 2,   // row i=0
                    0, -1, 1};  // row i=1
  s.params.b_enc = {0, 0, -1};
  s.params.W_dec = {1, 0, 0, 1, 1, 1};
  s.params.b_dec = {1, 0};
  std::vector<float> x = {3, 1};
  // u = x - b_dec = [2, 1]; h = [2, -1, 2*2 + 1 - 1] = [2, -1, 4]; top-2 = {2: 4, 0: 2}.
  cpu::TopKCodes c = cpu::encode_topk(s, x.data(), 1);
  EXPECT_EQ(c.indices, (std::vector<int32_t>{2, 0}));
  EXPECT_EQ(c.values, (std::vector<float>{4, 2}));
  // xhat = 4*[1,1] + 2*[1,0] + [1,0] = [7, 4]
  std::vector<float> out(2);
  cpu::forward(s, x.data(), 1, out.data());
  EXPECT_EQ(out, (std::vector<float>{7, 4}));
  cpu::forward(s, x.data(), 1, out.data(), /*use_error_term=*/true);
  EXPECT_EQ(out, x) << "with the error term the output is the input";
  // apply_b_dec_to_input=false: u = x = [3, 1]; h = [3, -1, 6]; top-2 = {2: 6, 0: 3}
  s.cfg.apply_b_dec_to_input = false;
  c = cpu::encode_topk(s, x.data(), 1);
  EXPECT_EQ(c.values, (std::vector<float>{6, 3}));
}

TEST(Normalize, EachModeMatchesItsFormula) {
  const int64_t d = 10, B = 3;
  auto x = randn(size_t(B * d), 5, 3.f);
  for (int i = 0; i < d; ++i) x[size_t(i)] += 2.f;  // a non-zero mean in row 0
  for (Normalize m : {Normalize::none, Normalize::expected_average_only_in, Normalize::constant_norm_rescale,
                      Normalize::layer_norm}) {
    std::vector<float> out(x.size());
    cpu::NormStats st;
    cpu::normalize_in(m, x.data(), B, d, out.data(), &st);
    for (int64_t b = 0; b < B; ++b) {
      const float* xr = x.data() + b * d;
      double mu = 0, ss = 0, sd = 0;
      for (int i = 0; i < d; ++i) mu += xr[i], ss += double(xr[i]) * xr[i];
      mu /= d;
      for (int i = 0; i < d; ++i) sd += (xr[i] - mu) * (xr[i] - mu);
      sd = std::sqrt(sd / (d - 1));
      for (int i = 0; i < d; ++i) {
        double want = xr[i];
        if (m == Normalize::constant_norm_rescale) want = xr[i] * std::sqrt(double(d)) / std::sqrt(ss);
        if (m == Normalize::layer_norm) want = (xr[i] - mu) / (sd + 1e-5);
        EXPECT_NEAR(out[size_t(b * d + i)], want, 1e-5 * (1 + std::abs(want))) << normalize_name(m);
      }
    }
    // The output map inverts the input map (layer_norm up to its eps).
    cpu::normalize_out(m, out.data(), B, d, st);
    EXPECT_ALLCLOSE(out.data(), x.data(), x.size(), 1e-4, 1e-4);
  }
}

TEST(Forward, NormalisationWrapsEncodeDecode) {
  // forward = normalize_out(decode(encode(normalize_in(x)))), checked against the pieces.
  for (Normalize m : {Normalize::constant_norm_rescale, Normalize::layer_norm}) {
    Sae s = random_sae(12, 40, 5, 9, m);
    auto x = randn(12 * 6, 10, 4.f);
    std::vector<float> xn(x.size()), got(x.size()), want(x.size());
    cpu::NormStats st;
    cpu::normalize_in(m, x.data(), 6, 12, xn.data(), &st);
    Sae plain = s;
    plain.cfg.normalize = Normalize::none;
    cpu::decode_topk(plain, cpu::encode_topk(plain, xn.data(), 6), want.data());
    cpu::normalize_out(m, want.data(), 6, 12, st);
    cpu::forward(s, x.data(), 6, got.data());
    EXPECT_NONZERO(want);
    EXPECT_ALLCLOSE(got.data(), want.data(), want.size(), 1e-6, 1e-6);
  }
}

TEST(Errors, UserMistakesThrowReadableErrors) {
  Sae s = random_sae(8, 20, 4, 1);
  auto x = randn(8 * 2, 2);
  s.cfg.k = 21;
  EXPECT_THROW(cpu::encode_topk(s, x.data(), 2), Error);
  s.cfg.k = 0;
  EXPECT_THROW(cpu::encode_topk(s, x.data(), 2), Error);
  s.cfg.k = 4;
  s.params.W_enc.pop_back();
  try {
    cpu::encode_topk(s, x.data(), 2);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("W_enc"), std::string::npos) << e.what();
  }
  s = random_sae(8, 20, 4, 1);
  EXPECT_THROW(cpu::fold_W_dec_norm(s), Error);
  try {
    cpu::fold_W_dec_norm(s);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("TopK"), std::string::npos) << e.what();
  }
  EXPECT_THROW(normalize_from_name("batch_norm"), Error);
  cpu::TopKCodes bad{1, 1, 20, {25}, {1.f}};
  std::vector<float> out(8);
  EXPECT_THROW(cpu::decode_topk(s, bad, out.data()), Error);
  cpu::Csr badcsr{1, 20, {0, 2}, {1}, {1.f}};
  EXPECT_THROW(cpu::decode_csr(s, badcsr, out.data()), Error);
  cpu::Coo badcoo{1, 20, {3}, {1}, {1.f}};
  EXPECT_THROW(cpu::decode_coo(s, badcoo, out.data()), Error);
  Sae ln = random_sae(1, 4, 1, 1, Normalize::layer_norm);
  std::vector<float> one = {1.f};
  EXPECT_THROW(cpu::forward(ln, one.data(), 1, out.data()), Error);
}
