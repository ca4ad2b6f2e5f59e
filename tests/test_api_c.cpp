// The C API: round trips against the C++ API, C observers, and misuse that must come back as a
// status and a message (never a crash or an exception) — in C and in C++.
#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"
#include "topksae/api.h"
#include "topksae/topksae_c.h"

using namespace topksae;
using namespace topksae::test;

namespace {

constexpr int64_t kDin = 23, kDsae = 97, kK = 5, kB = 7;

struct CModel {
  Sae sae = random_sae(kDin, kDsae, kK, 61, Normalize::layer_norm);
  topksae_model* handle = nullptr;
  CModel() {
    const topksae_status s = topksae_model_from_weights(
        kDin, kDsae, kK, 1, "layer_norm", sae.params.W_enc.data(), sae.params.b_enc.data(), sae.params.W_dec.data(),
        sae.params.b_dec.data(), TOPKSAE_DEVICE_CPU, &handle);
    EXPECT_EQ(s, TOPKSAE_OK) << topksae_last_error();
  }
  ~CModel() { topksae_model_free(handle); }
};

bool message_has(const char* needle) { return std::strstr(topksae_last_error(), needle) != nullptr; }

}  // namespace

TEST(ApiC, RoundTripsMatchTheCppApi) {
  CModel c;
  ASSERT_NE(c.handle, nullptr);
  auto model = Model::from_sae(c.sae);
  auto x = randn(size_t(kB * kDin), 62, 2.f);
  Workspace ws;

  topksae_model_info info;
  ASSERT_EQ(topksae_model_get_info(c.handle, &info), TOPKSAE_OK);
  EXPECT_EQ(info.d_in, kDin);
  EXPECT_EQ(info.d_sae, kDsae);
  EXPECT_EQ(info.k, kK);
  EXPECT_EQ(info.device, TOPKSAE_DEVICE_CPU);

  std::vector<int32_t> idx(size_t(kB * kK)), want_idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK)), want_val(size_t(kB * kK));
  topksae_workspace* cws = nullptr;
  ASSERT_EQ(topksae_workspace_create(&cws), TOPKSAE_OK);
  ASSERT_EQ(topksae_encode_topk(c.handle, cws, nullptr, x.data(), kB, kDin, idx.data(), val.data()), TOPKSAE_OK);
  model->encode_topk(ws, {x.data(), kB, kDin}, {want_idx.data(), kB, kK}, {want_val.data(), kB, kK});
  EXPECT_EQ(idx, want_idx);
  EXPECT_EQ(val, want_val);
  EXPECT_NONZERO(val);
  EXPECT_STREQ(topksae_last_error(), "");

  // CSR, through the calling thread's own workspace (ws == NULL).
  std::vector<int64_t> indptr(size_t(kB + 1));
  std::vector<int32_t> cidx(size_t(kB * kK));
  std::vector<float> cval(size_t(kB * kK));
  int64_t nnz = -1;
  ASSERT_EQ(topksae_encode_csr(c.handle, nullptr, nullptr, x.data(), kB, kDin, indptr.data(), cidx.data(),
                               cval.data(), kB * kK, &nnz),
            TOPKSAE_OK);
  EXPECT_EQ(nnz, indptr.back());
  EXPECT_GT(nnz, 0);

  std::vector<float> z(size_t(kB * kDsae)), want_z(size_t(kB * kDsae));
  ASSERT_EQ(topksae_encode_dense(c.handle, cws, nullptr, x.data(), kB, kDin, z.data()), TOPKSAE_OK);
  model->encode_dense(ws, {x.data(), kB, kDin}, {want_z.data(), kB, kDsae});
  EXPECT_EQ(z, want_z);

  // decode in all three forms agrees with the C++ decode.
  std::vector<float> out(size_t(kB * kDin)), want(size_t(kB * kDin));
  model->decode_topk(ws, {want_idx.data(), kB, kK}, {want_val.data(), kB, kK}, {want.data(), kB, kDin});
  ASSERT_EQ(topksae_decode_topk(c.handle, cws, nullptr, idx.data(), val.data(), kB, kK, out.data()), TOPKSAE_OK);
  EXPECT_EQ(out, want);
  ASSERT_EQ(topksae_decode_csr(c.handle, cws, nullptr, indptr.data(), cidx.data(), cval.data(), kB, out.data()),
            TOPKSAE_OK);
  EXPECT_ALLCLOSE(out.data(), want.data(), out.size(), 1e-6, 1e-6);
  ASSERT_EQ(topksae_decode_dense(c.handle, cws, nullptr, z.data(), kB, out.data()), TOPKSAE_OK);
  EXPECT_ALLCLOSE(out.data(), want.data(), out.size(), 1e-5, 1e-5);
  EXPECT_NONZERO(want);

  for (int err : {0, 1}) {
    ASSERT_EQ(topksae_forward(c.handle, cws, nullptr, x.data(), kB, kDin, err, out.data()), TOPKSAE_OK);
    model->forward(ws, {x.data(), kB, kDin}, {want.data(), kB, kDin}, err != 0);
    EXPECT_EQ(out, want);
  }
  topksae_workspace_free(cws);
}

