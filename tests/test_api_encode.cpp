// The inference API (api.h) on the CPU: every op against the CPU twins it is built from, N threads
// sharing one model against the serial result, and no allocation once a workspace is warm.
#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "test_util.h"
#include "topksae/api.h"
#include "topksae/ops_cpu.h"
#include "api/c_api_internal.h"  // topksae_model, to wrap the model in a C handle
#include "topksae/topksae_c.h"

using namespace topksae;
using namespace topksae::test;

// ---- a global allocation counter for this test binary (counts operator new only) ---------------
// Not under AddressSanitizer: it owns operator new there, and a replacement mixes the allocators.
// The sanitizer build still checks that the workspace stops growing.
#if defined(__SANITIZE_ADDRESS__)
#define TOPKSAE_COUNT_NEWS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TOPKSAE_COUNT_NEWS 0
#endif
#endif
#ifndef TOPKSAE_COUNT_NEWS
#define TOPKSAE_COUNT_NEWS 1
#endif

namespace {
std::atomic<uint64_t> g_news{0};
}
#if TOPKSAE_COUNT_NEWS
void* operator new(size_t n) {
  g_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
#endif

namespace {

constexpr int64_t kDin = 37, kDsae = 211, kK = 7;

std::shared_ptr<const Model> make_model(Normalize norm = Normalize::none, uint64_t seed = 5) {
  return Model::from_sae(random_sae(kDin, kDsae, kK, seed, norm));
}

}  // namespace

TEST(ApiEncode, TopKCsrDenseMatchTheCpuTwins) {
  for (Normalize norm : {Normalize::none, Normalize::constant_norm_rescale, Normalize::layer_norm}) {
    auto model = make_model(norm);
    const int64_t B = 13;
    auto x = randn(size_t(B * kDin), 21, 1.5f);
    cpu::TopKCodes ref = cpu::encode_topk(model->sae(), x.data(), B);

    Workspace ws;
    std::vector<int32_t> idx(size_t(B * kK));
    std::vector<float> val(size_t(B * kK));
    model->encode_topk(ws, {x.data(), B, kDin}, {idx.data(), B, kK}, {val.data(), B, kK});
    EXPECT_EQ(idx, ref.indices);
    EXPECT_EQ(val, ref.values);
    EXPECT_NONZERO(val);

    cpu::Csr csr_ref = cpu::topk_to_csr(ref);
    std::vector<int64_t> indptr(size_t(B + 1));
    std::vector<int32_t> cidx(size_t(B * kK));
    std::vector<float> cval(size_t(B * kK));
    const int64_t nnz = model->encode_csr(ws, {x.data(), B, kDin}, {indptr.data(), cidx.data(), cval.data(), B * kK});
    ASSERT_EQ(nnz, int64_t(csr_ref.values.size()));
    EXPECT_EQ(indptr, csr_ref.indptr);
    EXPECT_EQ(std::vector<int32_t>(cidx.begin(), cidx.begin() + nnz), csr_ref.indices);
    EXPECT_EQ(std::vector<float>(cval.begin(), cval.begin() + nnz), csr_ref.values);

    std::vector<float> z(size_t(B * kDsae), -1.f);  // -1: every element must be written
    model->encode_dense(ws, {x.data(), B, kDin}, {z.data(), B, kDsae});
    EXPECT_EQ(z, cpu::topk_to_dense(ref));
  }
}

TEST(ApiEncode, DecodeAndForwardMatchTheCpuTwins) {
  for (Normalize norm : {Normalize::none, Normalize::constant_norm_rescale, Normalize::layer_norm}) {
    auto model = make_model(norm, 9);
    const int64_t B = 11;
    auto x = randn(size_t(B * kDin), 31, 2.f);
    cpu::TopKCodes codes = cpu::encode_topk(model->sae(), x.data(), B);
    std::vector<float> ref(size_t(B * kDin)), out(size_t(B * kDin));
    cpu::decode_topk(model->sae(), codes, ref.data());
    EXPECT_NONZERO(ref);

    Workspace ws;
    model->decode_topk(ws, {codes.indices.data(), B, kK}, {codes.values.data(), B, kK}, {out.data(), B, kDin});
    EXPECT_ALLCLOSE(out.data(), ref.data(), out.size(), 1e-6, 1e-6);

    cpu::Csr csr = cpu::topk_to_csr(codes);
    std::fill(out.begin(), out.end(), 0.f);
    model->decode_csr(ws, {csr.indptr.data(), csr.indices.data(), csr.values.data(), B}, {out.data(), B, kDin});
    EXPECT_ALLCLOSE(out.data(), ref.data(), out.size(), 1e-6, 1e-6);

    auto z = cpu::topk_to_dense(codes);
    std::fill(out.begin(), out.end(), 0.f);
    model->decode_dense(ws, {z.data(), B, kDsae}, {out.data(), B, kDin});
    EXPECT_ALLCLOSE(out.data(), ref.data(), out.size(), 1e-5, 1e-5);

    for (bool err : {false, true}) {
      std::vector<float> fref(size_t(B * kDin));
      cpu::forward(model->sae(), x.data(), B, fref.data(), err);
      model->forward(ws, {x.data(), B, kDin}, {out.data(), B, kDin}, err);
      EXPECT_EQ(out, fref) << "normalize=" << normalize_name(norm) << " error term " << err;
      EXPECT_NONZERO(out);
    }
  }
}

TEST(ApiEncode, ThreadsSharingOneModelGiveTheSerialResult) {
  auto model = make_model(Normalize::none, 17);
  constexpr int kThreads = 4, kBatches = 6, kRepeats = 3;
  const int64_t B = 19;
  std::vector<std::vector<float>> xs;
  std::vector<std::vector<int32_t>> want_idx;
  std::vector<std::vector<float>> want_val, want_fwd;
  Workspace serial;
  for (int i = 0; i < kBatches; ++i) {
    xs.push_back(randn(size_t(B * kDin), 100 + uint64_t(i)));
    want_idx.emplace_back(size_t(B * kK));
    want_val.emplace_back(size_t(B * kK));
    want_fwd.emplace_back(size_t(B * kDin));
    model->encode_topk(serial, {xs[size_t(i)].data(), B, kDin}, {want_idx.back().data(), B, kK},
                       {want_val.back().data(), B, kK});
    // Without the error term: with it, any reconstruction gives back about x.
    model->forward(serial, {xs[size_t(i)].data(), B, kDin}, {want_fwd.back().data(), B, kDin}, false);
    std::vector<float> twin(size_t(B * kDin));
    cpu::forward(model->sae(), xs[size_t(i)].data(), B, twin.data(), false);
    EXPECT_NONZERO(want_fwd.back());
    EXPECT_EQ(want_fwd.back(), twin) << "batch " << i;
    EXPECT_NONZERO(want_val.back());
  }
  std::atomic<int> mismatches{0}, calls{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      Workspace ws;  // one per thread; the model is shared
      CallOptions opts;
      opts.cpu_threads = 1 + t % 2;  // different team sizes must not change the result
      std::vector<int32_t> idx(size_t(B * kK));
      std::vector<float> val(size_t(B * kK)), fwd(size_t(B * kDin));
      for (int r = 0; r < kRepeats; ++r)
        for (int i = 0; i < kBatches; ++i) {
          const int b = (i + t) % kBatches;
          model->encode_topk(ws, {xs[size_t(b)].data(), B, kDin}, {idx.data(), B, kK}, {val.data(), B, kK}, opts);
          model->forward(ws, {xs[size_t(b)].data(), B, kDin}, {fwd.data(), B, kDin}, false, opts);
          if (idx != want_idx[size_t(b)] || val != want_val[size_t(b)] || fwd != want_fwd[size_t(b)]) ++mismatches;
          calls += 2;
        }
    });
  for (auto& th : pool) th.join();
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_EQ(calls.load(), kThreads * kRepeats * kBatches * 2);
}

