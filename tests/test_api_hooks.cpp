// Hook points: names, order and shapes; ablation and clamping against a manual decode; the dense
// codes built only when hook_sae_acts_post is observed; sae_lens's error-term semantics.
#include "test_util.h"
#include "topksae/api.h"
#include "topksae/ops_cpu.h"

using namespace topksae;
using namespace topksae::test;

namespace {

constexpr int64_t kDin = 29, kDsae = 157, kK = 6, kB = 9;

struct Fixture {
  std::shared_ptr<const Model> model = Model::from_sae(random_sae(kDin, kDsae, kK, 77));
  std::vector<float> x = randn(size_t(kB * kDin), 78, 1.5f);
  cpu::TopKCodes codes = cpu::encode_topk(model->sae(), x.data(), kB);
  // A latent that is selected with a positive value in at least two rows.
  int32_t popular() const {
    std::vector<int> count(static_cast<size_t>(kDsae));
    for (size_t i = 0; i < codes.indices.size(); ++i)
      if (codes.values[i] > 0.f) ++count[size_t(codes.indices[i])];
    return int32_t(std::max_element(count.begin(), count.end()) - count.begin());
  }
};

// Manual reference: decode z with latent j set to v in every row (z from the unhooked encoder).
std::vector<float> decode_with(const Fixture& f, int32_t j, float v) {
  auto z = cpu::topk_to_dense(f.codes);
  for (int64_t b = 0; b < kB; ++b) z[size_t(b * kDsae + j)] = v;
  std::vector<float> out(size_t(kB * kDin));
  cpu::decode_dense(f.model->sae(), z.data(), kB, out.data());
  return out;
}

}  // namespace

TEST(ApiHooks, NamesRoundTripAndUnknownNamesAreRefused) {
  for (int i = 0; i < kHookPointCount; ++i) EXPECT_EQ(hook_from_name(hook_name(HookPoint(i))), HookPoint(i));
  EXPECT_EQ(hook_name(HookPoint::sae_acts_post), "hook_sae_acts_post");
  EXPECT_THROW(hook_from_name("hook_sae_acts"), InvalidArgument);
  Hooks h;
  EXPECT_THROW(h.add(HookPoint::sae_input, HookFn{}), InvalidArgument);
  const auto id = h.add("hook_sae_output", [](const HookView&) {});
  EXPECT_TRUE(h.observed(HookPoint::sae_output));
  EXPECT_TRUE(h.remove(id));
  EXPECT_FALSE(h.remove(id));
  EXPECT_TRUE(h.empty());
}

TEST(ApiHooks, ForwardRunsEveryPointInOrderWithItsShape) {
  Fixture f;
  Hooks hooks;
  std::vector<std::string> seen;
  for (int i = kHookPointCount - 1; i >= 0; --i)  // registration order must not matter across points
    hooks.add(HookPoint(i), [&seen](const HookView& v) {
      const bool codes = v.point == HookPoint::sae_acts_pre || v.point == HookPoint::sae_acts_post;
      EXPECT_EQ(v.rows, kB);
      EXPECT_EQ(v.cols, codes ? kDsae : kDin) << hook_name(v.point);
      EXPECT_EQ(v.device, Device::cpu);
      EXPECT_EQ(v.stream, nullptr);
      seen.emplace_back(hook_name(v.point));
    });
  Workspace ws;
  std::vector<float> out(size_t(kB * kDin));
  CallOptions opts;
  opts.hooks = &hooks;
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, true, opts);
  EXPECT_EQ(seen, (std::vector<std::string>{"hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post",
                                            "hook_sae_recons", "hook_sae_error", "hook_sae_output"}));
  seen.clear();
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, false, opts);
  EXPECT_EQ(seen.size(), 5u) << "no hook_sae_error without the error term";
}