namespace {
struct Ablate {
  int32_t latent;
  int calls = 0;
};
extern "C" int ablate_hook(void* user, const char* name, float* data, int64_t rows, int64_t cols, topksae_device device,
                           void* stream) {
  auto* a = static_cast<Ablate*>(user);
  if (std::strcmp(name, "hook_sae_acts_post") != 0 || device != TOPKSAE_DEVICE_CPU || stream != nullptr) return 7;
  for (int64_t b = 0; b < rows; ++b) data[b * cols + a->latent] = 0.f;
  ++a->calls;
  return 0;
}
extern "C" int failing_hook(void*, const char*, float*, int64_t, int64_t, topksae_device, void*) { return 42; }
}  // namespace

TEST(ApiC, ObserversAblateAndTheirFailuresBecomeStatuses) {
  CModel c;
  auto model = Model::from_sae(c.sae);
  auto x = randn(size_t(kB * kDin), 63, 2.f);
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK));
  Workspace ws;
  model->encode_topk(ws, {x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK});
  Ablate a{idx[0]};  // row 0's strongest latent

  topksae_hooks* hooks = nullptr;
  ASSERT_EQ(topksae_hooks_create(&hooks), TOPKSAE_OK);
  int64_t id = 0;
  ASSERT_EQ(topksae_hooks_add(hooks, "hook_sae_acts_post", ablate_hook, &a, &id), TOPKSAE_OK);
  topksae_call call;
  std::memset(&call, 0, sizeof call);
  call.hooks = hooks;

  std::vector<float> out(size_t(kB * kDin)), want(size_t(kB * kDin));
  ASSERT_EQ(topksae_forward(c.handle, nullptr, &call, x.data(), kB, kDin, 0, out.data()), TOPKSAE_OK)
      << topksae_last_error();
  EXPECT_EQ(a.calls, 1);
  Hooks cpp;
  cpp.add(HookPoint::sae_acts_post, Hooks::ablate_latent(a.latent));
  CallOptions opts;
  opts.hooks = &cpp;
  model->forward(ws, {x.data(), kB, kDin}, {want.data(), kB, kDin}, false, opts);
  EXPECT_EQ(out, want);
  EXPECT_NONZERO(out);

  ASSERT_EQ(topksae_hooks_remove(hooks, id), TOPKSAE_OK);
  EXPECT_EQ(topksae_hooks_remove(hooks, id), TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(topksae_hooks_add(hooks, "hook_sae_nope", ablate_hook, &a, nullptr), TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has("hook_sae_nope"));
  ASSERT_EQ(topksae_hooks_add(hooks, "hook_sae_recons", failing_hook, nullptr, nullptr), TOPKSAE_OK);
  EXPECT_EQ(topksae_forward(c.handle, nullptr, &call, x.data(), kB, kDin, 0, out.data()), TOPKSAE_ERROR);
  EXPECT_TRUE(message_has("returned 42")) << topksae_last_error();
  topksae_hooks_free(hooks);
}