// A NaN in a row of the input (api.h, "Non-finite input"): that row's pre-activations are all NaN,
// which top-k ranks below every number, ties broken by the lower index: latents 0..k-1 with NaN
// values; its reconstruction is NaN; every other row is what it is without that row (encoded
// alone: the same latents, values to float rounding).
// CudaApi.NanRowsGiveWhatTheCpuGives checks the GPU does the same.
TEST(ApiEncode, NanRowsAreNanAndLeaveTheOtherRowsAlone) {
  for (Normalize norm : {Normalize::none, Normalize::layer_norm}) {
    SCOPED_TRACE(normalize_name(norm));
    auto model = make_model(norm, 29);
    const int64_t B = 9;
    auto x = randn(size_t(B * kDin), 31);
    const std::vector<int64_t> nan_rows = {2, 7};
    for (int64_t r : nan_rows) x[size_t(r * kDin + 5)] = NAN;
    Workspace ws;
    std::vector<int32_t> idx(size_t(B * kK)), one_idx(static_cast<size_t>(kK));
    std::vector<float> val(size_t(B * kK)), out(size_t(B * kDin)), one_val(static_cast<size_t>(kK)),
        one_out(static_cast<size_t>(kDin));
    model->encode_topk(ws, {x.data(), B, kDin}, {idx.data(), B, kK}, {val.data(), B, kK});
    model->forward(ws, {x.data(), B, kDin}, {out.data(), B, kDin}, false);
    for (int64_t b = 0; b < B; ++b) {
      SCOPED_TRACE(::testing::Message() << "row " << b);
      const bool nan_row = std::find(nan_rows.begin(), nan_rows.end(), b) != nan_rows.end();
      if (nan_row) {
        for (int64_t i = 0; i < kK; ++i) {
          EXPECT_EQ(idx[size_t(b * kK + i)], int32_t(i));
          EXPECT_TRUE(std::isnan(val[size_t(b * kK + i)])) << val[size_t(b * kK + i)];
        }
        for (int64_t c = 0; c < kDin; ++c) EXPECT_TRUE(std::isnan(out[size_t(b * kDin + c)]));
        continue;
      }
      model->encode_topk(ws, {x.data() + b * kDin, 1, kDin}, {one_idx.data(), 1, kK}, {one_val.data(), 1, kK});
      model->forward(ws, {x.data() + b * kDin, 1, kDin}, {one_out.data(), 1, kDin}, false);
      EXPECT_NONZERO(one_out);
      EXPECT_TRUE(std::equal(one_idx.begin(), one_idx.end(), idx.begin() + b * kK));
      EXPECT_ALLCLOSE(val.data() + b * kK, one_val.data(), size_t(kK), 1e-6, 1e-6);
      EXPECT_ALLCLOSE(out.data() + b * kDin, one_out.data(), size_t(kDin), 1e-6, 1e-6);
    }
  }
}