TEST(ApiHooks, AblationRemovesExactlyThatLatentsContribution) {
  Fixture f;
  const int32_t j = f.popular();
  Hooks hooks;
  hooks.add(HookPoint::sae_acts_post, Hooks::ablate_latent(j));
  CallOptions opts;
  opts.hooks = &hooks;
  Workspace ws;

  std::vector<float> out(size_t(kB * kDin)), plain(size_t(kB * kDin));
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, false, opts);
  const auto want = decode_with(f, j, 0.f);
  EXPECT_ALLCLOSE(out.data(), want.data(), out.size(), 1e-5, 1e-5);
  // And the difference from the unhooked output is z_bj * W_dec[j], nothing else.
  f.model->forward(ws, {f.x.data(), kB, kDin}, {plain.data(), kB, kDin}, false);
  const auto z = cpu::topk_to_dense(f.codes);
  double moved = 0;
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t i = 0; i < kDin; ++i) {
      const float contrib = z[size_t(b * kDsae + j)] * f.model->sae().params.W_dec[size_t(j * kDin + i)];
      EXPECT_NEAR(plain[size_t(b * kDin + i)] - out[size_t(b * kDin + i)], contrib, 1e-5);
      moved += std::abs(contrib);
    }
  EXPECT_GT(moved, 0.0) << "the ablated latent must have contributed";

  // With the error term, the ablation still shows: out = x - (contribution of j).
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, true, opts);
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t i = 0; i < kDin; ++i) {
      const float contrib = z[size_t(b * kDsae + j)] * f.model->sae().params.W_dec[size_t(j * kDin + i)];
      EXPECT_NEAR(out[size_t(b * kDin + i)], f.x[size_t(b * kDin + i)] - contrib, 1e-4);
    }

  // The encode outputs drop it too: no row keeps j with a non-zero value.
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK));
  f.model->encode_topk(ws, {f.x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK}, opts);
  for (size_t i = 0; i < idx.size(); ++i)
    if (idx[i] == j) EXPECT_EQ(val[i], 0.f);
  EXPECT_NONZERO(val);
}

TEST(ApiHooks, ClampingSetsTheLatentEverywhere) {
  Fixture f;
  const int32_t j = f.popular();
  const float v = 3.5f;
  Hooks hooks;
  hooks.add(HookPoint::sae_acts_post, Hooks::clamp_latent(j, v));
  CallOptions opts;
  opts.hooks = &hooks;
  Workspace ws;

  std::vector<float> out(size_t(kB * kDin));
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, false, opts);
  const auto want = decode_with(f, j, v);
  EXPECT_ALLCLOSE(out.data(), want.data(), out.size(), 1e-5, 1e-5);

  // Dense and CSR codes carry the clamp in every row (top-k pairs could only when every row has a
  // free zero-valued slot).
  std::vector<float> z(size_t(kB * kDsae));
  f.model->encode_dense(ws, {f.x.data(), kB, kDin}, {z.data(), kB, kDsae}, opts);
  auto zref = cpu::topk_to_dense(f.codes);
  for (int64_t b = 0; b < kB; ++b) zref[size_t(b * kDsae + j)] = v;
  EXPECT_EQ(z, zref);

  std::vector<int64_t> indptr(size_t(kB + 1));
  std::vector<int32_t> cidx(size_t(kB * kDsae));
  std::vector<float> cval(size_t(kB * kDsae));
  const int64_t nnz =
      f.model->encode_csr(ws, {f.x.data(), kB, kDin}, {indptr.data(), cidx.data(), cval.data(), kB * kDsae}, opts);
  std::vector<float> back(size_t(kB * kDsae), 0.f);
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t p = indptr[size_t(b)]; p < indptr[size_t(b + 1)]; ++p) {
      back[size_t(b * kDsae + cidx[size_t(p)])] = cval[size_t(p)];
      if (p > indptr[size_t(b)]) EXPECT_GE(cval[size_t(p - 1)], cval[size_t(p)]) << "row order is value-descending";
    }
  EXPECT_EQ(back, zref);
  EXPECT_EQ(nnz, indptr.back());
  // Too little capacity is an error that names what is needed.
  try {
    f.model->encode_csr(ws, {f.x.data(), kB, kDin}, {indptr.data(), cidx.data(), cval.data(), 1}, opts);
    ADD_FAILURE() << "expected InvalidArgument";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("capacity"), std::string::npos) << e.what();
  }
}

TEST(ApiHooks, TopKPairsRefuseMoreThanKLatentsAfterAHook) {
  Fixture f;
  Hooks hooks;  // every latent set: far more than k per row
  hooks.add(HookPoint::sae_acts_post, [](const HookView& v) { std::fill(v.data, v.data + v.rows * v.cols, 1.f); });
  CallOptions opts;
  opts.hooks = &hooks;
  Workspace ws;
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK));
  EXPECT_THROW(f.model->encode_topk(ws, {f.x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK}, opts),
               InvalidArgument);
}

TEST(ApiHooks, AnIdentityObserverChangesNothing) {
  Fixture f;
  Hooks hooks;
  int calls = 0;
  for (int i = 0; i < kHookPointCount; ++i) hooks.add(HookPoint(i), [&calls](const HookView&) { ++calls; });
  CallOptions opts;
  opts.hooks = &hooks;
  Workspace ws;
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK));
  f.model->encode_topk(ws, {f.x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK}, opts);
  EXPECT_EQ(idx, f.codes.indices);
  EXPECT_EQ(val, f.codes.values);
  EXPECT_EQ(calls, 3);  // input, acts_pre, acts_post
  std::vector<float> out(size_t(kB * kDin)), ref(size_t(kB * kDin));
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, false, opts);
  cpu::forward(f.model->sae(), f.x.data(), kB, ref.data(), false);
  // The observed path decodes the dense z (a different summation order): equal up to rounding.
  EXPECT_ALLCLOSE(out.data(), ref.data(), out.size(), 1e-5, 1e-5);
  EXPECT_NONZERO(out);
}