TEST(ApiC, MisuseReturnsAStatusAndAMessage) {
  CModel c;
  auto x = randn(size_t(kB * kDin), 64);
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK)), out(size_t(kB * kDin));

  EXPECT_EQ(topksae_encode_topk(nullptr, nullptr, nullptr, x.data(), kB, kDin, idx.data(), val.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has("null handle"));
  EXPECT_EQ(topksae_encode_topk(c.handle, nullptr, nullptr, x.data(), kB, kDin + 1, idx.data(), val.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has("d_in=23")) << topksae_last_error();
  EXPECT_EQ(topksae_encode_topk(c.handle, nullptr, nullptr, nullptr, kB, kDin, idx.data(), val.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(topksae_encode_topk(c.handle, nullptr, nullptr, x.data(), kB, kDin, nullptr, val.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  for (int64_t rows : {int64_t(0), int64_t(-3)}) {
    EXPECT_EQ(topksae_encode_topk(c.handle, nullptr, nullptr, x.data(), rows, kDin, idx.data(), val.data()),
              TOPKSAE_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(message_has("at least 1")) << topksae_last_error();
    EXPECT_EQ(topksae_forward(c.handle, nullptr, nullptr, x.data(), rows, kDin, 1, out.data()),
              TOPKSAE_ERROR_INVALID_ARGUMENT);
  }
  // Device pointers and streams given to a CPU model.
  topksae_call call;
  std::memset(&call, 0, sizeof call);
  call.memory = TOPKSAE_DEVICE_CUDA;
  EXPECT_EQ(topksae_encode_topk(c.handle, nullptr, &call, x.data(), kB, kDin, idx.data(), val.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has("model is on cpu")) << topksae_last_error();
  call.memory = TOPKSAE_DEVICE_CPU;
  call.stream = reinterpret_cast<void*>(0x1234);  // never dereferenced
  EXPECT_EQ(topksae_forward(c.handle, nullptr, &call, x.data(), kB, kDin, 0, out.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has("stream")) << topksae_last_error();
  call.stream = nullptr;
  call.memory = static_cast<topksae_device>(9);
  EXPECT_EQ(topksae_forward(c.handle, nullptr, &call, x.data(), kB, kDin, 0, out.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  // Bad codes: a latent out of range is refused before any memory is touched.
  std::vector<int32_t> bad(size_t(kB * kK), int32_t(kDsae));
  EXPECT_EQ(topksae_decode_topk(c.handle, nullptr, nullptr, bad.data(), val.data(), kB, kK, out.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has("out of range")) << topksae_last_error();
  const int64_t bad_indptr[2] = {0, -1};
  EXPECT_EQ(topksae_decode_csr(c.handle, nullptr, nullptr, bad_indptr, idx.data(), val.data(), 1, out.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  const int64_t decreasing[3] = {0, 2, 1};
  EXPECT_EQ(topksae_decode_csr(c.handle, nullptr, nullptr, decreasing, idx.data(), val.data(), 2, out.data()),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(message_has("decreases")) << topksae_last_error();
  // Construction errors.
  topksae_model* m = reinterpret_cast<topksae_model*>(0x1);
  EXPECT_EQ(topksae_model_from_weights(kDin, kDsae, kDsae + 1, 1, "none", c.sae.params.W_enc.data(),
                                       c.sae.params.b_enc.data(), c.sae.params.W_dec.data(), c.sae.params.b_dec.data(),
                                       TOPKSAE_DEVICE_CPU, &m),
            TOPKSAE_ERROR);
  EXPECT_EQ(m, nullptr) << "a failed constructor leaves *out NULL";
  EXPECT_EQ(topksae_model_from_weights(kDin, kDsae, kK, 1, "none", nullptr, nullptr, nullptr, nullptr,
                                       TOPKSAE_DEVICE_CPU, &m),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(topksae_model_from_weights(kDin, kDsae, kK, 1, "none", c.sae.params.W_enc.data(), c.sae.params.b_enc.data(),
                                       c.sae.params.W_dec.data(), c.sae.params.b_dec.data(), TOPKSAE_DEVICE_CPU,
                                       nullptr),
            TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(topksae_model_get_info(c.handle, nullptr), TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_STRNE(topksae_status_name(TOPKSAE_ERROR), "");
  // Freeing NULL is a no-op.
  topksae_model_free(nullptr);
  topksae_workspace_free(nullptr);
  topksae_hooks_free(nullptr);
}

// One model used through the C API by several threads at once, in lock step:
//  - each thread's last error is its own: a failure in one thread neither shows in another nor is
//    cleared by another's successful call (the even threads fail, the odd ones succeed, then all
//    read their message while the others have made their calls);
//  - ws == NULL is the calling thread's own workspace: the threads' results, computed at the same
//    time through it, are the serial ones bit for bit.
TEST(ApiC, ThreadsKeepTheirOwnLastErrorAndNullWorkspace) {
  CModel c;
  ASSERT_NE(c.handle, nullptr);
  constexpr int kThreads = 4, kRounds = 25;
  const int64_t B = 33;  // each thread its own batch size, so that a shared workspace would be resized under it
  std::vector<std::vector<float>> xs, want_val, want_out;
  std::vector<std::vector<int32_t>> want_idx;
  for (int t = 0; t < kThreads; ++t) {
    const int64_t rows = B + t;
    xs.push_back(randn(size_t(rows * kDin), 300 + uint64_t(t)));
    want_idx.emplace_back(size_t(rows * kK));
    want_val.emplace_back(size_t(rows * kK));
    want_out.emplace_back(size_t(rows * kDin));
    ASSERT_EQ(topksae_encode_topk(c.handle, nullptr, nullptr, xs.back().data(), rows, kDin, want_idx.back().data(),
                                  want_val.back().data()),
              TOPKSAE_OK);
    ASSERT_EQ(topksae_forward(c.handle, nullptr, nullptr, xs.back().data(), rows, kDin, 0, want_out.back().data()),
              TOPKSAE_OK);
    EXPECT_NONZERO(want_val.back());
    EXPECT_NONZERO(want_out.back());
  }
  std::atomic<int> arrived{0};
  auto wait_all = [&](int phase) {  // a barrier: phase p is passed when every thread arrived p times
    arrived.fetch_add(1);
    while (arrived.load() < phase * kThreads) std::this_thread::yield();
  };
  std::vector<std::string> problems(kThreads);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      const int64_t rows = B + t;
      std::vector<int32_t> idx(size_t(rows * kK));
      std::vector<float> val(size_t(rows * kK)), out(size_t(rows * kDin));
      const std::string mine = "has " + std::to_string(kDin + 1 + t) + " columns";
      auto note = [&](const std::string& what) {
        if (problems[size_t(t)].empty()) problems[size_t(t)] = what;
      };
      for (int r = 0; r < kRounds; ++r) {
        if (t % 2 == 0) {
          if (topksae_encode_topk(c.handle, nullptr, nullptr, xs[size_t(t)].data(), rows, kDin + 1 + t, idx.data(),
                                  val.data()) != TOPKSAE_ERROR_INVALID_ARGUMENT)
            note("a bad call did not fail");
        } else {
          if (topksae_encode_topk(c.handle, nullptr, nullptr, xs[size_t(t)].data(), rows, kDin, idx.data(),
                                  val.data()) != TOPKSAE_OK ||
              topksae_forward(c.handle, nullptr, nullptr, xs[size_t(t)].data(), rows, kDin, 0, out.data()) !=
                  TOPKSAE_OK)
            note(std::string("a good call failed: ") + topksae_last_error());
          if (idx != want_idx[size_t(t)] || val != want_val[size_t(t)] || out != want_out[size_t(t)])
            note("round " + std::to_string(r) + ": results differ from the serial ones");
        }
        wait_all(2 * r + 1);  // every thread has made this round's call
        const std::string msg = topksae_last_error();
        if (t % 2 == 0 && msg.find(mine) == std::string::npos)
          note("round " + std::to_string(r) + ": last error \"" + msg + "\" is not this thread's (" + mine + ")");
        if (t % 2 == 1 && !msg.empty()) note("round " + std::to_string(r) + ": another thread's error: " + msg);
        wait_all(2 * r + 2);  // every thread has read its message before the next round's calls
      }
      // The even threads' own workspaces work too, at the same time as the odd ones' (no barrier).
      for (int r = 0; r < kRounds; ++r) {
        if (topksae_forward(c.handle, nullptr, nullptr, xs[size_t(t)].data(), rows, kDin, 0, out.data()) != TOPKSAE_OK ||
            out != want_out[size_t(t)])
          note("free-running forward differs from the serial one");
      }
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(problems[size_t(t)], "") << "thread " << t;
}

TEST(ApiC, CudaModelsFailClearlyWithoutTheBackend) {
  if (cuda_available()) GTEST_SKIP() << "a CUDA device is present";
  CModel c;
  topksae_model* m = nullptr;
  EXPECT_EQ(topksae_model_from_weights(kDin, kDsae, kK, 1, "none", c.sae.params.W_enc.data(), c.sae.params.b_enc.data(),
                                       c.sae.params.W_dec.data(), c.sae.params.b_dec.data(), TOPKSAE_DEVICE_CUDA, &m),
            TOPKSAE_ERROR);
  EXPECT_TRUE(message_has("CUDA inference backend not available")) << topksae_last_error();
  EXPECT_EQ(m, nullptr);
}

TEST(ApiMisuse, CppChecksThrowInvalidArgumentNamingTheProblem) {
  auto model = Model::from_sae(random_sae(kDin, kDsae, kK, 65));
  auto x = randn(size_t(kB * kDin), 66);
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK)), out(size_t(kB * kDin));
  Workspace ws;
  auto expect_invalid = [](auto&& call, const char* needle) {
    try {
      call();
      ADD_FAILURE() << "expected InvalidArgument mentioning '" << needle << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_invalid([&] { model->encode_topk(ws, {x.data(), kB, kDin - 1}, {idx.data(), kB, kK}, {val.data(), kB, kK}); },
                 "d_in=23");
  expect_invalid([&] { model->encode_topk(ws, {x.data(), kB, kDin}, {idx.data(), kB, kK + 1}, {val.data(), kB, kK}); },
                 "k=5");
  expect_invalid([&] { model->encode_topk(ws, {x.data(), kB, kDin}, {idx.data(), kB - 1, kK}, {val.data(), kB, kK}); },
                 "the batch has 7");
  expect_invalid([&] { model->forward(ws, {x.data(), kB, kDin}, {x.data(), kB, kDin}); }, "overlaps");
  expect_invalid([&] { model->decode_dense(ws, {val.data(), kB, kK}, {out.data(), kB, kDin}); }, "d_sae=97");
  CallOptions opts;
  opts.cpu_threads = -1;
  expect_invalid([&] { model->forward(ws, {x.data(), kB, kDin}, {out.data(), kB, kDin}, false, opts); },
                 "cpu_threads");
  // No such CUDA device (or none at all): refused at load.
  EXPECT_THROW(Model::from_sae(random_sae(kDin, kDsae, kK, 65), ModelOptions{Device::cuda, 99}), Error);
  ModelOptions bad_rows;
  bad_rows.cuda_encode_rows = -2;
  expect_invalid([&] { Model::from_sae(random_sae(kDin, kDsae, kK, 65), bad_rows); }, "cuda_encode_rows is -2");
  // A failed call leaves the workspace usable.
  model->forward(ws, {x.data(), kB, kDin}, {out.data(), kB, kDin});
  EXPECT_NONZERO(out);
}