TEST(ApiEncode, AWarmWorkspaceAllocatesNothing) {
  auto model = make_model(Normalize::layer_norm, 23);
  const int64_t B = 17;
  auto x = randn(size_t(B * kDin), 41);
  std::vector<int32_t> idx(size_t(B * kK));
  std::vector<float> val(size_t(B * kK)), z(size_t(B * kDsae)), out(size_t(B * kDin));
  std::vector<int64_t> indptr(size_t(B + 1));
  Hooks hooks;  // an observer that changes nothing, so the hooked paths run too
  hooks.add(HookPoint::sae_acts_post, [](const HookView&) {});
  CallOptions hooked;
  hooked.hooks = &hooks;
  hooked.cpu_threads = 1;

  Workspace ws;
  auto run_all = [&](int64_t rows) {
    model->encode_topk(ws, {x.data(), rows, kDin}, {idx.data(), rows, kK}, {val.data(), rows, kK});
    model->encode_csr(ws, {x.data(), rows, kDin}, {indptr.data(), idx.data(), val.data(), rows * kK});
    model->encode_dense(ws, {x.data(), rows, kDin}, {z.data(), rows, kDsae});
    model->decode_topk(ws, {idx.data(), rows, kK}, {val.data(), rows, kK}, {out.data(), rows, kDin});
    model->forward(ws, {x.data(), rows, kDin}, {out.data(), rows, kDin}, true);
    model->forward(ws, {x.data(), rows, kDin}, {out.data(), rows, kDin}, true, hooked);
    model->encode_csr(ws, {x.data(), rows, kDin}, {indptr.data(), idx.data(), val.data(), rows * kK}, hooked);
  };
  run_all(B);  // warm-up with the largest batch
  const uint64_t growths = ws.growths();
  const size_t bytes = ws.bytes();
  EXPECT_GT(growths, 0u);
  EXPECT_GT(bytes, 0u);

  const uint64_t before = g_news.load();
  for (int64_t rows : {B, B - 4, int64_t(1), B}) run_all(rows);
  const uint64_t after = g_news.load();
  EXPECT_EQ(after - before, 0u) << "a warm call allocated";
  EXPECT_EQ(ws.growths(), growths);
  EXPECT_EQ(ws.bytes(), bytes);
  EXPECT_NONZERO(out);

  // The C API on the calling thread's own workspace: no allocation once warm either.
  topksae_model handle{model};
  ASSERT_EQ(topksae_forward(&handle, nullptr, nullptr, x.data(), B, kDin, 1, out.data()), TOPKSAE_OK);  // warm-up
  const uint64_t c_before = g_news.load();
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(topksae_forward(&handle, nullptr, nullptr, x.data(), B, kDin, 1, out.data()), TOPKSAE_OK);
  EXPECT_EQ(g_news.load() - c_before, 0u) << "a warm C call allocated";
  // The counter works: a cold workspace does allocate.
  Workspace cold;
  model->encode_topk(cold, {x.data(), B, kDin}, {idx.data(), B, kK}, {val.data(), B, kK});
  if (TOPKSAE_COUNT_NEWS) EXPECT_GT(g_news.load(), after);
}