TEST(ApiHooks, UnobservedActsPostBuildsNoDenseCodes) {
  Fixture f;
  Workspace ws;
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK)), out(size_t(kB * kDin));
  f.model->encode_topk(ws, {f.x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK});
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, true);
  // Observers elsewhere do not make the codes dense either.
  Hooks other;
  for (HookPoint p : {HookPoint::sae_input, HookPoint::sae_acts_pre, HookPoint::sae_recons, HookPoint::sae_error,
                      HookPoint::sae_output})
    other.add(p, [](const HookView&) {});
  CallOptions opts;
  opts.hooks = &other;
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, true, opts);
  EXPECT_EQ(ws.dense_acts_built(), 0u);
  const size_t sparse_bytes = ws.bytes();

  Hooks post;
  post.add(HookPoint::sae_acts_post, [](const HookView&) {});
  opts.hooks = &post;
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, true, opts);
  EXPECT_EQ(ws.dense_acts_built(), 1u);
  EXPECT_GE(ws.bytes(), sparse_bytes + size_t(kB * kDsae) * sizeof(float)) << "the dense z lives in the workspace";
}

TEST(ApiHooks, ErrorTermUsesTheReconstructionWithoutHooks) {
  Fixture f;
  // An observer that shifts the reconstruction: the output moves by the shift even with the
  // error term, and hook_sae_error sees x - xhat_clean (the unhooked reconstruction).
  Hooks hooks;
  hooks.add(HookPoint::sae_recons, [](const HookView& v) {
    for (int64_t i = 0; i < v.rows * v.cols; ++i) v.data[i] += 0.25f;
  });
  std::vector<float> seen_error;
  hooks.add(HookPoint::sae_error, [&](const HookView& v) { seen_error.assign(v.data, v.data + v.rows * v.cols); });
  CallOptions opts;
  opts.hooks = &hooks;
  Workspace ws;
  std::vector<float> out(size_t(kB * kDin)), clean(size_t(kB * kDin));
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, true, opts);
  cpu::forward(f.model->sae(), f.x.data(), kB, clean.data(), false);
  ASSERT_EQ(seen_error.size(), out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    EXPECT_NEAR(seen_error[i], f.x[i] - clean[i], 1e-5);
    EXPECT_NEAR(out[i], f.x[i] + 0.25f, 1e-4);
  }
  EXPECT_NONZERO(seen_error);
  // An observer on hook_sae_output changes the caller's result in place.
  Hooks zero;
  zero.add(HookPoint::sae_output, [](const HookView& v) { std::fill(v.data, v.data + v.rows * v.cols, 0.f); });
  opts.hooks = &zero;
  f.model->forward(ws, {f.x.data(), kB, kDin}, {out.data(), kB, kDin}, true, opts);
  EXPECT_EQ(l2(out.data(), out.size()), 0.0);
}

TEST(ApiHooks, InputAndPreActivationObserversSteerTheSelection) {
  Fixture f;
  const int32_t j = 3;
  Hooks hooks;  // force latent j to win every row at hook_sae_acts_pre
  hooks.add(HookPoint::sae_acts_pre, Hooks::clamp_latent(j, 100.f));
  CallOptions opts;
  opts.hooks = &hooks;
  Workspace ws;
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK));
  f.model->encode_topk(ws, {f.x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK}, opts);
  for (int64_t b = 0; b < kB; ++b) {
    EXPECT_EQ(idx[size_t(b * kK)], j);
    EXPECT_EQ(val[size_t(b * kK)], 100.f);
  }
  // Zeroing the input at hook_sae_input gives the codes of a zero input; the caller's x is untouched.
  Hooks zin;
  zin.add(HookPoint::sae_input, [](const HookView& v) { std::fill(v.data, v.data + v.rows * v.cols, 0.f); });
  opts.hooks = &zin;
  const auto x_before = f.x;
  f.model->encode_topk(ws, {f.x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK}, opts);
  EXPECT_EQ(f.x, x_before);
  std::vector<float> zeros(size_t(kB * kDin), 0.f);
  auto ref = cpu::encode_topk(f.model->sae(), zeros.data(), kB);
  EXPECT_EQ(idx, ref.indices);
  EXPECT_EQ(val, ref.values);
}
