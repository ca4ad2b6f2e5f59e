// The inference API (api.h) on a CUDA model: every op against the CPU model on the same SAE, device
// pointers used in place, N threads with their own workspaces and streams against the serial
// result, no device allocation once warm, an ablation hook, misuse refused, the C API with device
// pointers and a stream. Every test skips without a GPU; the suite is CudaApi so that
// tools/gpu_check.sh (--gtest_filter=Cuda*) runs it.
#include "test_util.h"

#ifdef TOPKSAE_HAS_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>

#include "cuda_test_util.h"
#include "precision_check.h"
#include "topksae/api.h"
#include "topksae/ops_cpu.h"
#include "topksae/topksae_c.h"

namespace topksae::test {
namespace {

constexpr int64_t kDin = 37, kDsae = 211, kK = 7, kB = 13;  // not multiples of any block size

ModelOptions on_gpu(const char* precision = "fp32", int64_t encode_rows = 0) {
  ModelOptions o;
  o.device = Device::cuda;
  o.cuda_precision = precision;
  o.cuda_encode_rows = encode_rows;
  return o;
}

// A stream owned by a test.
struct TestStream {
  cudaStream_t s = nullptr;
  TestStream() { EXPECT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess); }
  ~TestStream() { (void)cudaStreamDestroy(s); }
  Stream get() const { return reinterpret_cast<Stream>(s); }
  void sync() const { EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess); }
};

// Smallest gap, over rows, between the k-th and (k+1)-th largest pre-activation on the CPU: the
// data is tie-free for the selection when this is far above the GEMM's rounding differences.
double min_selection_gap(const Sae& sae, const std::vector<float>& x, int64_t B) {
  const int64_t d = sae.cfg.d_in, n = sae.cfg.d_sae, k = sae.cfg.k;
  std::vector<float> u(static_cast<size_t>(B * d)), h(static_cast<size_t>(B * n));
  cpu::process_sae_in(sae, x.data(), B, u.data(), nullptr);
  cpu::encode_pre(sae, u.data(), B, h.data());
  double gap = INFINITY;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<float> row(h.begin() + b * n, h.begin() + (b + 1) * n);
    std::sort(row.begin(), row.end(), std::greater<float>());
    gap = std::min(gap, double(row[size_t(k - 1)]) - double(row[size_t(k)]));
  }
  return gap;
}

// Per row, latent -> value of top-k pairs [B, width] (zeros kept: a selected latent with value 0
// is still part of the set).
std::vector<std::map<int32_t, float>> as_sets(const std::vector<int32_t>& idx, const std::vector<float>& val,
                                              int64_t B, int64_t width) {
  std::vector<std::map<int32_t, float>> rows(static_cast<size_t>(B));
  for (int64_t i = 0; i < B * width; ++i) rows[size_t(i / width)][idx[size_t(i)]] = val[size_t(i)];
  return rows;
}

void expect_same_pairs(const std::vector<int32_t>& ai, const std::vector<float>& av, const std::vector<int32_t>& bi,
                       const std::vector<float>& bv, int64_t B, int64_t width, double atol, double rtol) {
  auto a = as_sets(ai, av, B, width), b = as_sets(bi, bv, B, width);
  for (int64_t r = 0; r < B; ++r) {
    ASSERT_EQ(a[size_t(r)].size(), b[size_t(r)].size()) << "row " << r;
    for (const auto& [j, v] : b[size_t(r)]) {
      auto it = a[size_t(r)].find(j);
      ASSERT_NE(it, a[size_t(r)].end()) << "row " << r << ": latent " << j << " missing";
      EXPECT_NEAR(it->second, v, atol + rtol * std::abs(v)) << "row " << r << " latent " << j;
    }
  }
}

// Each normalisation, with the encoder GEMM + top-k over the whole batch (the automatic choice at
// this size) and in chunks of 4 rows (13 = 3 x 4 + 1).
TEST(CudaApi, EveryOpMatchesTheCpuModel) {
  SKIP_WITHOUT_GPU();
  for (int64_t encode_rows : {int64_t(0), int64_t(4)})
  for (Normalize norm : {Normalize::none, Normalize::expected_average_only_in, Normalize::constant_norm_rescale,
                         Normalize::layer_norm}) {
    SCOPED_TRACE(::testing::Message() << normalize_name(norm) << ", cuda_encode_rows " << encode_rows);
    Sae sae = random_sae(kDin, kDsae, kK, 11, norm);
    auto cpu_model = Model::from_sae(random_sae(kDin, kDsae, kK, 11, norm));
    auto gpu_model = Model::from_sae(std::move(sae), on_gpu("fp32", encode_rows));
    ASSERT_EQ(gpu_model->device(), Device::cuda);
    const auto x = randn(size_t(kB * kDin), 12);
    ASSERT_GT(min_selection_gap(cpu_model->sae(), x, kB), 1e-4) << "test data is not tie-free";
    Workspace wc, wg;

    // top-k pairs
    std::vector<int32_t> ci(size_t(kB * kK)), gi(size_t(kB * kK));
    std::vector<float> cv(size_t(kB * kK)), gv(size_t(kB * kK));
    cpu_model->encode_topk(wc, {x.data(), kB, kDin}, {ci.data(), kB, kK}, {cv.data(), kB, kK});
    gpu_model->encode_topk(wg, {x.data(), kB, kDin}, {gi.data(), kB, kK}, {gv.data(), kB, kK});
    EXPECT_NONZERO(cv);
    expect_same_pairs(gi, gv, ci, cv, kB, kK, 1e-4, 1e-4);
    // and in the same order (tie-free values): value descending
    for (int64_t b = 0; b < kB; ++b)
      for (int64_t i = 1; i < kK; ++i) EXPECT_GE(gv[size_t(b * kK + i - 1)], gv[size_t(b * kK + i)]);

    // CSR
    std::vector<int64_t> cp(size_t(kB + 1)), gp(size_t(kB + 1));
    std::vector<int32_t> cci(size_t(kB * kK)), gci(size_t(kB * kK));
    std::vector<float> ccv(size_t(kB * kK)), gcv(size_t(kB * kK));
    const int64_t cnnz = cpu_model->encode_csr(wc, {x.data(), kB, kDin}, {cp.data(), cci.data(), ccv.data(), kB * kK});
    const int64_t gnnz = gpu_model->encode_csr(wg, {x.data(), kB, kDin}, {gp.data(), gci.data(), gcv.data(), kB * kK});
    EXPECT_GT(cnnz, 0);
    ASSERT_EQ(gnnz, cnnz);
    EXPECT_EQ(gp, cp);
    for (int64_t b = 0; b < kB; ++b) {
      std::set<int32_t> a(gci.begin() + gp[size_t(b)], gci.begin() + gp[size_t(b + 1)]);
      std::set<int32_t> c(cci.begin() + cp[size_t(b)], cci.begin() + cp[size_t(b + 1)]);
      EXPECT_EQ(a, c) << "row " << b;
    }

    // dense
    std::vector<float> cz(size_t(kB * kDsae)), gz(size_t(kB * kDsae));
    cpu_model->encode_dense(wc, {x.data(), kB, kDin}, {cz.data(), kB, kDsae});
    gpu_model->encode_dense(wg, {x.data(), kB, kDin}, {gz.data(), kB, kDsae});
    EXPECT_NONZERO(cz);
    EXPECT_ALLCLOSE(gz.data(), cz.data(), gz.size(), 1e-4, 1e-4);

    // decode the CPU's codes three ways
    std::vector<float> co(size_t(kB * kDin)), go(size_t(kB * kDin));
    cpu_model->decode_topk(wc, {ci.data(), kB, kK}, {cv.data(), kB, kK}, {co.data(), kB, kDin});
    gpu_model->decode_topk(wg, {ci.data(), kB, kK}, {cv.data(), kB, kK}, {go.data(), kB, kDin});
    EXPECT_NONZERO(co);
    EXPECT_ALLCLOSE(go.data(), co.data(), go.size(), 1e-5, 1e-4);
    std::fill(go.begin(), go.end(), 0.f);
    gpu_model->decode_csr(wg, {cp.data(), cci.data(), ccv.data(), kB}, {go.data(), kB, kDin});
    EXPECT_ALLCLOSE(go.data(), co.data(), go.size(), 1e-5, 1e-4);
    std::fill(go.begin(), go.end(), 0.f);
    gpu_model->decode_dense(wg, {cz.data(), kB, kDsae}, {go.data(), kB, kDin});
    EXPECT_ALLCLOSE(go.data(), co.data(), go.size(), 1e-5, 1e-4);

    // forward, with and without the error term
    for (bool err : {false, true}) {
      cpu_model->forward(wc, {x.data(), kB, kDin}, {co.data(), kB, kDin}, err);
      gpu_model->forward(wg, {x.data(), kB, kDin}, {go.data(), kB, kDin}, err);
      EXPECT_NONZERO(co);
      EXPECT_ALLCLOSE(go.data(), co.data(), go.size(), 1e-4, 1e-3);
    }
  }
}

TEST(CudaApi, DevicePointersAreUsedInPlaceOnTheCallersStream) {
  SKIP_WITHOUT_GPU();
  auto model = Model::from_sae(random_sae(kDin, kDsae, kK, 21), on_gpu());
  const auto x = randn(size_t(kB * kDin), 22);
  // Reference: host pointers.
  // Reference: host pointers, and the CPU model's reconstruction (without the error term, which
  // would give back about x for any reconstruction).
  Workspace wh, wc;
  std::vector<int32_t> hi(size_t(kB * kK));
  std::vector<float> hv(size_t(kB * kK)), hout(size_t(kB * kDin)), cpu_out(size_t(kB * kDin));
  model->encode_topk(wh, {x.data(), kB, kDin}, {hi.data(), kB, kK}, {hv.data(), kB, kK});
  model->forward(wh, {x.data(), kB, kDin}, {hout.data(), kB, kDin}, false);
  Model::from_sae(random_sae(kDin, kDsae, kK, 21))->forward(wc, {x.data(), kB, kDin}, {cpu_out.data(), kB, kDin}, false);
  EXPECT_NONZERO(cpu_out);
  EXPECT_ALLCLOSE(hout.data(), cpu_out.data(), hout.size(), 1e-5, 1e-4);

  DevVec<float> dx(x);
  DevVec<int32_t> di(size_t(kB * kK));
  DevVec<float> dv(size_t(kB * kK)), dout(size_t(kB * kDin));
  TestStream s;
  CallOptions o;
  o.memory = Device::cuda;
  o.stream = s.get();
  Workspace wd;
  model->encode_topk(wd, {dx.p(), kB, kDin}, {di.p(), kB, kK}, {dv.p(), kB, kK}, o);
  s.sync();
  const size_t bytes_after_encode = wd.bytes();
  model->forward(wd, {dx.p(), kB, kDin}, {dout.p(), kB, kDin}, false, o);
  s.sync();
  EXPECT_EQ(di.get(), hi);
  EXPECT_NONZERO(hv);
  EXPECT_ALLCLOSE(dv.get().data(), hv.data(), hv.size(), 1e-6, 1e-6);
  EXPECT_ALLCLOSE(dout.get().data(), hout.data(), hout.size(), 1e-6, 1e-6);
  // No copy of x and no pair staging: the device-pointer encode holds less scratch than the host
  // one by at least the staged x [B, d_in] and pairs [B, k].
  Workspace we;
  model->encode_topk(we, {x.data(), kB, kDin}, {hi.data(), kB, kK}, {hv.data(), kB, kK});
  EXPECT_GE(we.bytes(), bytes_after_encode + size_t(kB * kDin) * 4 + size_t(kB * kK) * 8);

  // CSR and dense into device arrays, decode from device codes.
  DevVec<int64_t> dp(size_t(kB + 1));
  DevVec<int32_t> dci(size_t(kB * kK));
  DevVec<float> dcv(size_t(kB * kK)), dz(size_t(kB * kDsae)), dec(size_t(kB * kDin));
  const int64_t nnz = model->encode_csr(wd, {dx.p(), kB, kDin}, {dp.p(), dci.p(), dcv.p(), kB * kK}, o);
  std::vector<int64_t> hp(size_t(kB + 1));
  std::vector<int32_t> hci(size_t(kB * kK));
  std::vector<float> hcv(size_t(kB * kK));
  EXPECT_EQ(model->encode_csr(wh, {x.data(), kB, kDin}, {hp.data(), hci.data(), hcv.data(), kB * kK}), nnz);
  s.sync();
  EXPECT_EQ(dp.get(), hp);
  model->encode_dense(wd, {dx.p(), kB, kDin}, {dz.p(), kB, kDsae}, o);
  std::vector<float> hz(size_t(kB * kDsae));
  model->encode_dense(wh, {x.data(), kB, kDin}, {hz.data(), kB, kDsae});
  s.sync();
  EXPECT_NONZERO(hz);
  EXPECT_ALLCLOSE(dz.get().data(), hz.data(), hz.size(), 1e-6, 1e-6);
  std::vector<float> ref(size_t(kB * kDin));
  model->decode_topk(wh, {hi.data(), kB, kK}, {hv.data(), kB, kK}, {ref.data(), kB, kDin});
  EXPECT_NONZERO(ref);
  model->decode_topk(wd, {di.p(), kB, kK}, {dv.p(), kB, kK}, {dec.p(), kB, kDin}, o);
  s.sync();
  EXPECT_ALLCLOSE(dec.get().data(), ref.data(), ref.size(), 1e-5, 1e-5);
  model->decode_csr(wd, {dp.p(), dci.p(), dcv.p(), kB}, {dec.p(), kB, kDin}, o);
  s.sync();
  EXPECT_ALLCLOSE(dec.get().data(), ref.data(), ref.size(), 1e-5, 1e-5);
  model->decode_dense(wd, {dz.p(), kB, kDsae}, {dec.p(), kB, kDin}, o);
  s.sync();
  EXPECT_ALLCLOSE(dec.get().data(), ref.data(), ref.size(), 1e-4, 1e-4);
}

TEST(CudaApi, ThreadsWithTheirOwnWorkspacesAndStreamsGiveTheSerialResult) {
  SKIP_WITHOUT_GPU();
  auto model = Model::from_sae(random_sae(kDin, kDsae, kK, 31), on_gpu());
  constexpr int kThreads = 4, kIters = 6;
  std::vector<std::vector<float>> xs;
  for (int i = 0; i < kThreads * kIters; ++i) xs.push_back(randn(size_t(kB * kDin), 100 + uint64_t(i)));
  // Serial reference.
  // Serial reference; forward without the error term (with it, any reconstruction gives about x).
  std::vector<std::vector<int32_t>> ref_i(xs.size());
  std::vector<std::vector<float>> ref_v(xs.size()), ref_o(xs.size());
  Workspace ws;
  for (size_t i = 0; i < xs.size(); ++i) {
    ref_i[i].resize(size_t(kB * kK));
    ref_v[i].resize(size_t(kB * kK));
    ref_o[i].resize(size_t(kB * kDin));
    model->encode_topk(ws, {xs[i].data(), kB, kDin}, {ref_i[i].data(), kB, kK}, {ref_v[i].data(), kB, kK});
    model->forward(ws, {xs[i].data(), kB, kDin}, {ref_o[i].data(), kB, kDin}, false);
  }
  std::vector<std::vector<int32_t>> got_i(xs.size(), std::vector<int32_t>(size_t(kB * kK)));
  std::vector<std::vector<float>> got_v(xs.size(), std::vector<float>(size_t(kB * kK)));
  std::vector<std::vector<float>> got_o(xs.size(), std::vector<float>(size_t(kB * kDin)));
  std::vector<std::string> errors(kThreads);
  std::vector<std::thread> pool;
  for (int t = 0; t < kThreads; ++t)
    pool.emplace_back([&, t] {
      try {
        TestStream s;
        Workspace w;
        DevVec<float> dx(size_t(kB * kDin)), dout(size_t(kB * kDin));
        for (int it = 0; it < kIters; ++it) {
          const size_t i = size_t(t * kIters + it);
          CallOptions o;
          o.stream = s.get();
          model->encode_topk(w, {xs[i].data(), kB, kDin}, {got_i[i].data(), kB, kK}, {got_v[i].data(), kB, kK}, o);
          if (it % 2 == 0) {  // host memory
            model->forward(w, {xs[i].data(), kB, kDin}, {got_o[i].data(), kB, kDin}, false, o);
          } else {  // device memory on the thread's stream
            detail::copy_bytes(dx.p(), Device::cuda, xs[i].data(), Device::cpu, xs[i].size() * 4);
            o.memory = Device::cuda;
            model->forward(w, {dx.p(), kB, kDin}, {dout.p(), kB, kDin}, false, o);
            s.sync();
            got_o[i] = dout.get();
          }
        }
      } catch (const std::exception& e) {
        errors[size_t(t)] = e.what();
      }
    });
  for (auto& th : pool) th.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  for (size_t i = 0; i < xs.size(); ++i) {
    EXPECT_EQ(got_i[i], ref_i[i]) << "batch " << i;
    EXPECT_NONZERO(ref_v[i]);
    EXPECT_ALLCLOSE(got_v[i].data(), ref_v[i].data(), ref_v[i].size(), 1e-6, 1e-6);
    EXPECT_NONZERO(ref_o[i]);
    EXPECT_ALLCLOSE(got_o[i].data(), ref_o[i].data(), ref_o[i].size(), 1e-6, 1e-6);
  }
}

// NaN rows (api.h, "Non-finite input"): the GPU gives what the CPU gives (ApiEncode.NanRows*): in a
// NaN row, latents 0..k-1 with NaN values, a NaN reconstruction, k CSR entries; the other rows as
// without NaN. Host and device pointers.
TEST(CudaApi, NanRowsGiveWhatTheCpuGives) {
  SKIP_WITHOUT_GPU();
  for (Normalize norm : {Normalize::none, Normalize::layer_norm}) {
    SCOPED_TRACE(normalize_name(norm));
    auto gpu = Model::from_sae(random_sae(kDin, kDsae, kK, 33, norm), on_gpu());
    auto cpu_model = Model::from_sae(random_sae(kDin, kDsae, kK, 33, norm));
    auto x = randn(size_t(kB * kDin), 34);
    const int64_t nan_rows[] = {3, 11};
    for (int64_t r : nan_rows) x[size_t(r * kDin + 6)] = NAN;
    auto is_nan_row = [&](int64_t b) { return b == nan_rows[0] || b == nan_rows[1]; };
    Workspace wc, wg;
    std::vector<int32_t> ci(size_t(kB * kK)), gi(size_t(kB * kK));
    std::vector<float> cv(size_t(kB * kK)), gv(size_t(kB * kK)), co(size_t(kB * kDin)), go(size_t(kB * kDin));
    cpu_model->encode_topk(wc, {x.data(), kB, kDin}, {ci.data(), kB, kK}, {cv.data(), kB, kK});
    cpu_model->forward(wc, {x.data(), kB, kDin}, {co.data(), kB, kDin}, false);
    // CSR: k entries in a NaN row (NaN is not zero), as on the CPU.
    std::vector<int64_t> cp(size_t(kB + 1)), gp(size_t(kB + 1));
    std::vector<int32_t> cci(size_t(kB * kK)), gci(size_t(kB * kK));
    std::vector<float> ccv(size_t(kB * kK)), gcv(size_t(kB * kK));
    cpu_model->encode_csr(wc, {x.data(), kB, kDin}, {cp.data(), cci.data(), ccv.data(), kB * kK});
    for (bool device : {false, true}) {
      SCOPED_TRACE(device ? "device pointers" : "host pointers");
      std::fill(gi.begin(), gi.end(), -1);
      std::fill(gv.begin(), gv.end(), 0.f);
      std::fill(go.begin(), go.end(), 0.f);
      if (device) {
        DevVec<float> dx(x), dv(size_t(kB * kK)), dout(size_t(kB * kDin));
        DevVec<int32_t> di(size_t(kB * kK));
        CallOptions o;
        o.memory = Device::cuda;
        gpu->encode_topk(wg, {dx.p(), kB, kDin}, {di.p(), kB, kK}, {dv.p(), kB, kK}, o);
        gpu->forward(wg, {dx.p(), kB, kDin}, {dout.p(), kB, kDin}, false, o);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        gi = di.get();
        gv = dv.get();
        go = dout.get();
      } else {
        gpu->encode_topk(wg, {x.data(), kB, kDin}, {gi.data(), kB, kK}, {gv.data(), kB, kK});
        gpu->forward(wg, {x.data(), kB, kDin}, {go.data(), kB, kDin}, false);
        gpu->encode_csr(wg, {x.data(), kB, kDin}, {gp.data(), gci.data(), gcv.data(), kB * kK});
        EXPECT_EQ(gp, cp);
        EXPECT_EQ(gci, cci);
      }
      EXPECT_EQ(gi, ci);
      for (int64_t b = 0; b < kB; ++b) {
        SCOPED_TRACE(::testing::Message() << "row " << b);
        if (is_nan_row(b)) {
          for (int64_t i = 0; i < kK; ++i) {
            EXPECT_EQ(gi[size_t(b * kK + i)], int32_t(i));
            EXPECT_TRUE(std::isnan(gv[size_t(b * kK + i)])) << gv[size_t(b * kK + i)];
            EXPECT_TRUE(std::isnan(cv[size_t(b * kK + i)]));
          }
          for (int64_t c = 0; c < kDin; ++c) EXPECT_TRUE(std::isnan(go[size_t(b * kDin + c)]));
        } else {
          EXPECT_ALLCLOSE(gv.data() + b * kK, cv.data() + b * kK, size_t(kK), 1e-5, 1e-5);
          EXPECT_ALLCLOSE(go.data() + b * kDin, co.data() + b * kDin, size_t(kDin), 1e-5, 1e-4);
        }
      }
      EXPECT_GT(l2(co.data(), size_t(kDin)), 0.0) << "row 0's reconstruction is zero";
    }
  }
}

TEST(CudaApi, AWarmWorkspaceAllocatesNoDeviceMemory) {
  SKIP_WITHOUT_GPU();
  auto model = Model::from_sae(random_sae(kDin, kDsae, kK, 41, Normalize::layer_norm), on_gpu());
  const auto x = randn(size_t(kB * kDin), 42);
  DevVec<float> dx(x), dout(size_t(kB * kDin)), dv(size_t(kB * kK)), dz(size_t(kB * kDsae));
  DevVec<int32_t> di(size_t(kB * kK));
  std::vector<int32_t> hi(size_t(kB * kK)), ci(size_t(kB * kK));
  std::vector<float> hv(size_t(kB * kK)), cv(size_t(kB * kK)), hz(size_t(kB * kDsae)), out(size_t(kB * kDin));
  std::vector<int64_t> hp(size_t(kB + 1));
  DevVec<int64_t> dp(size_t(kB + 1));
  TestStream s1, s2;
  Workspace ws;
  auto all_ops = [&](int64_t B, Stream stream) {
    CallOptions h, d;
    h.stream = stream;
    d.stream = stream;
    d.memory = Device::cuda;
    model->encode_topk(ws, {x.data(), B, kDin}, {hi.data(), B, kK}, {hv.data(), B, kK}, h);
    model->encode_csr(ws, {x.data(), B, kDin}, {hp.data(), ci.data(), cv.data(), B * kK}, h);
    model->encode_dense(ws, {x.data(), B, kDin}, {hz.data(), B, kDsae}, h);
    model->decode_topk(ws, {hi.data(), B, kK}, {hv.data(), B, kK}, {out.data(), B, kDin}, h);
    model->decode_csr(ws, {hp.data(), ci.data(), cv.data(), B}, {out.data(), B, kDin}, h);
    model->decode_dense(ws, {hz.data(), B, kDsae}, {out.data(), B, kDin}, h);
    model->forward(ws, {x.data(), B, kDin}, {out.data(), B, kDin}, true, h);
    model->encode_topk(ws, {dx.p(), B, kDin}, {di.p(), B, kK}, {dv.p(), B, kK}, d);
    model->encode_csr(ws, {dx.p(), B, kDin}, {dp.p(), di.p(), dv.p(), B * kK}, d);
    model->encode_dense(ws, {dx.p(), B, kDin}, {dz.p(), B, kDsae}, d);
    model->decode_topk(ws, {di.p(), B, kK}, {dv.p(), B, kK}, {dout.p(), B, kDin}, d);
    model->decode_csr(ws, {dp.p(), di.p(), dv.p(), B}, {dout.p(), B, kDin}, d);
    model->decode_dense(ws, {dz.p(), B, kDsae}, {dout.p(), B, kDin}, d);
    model->forward(ws, {dx.p(), B, kDin}, {dout.p(), B, kDin}, false, d);
    EXPECT_EQ(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)), cudaSuccess);
  };
  all_ops(kB, s1.get());
  const uint64_t growths = ws.growths();
  const size_t bytes = ws.bytes();
  EXPECT_GT(growths, 0u);
  EXPECT_GT(bytes, size_t(kB * kDsae) * 4);  // the pre-activations at least
  all_ops(kB, s1.get());
  all_ops(kB - 4, s2.get());  // a smaller batch on another stream
  all_ops(kB, nullptr);       // the default stream
  EXPECT_EQ(ws.growths(), growths) << "a warm workspace grew";
  EXPECT_EQ(ws.bytes(), bytes);
  EXPECT_NONZERO(out);
}

TEST(CudaApi, AnAblationHookRemovesExactlyThatLatentsContribution) {
  SKIP_WITHOUT_GPU();
  Sae host = random_sae(kDin, kDsae, kK, 51);
  auto model = Model::from_sae(random_sae(kDin, kDsae, kK, 51), on_gpu());
  auto cpu_model = Model::from_sae(random_sae(kDin, kDsae, kK, 51));
  const auto x = randn(size_t(kB * kDin), 52);
  Workspace ws, wc;
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK));
  model->encode_topk(ws, {x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK});
  const int32_t latent = idx[0];  // row 0's strongest latent
  ASSERT_GT(val[0], 0.f);

  Hooks hooks;
  hooks.add(HookPoint::sae_acts_post, Hooks::ablate_latent(latent));
  CallOptions o;
  o.hooks = &hooks;
  std::vector<float> plain(size_t(kB * kDin)), ablated(size_t(kB * kDin)), cpu_ablated(size_t(kB * kDin));
  model->forward(ws, {x.data(), kB, kDin}, {plain.data(), kB, kDin}, true);
  const uint64_t built = ws.dense_acts_built();
  model->forward(ws, {x.data(), kB, kDin}, {ablated.data(), kB, kDin}, true, o);
  EXPECT_GT(ws.dense_acts_built(), built);  // z was built only because someone listened
  cpu_model->forward(wc, {x.data(), kB, kDin}, {cpu_ablated.data(), kB, kDin}, true, o);
  EXPECT_ALLCLOSE(ablated.data(), cpu_ablated.data(), ablated.size(), 1e-4, 1e-3);
  // With the error term, out changes by exactly -z[b, latent] * W_dec[latent] in each row.
  int rows_hit = 0;
  for (int64_t b = 0; b < kB; ++b) {
    float z = 0.f;
    for (int64_t i = 0; i < kK; ++i)
      if (idx[size_t(b * kK + i)] == latent) z = val[size_t(b * kK + i)];
    rows_hit += z != 0.f;
    for (int64_t c = 0; c < kDin; ++c) {
      const float expect = plain[size_t(b * kDin + c)] - z * host.params.W_dec[size_t(latent * kDin + c)];
      EXPECT_NEAR(ablated[size_t(b * kDin + c)], expect, 1e-4 + 1e-4 * std::abs(expect)) << b << "," << c;
    }
  }
  EXPECT_GE(rows_hit, 1);
  // The encoder's codes no longer contain it (and the row keeps k slots).
  std::vector<int32_t> hi(size_t(kB * kK));
  std::vector<float> hv(size_t(kB * kK));
  model->encode_topk(ws, {x.data(), kB, kDin}, {hi.data(), kB, kK}, {hv.data(), kB, kK}, o);
  for (int64_t i = 0; i < kB * kK; ++i) {
    if (hi[size_t(i)] == latent) EXPECT_EQ(hv[size_t(i)], 0.f);
  }
  // A hook at the pre-activations sees what the CPU's sees (host views on both).
  Hooks pre;
  pre.add(HookPoint::sae_acts_pre, Hooks::clamp_latent(latent, 100.f));
  o.hooks = &pre;
  std::vector<int32_t> ci(size_t(kB * kK));
  std::vector<float> cv(size_t(kB * kK));
  model->encode_topk(ws, {x.data(), kB, kDin}, {hi.data(), kB, kK}, {hv.data(), kB, kK}, o);
  cpu_model->encode_topk(wc, {x.data(), kB, kDin}, {ci.data(), kB, kK}, {cv.data(), kB, kK}, o);
  for (int64_t b = 0; b < kB; ++b) EXPECT_EQ(hi[size_t(b * kK)], latent);
  EXPECT_ALLCLOSE(hv.data(), cv.data(), hv.size(), 1e-4, 1e-4);
}

TEST(CudaApi, MisuseIsRefusedAndTheWorkspaceStaysUsable) {
  SKIP_WITHOUT_GPU();
  auto model = Model::from_sae(random_sae(kDin, kDsae, kK, 61), on_gpu());
  const auto x = randn(size_t(kB * kDin), 62);
  std::vector<int32_t> hi(size_t(kB * kK));
  std::vector<float> hv(size_t(kB * kK)), out(size_t(kB * kDin));
  DevVec<float> dx(x), dout(size_t(kB * kDin)), dv(size_t(kB * kK));
  DevVec<int32_t> di(size_t(kB * kK));
  Workspace ws;
  auto expect_invalid = [](auto&& call, const char* needle) {
    try {
      call();
      ADD_FAILURE() << "expected InvalidArgument mentioning '" << needle << "'";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  CallOptions d;
  d.memory = Device::cuda;
  expect_invalid([&] { model->forward(ws, {x.data(), kB, kDin - 1}, {out.data(), kB, kDin}); }, "d_in=37");
  expect_invalid([&] { model->forward(ws, {nullptr, kB, kDin}, {out.data(), kB, kDin}); }, "null pointer");
  expect_invalid([&] { model->forward(ws, {x.data(), kB, kDin}, {out.data(), kB, kDin}, false, d); },
                 "not CUDA device memory");
  expect_invalid([&] { model->forward(ws, {dx.p(), kB, kDin}, {out.data(), kB, kDin}); }, "is device memory");
  expect_invalid([&] { model->forward(ws, {dx.p(), kB, kDin}, {out.data(), kB, kDin}, false, d); },
                 "out is not CUDA device memory");
  // Device codes with a latent out of range are caught on the device before the gather.
  std::vector<int32_t> bad(size_t(kB * kK), 3);
  bad[5] = int32_t(kDsae);
  DevVec<int32_t> dbad(bad);
  expect_invalid([&] { model->decode_topk(ws, {dbad.p(), kB, kK}, {dv.p(), kB, kK}, {dout.p(), kB, kDin}, d); },
                 "out of range");
  std::vector<int64_t> ptr(size_t(kB + 1), 0);
  ptr[3] = 5;  // decreasing after row 3
  DevVec<int64_t> dptr(ptr);
  expect_invalid([&] { model->decode_csr(ws, {dptr.p(), di.p(), dv.p(), kB}, {dout.p(), kB, kDin}, d); },
                 "not a CSR offset array");
  // Too small a CSR capacity.
  std::vector<int64_t> hp(size_t(kB + 1));
  expect_invalid([&] { model->encode_csr(ws, {x.data(), kB, kDin}, {hp.data(), hi.data(), hv.data(), 2}); },
                 "capacity");
  // Load-time refusals.
  ModelOptions o = on_gpu();
  o.cuda_device = 99;
  expect_invalid([&] { Model::from_sae(random_sae(kDin, kDsae, kK, 61), o); }, "cuda_device");
  expect_invalid([&] { Model::from_sae(random_sae(kDin, kDsae, kK, 61), on_gpu("fp16")); }, "cuda_precision");
  // Streams and pointers of another device, where there is one.
  if (cuda_device_count() >= 2) {
    int prev = 0;
    ASSERT_EQ(cudaGetDevice(&prev), cudaSuccess);
    ASSERT_EQ(cudaSetDevice(1), cudaSuccess);
    cudaStream_t other = nullptr;
    ASSERT_EQ(cudaStreamCreate(&other), cudaSuccess);
    void* other_mem = nullptr;
    ASSERT_EQ(cudaMalloc(&other_mem, size_t(kB * kDin) * 4), cudaSuccess);
    ASSERT_EQ(cudaSetDevice(prev), cudaSuccess);
    CallOptions so;
    so.stream = reinterpret_cast<Stream>(other);
    expect_invalid([&] { model->forward(ws, {x.data(), kB, kDin}, {out.data(), kB, kDin}, false, so); },
                   "belongs to CUDA device 1");
    expect_invalid(
        [&] { model->forward(ws, {static_cast<float*>(other_mem), kB, kDin}, {dout.p(), kB, kDin}, false, d); },
        "is on CUDA device 1");
    (void)cudaFree(other_mem);
    (void)cudaStreamDestroy(other);
  }
  // After all that the workspace (and the context) still work.
  model->forward(ws, {x.data(), kB, kDin}, {out.data(), kB, kDin});
  EXPECT_NONZERO(out);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

// Codes naming a latent outside [0, d_sae) are refused with the same error by the CPU model and
// by the CUDA model, for host codes (checked by the Model) and device codes (checked on the
// device before the gather), as top-k pairs and as CSR; nothing is read out of bounds and the
// workspace stays usable.
TEST(CudaApi, OutOfRangeLatentsAreRefusedAlikeByBothEngines) {
  SKIP_WITHOUT_GPU();
  auto gpu = Model::from_sae(random_sae(kDin, kDsae, kK, 91), on_gpu());
  auto cpu_model = Model::from_sae(random_sae(kDin, kDsae, kK, 91));
  const auto x = randn(size_t(kB * kDin), 92);
  Workspace wc, wg;
  std::vector<int32_t> idx(size_t(kB * kK));
  std::vector<float> val(size_t(kB * kK)), out(size_t(kB * kDin)), ref(size_t(kB * kDin));
  cpu_model->encode_topk(wc, {x.data(), kB, kDin}, {idx.data(), kB, kK}, {val.data(), kB, kK});
  cpu_model->decode_topk(wc, {idx.data(), kB, kK}, {val.data(), kB, kK}, {ref.data(), kB, kDin});
  EXPECT_NONZERO(ref);
  std::vector<int64_t> ptr(size_t(kB + 1));
  for (int64_t b = 0; b <= kB; ++b) ptr[size_t(b)] = b * kK;  // every pair as a CSR entry

  TestStream s;
  CallOptions d;
  d.memory = Device::cuda;
  d.stream = s.get();
  const std::string needle = "out of range [0, " + std::to_string(kDsae) + ")";
  auto expect_refused = [&](auto&& call, const char* what) {
    try {
      call();
      ADD_FAILURE() << what << ": expected InvalidArgument";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << what << ": " << e.what();
    }
  };
  for (int32_t wild : {int32_t(kDsae), int32_t(-1), INT32_MAX}) {
    SCOPED_TRACE(wild);
    std::vector<int32_t> bad = idx;
    bad[size_t(kB * kK - 2)] = wild;  // the last row
    DevVec<int32_t> dbad(bad);
    DevVec<float> dval(val), dout(size_t(kB * kDin));
    DevVec<int64_t> dptr(ptr);
    expect_refused(
        [&] { cpu_model->decode_topk(wc, {bad.data(), kB, kK}, {val.data(), kB, kK}, {out.data(), kB, kDin}); },
        "cpu model, top-k");
    expect_refused([&] { cpu_model->decode_csr(wc, {ptr.data(), bad.data(), val.data(), kB}, {out.data(), kB, kDin}); },
                   "cpu model, csr");
    expect_refused([&] { gpu->decode_topk(wg, {bad.data(), kB, kK}, {val.data(), kB, kK}, {out.data(), kB, kDin}); },
                   "cuda model, host top-k");
    expect_refused([&] { gpu->decode_csr(wg, {ptr.data(), bad.data(), val.data(), kB}, {out.data(), kB, kDin}); },
                   "cuda model, host csr");
    expect_refused([&] { gpu->decode_topk(wg, {dbad.p(), kB, kK}, {dval.p(), kB, kK}, {dout.p(), kB, kDin}, d); },
                   "cuda model, device top-k");
    expect_refused([&] { gpu->decode_csr(wg, {dptr.p(), dbad.p(), dval.p(), kB}, {dout.p(), kB, kDin}, d); },
                   "cuda model, device csr");
    s.sync();
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
    // The same workspace then decodes good device codes on the same stream.
    DevVec<int32_t> dgood(idx);
    gpu->decode_topk(wg, {dgood.p(), kB, kK}, {dval.p(), kB, kK}, {dout.p(), kB, kDin}, d);
    s.sync();
    EXPECT_ALLCLOSE(dout.get().data(), ref.data(), ref.size(), 1e-5, 1e-5);
  }
}

TEST(CudaApi, TheCApiTakesDevicePointersAndAStream) {
  SKIP_WITHOUT_GPU();
  Sae sae = random_sae(kDin, kDsae, kK, 71);
  topksae_model* m = nullptr;
  ASSERT_EQ(topksae_model_from_weights(kDin, kDsae, kK, 1, "none", sae.params.W_enc.data(), sae.params.b_enc.data(),
                                       sae.params.W_dec.data(), sae.params.b_dec.data(), TOPKSAE_DEVICE_CUDA, &m),
            TOPKSAE_OK)
      << topksae_last_error();
  topksae_model_info info{};
  ASSERT_EQ(topksae_model_get_info(m, &info), TOPKSAE_OK);
  EXPECT_EQ(info.device, TOPKSAE_DEVICE_CUDA);
  const auto x = randn(size_t(kB * kDin), 72);
  auto cpu_model = Model::from_sae(std::move(sae));
  Workspace wc;
  TestStream s;
  DevVec<float> dx(x), dout(size_t(kB * kDin));
  topksae_call call{};
  call.memory = TOPKSAE_DEVICE_CUDA;
  call.stream = s.s;
  // Without the error term first: with it, any reconstruction gives back about x.
  for (int err : {0, 1}) {
    SCOPED_TRACE(err ? "with the error term" : "reconstruction");
    std::vector<float> ref(size_t(kB * kDin));
    cpu_model->forward(wc, {x.data(), kB, kDin}, {ref.data(), kB, kDin}, err != 0);
    EXPECT_EQ(topksae_forward(m, nullptr, &call, dx.p(), kB, kDin, err, dout.p()), TOPKSAE_OK) << topksae_last_error();
    s.sync();
    EXPECT_NONZERO(ref);
    EXPECT_ALLCLOSE(dout.get().data(), ref.data(), ref.size(), 1e-4, 1e-3);
  }
  // Host pointers with memory = CUDA: an invalid argument, not a crash.
  EXPECT_EQ(topksae_forward(m, nullptr, &call, x.data(), kB, kDin, 1, dout.p()), TOPKSAE_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(topksae_last_error()).find("not CUDA device memory"), std::string::npos);
  topksae_model_free(m);
}

// tf32 / bf16 models: distinct latents per row, each a CPU winner up to near-ties, values within
// the precision's tolerance of the CPU pre-activation (tests/precision_check.h); and decode /
// forward (fp32 sparse kernels from those codes) agree with the CPU decode of the same codes.
TEST(CudaApi, ReducedPrecisionModelsSelectNearlyTheSameLatents) {
  SKIP_WITHOUT_GPU();
  const Sae sae = random_sae(kDin, kDsae, kK, 81);
  auto cpu_model = Model::from_sae(random_sae(kDin, kDsae, kK, 81));
  const auto x = randn(size_t(kB * kDin), 82);
  Workspace ws, wc;
  std::vector<int32_t> gi(size_t(kB * kK));
  std::vector<float> gv(size_t(kB * kK)), out(size_t(kB * kDin)), ref(size_t(kB * kDin));
  for (const char* p : {"tf32", "bf16"}) {
    SCOPED_TRACE(p);
    auto model = Model::from_sae(random_sae(kDin, kDsae, kK, 81), on_gpu(p));
    std::fill(gv.begin(), gv.end(), NAN);
    model->encode_topk(ws, {x.data(), kB, kDin}, {gi.data(), kB, kK}, {gv.data(), kB, kK});
    EXPECT_NONZERO(gv);
    const int64_t winners = expect_topk_near_cpu(sae, x.data(), kB, gi.data(), gv.data(), precision_tol(p));
    EXPECT_GE(double(winners), 0.8 * double(kB * kK)) << "latents among the CPU's top k";
    // forward = decode of the model's own codes (no error term).
    model->forward(ws, {x.data(), kB, kDin}, {out.data(), kB, kDin}, false);
    cpu_model->decode_topk(wc, {gi.data(), kB, kK}, {gv.data(), kB, kK}, {ref.data(), kB, kDin});
    EXPECT_NONZERO(ref);
    EXPECT_ALLCLOSE(out.data(), ref.data(), ref.size(), 1e-5, 1e-4);
  }
}

}  // namespace
}  // namespace topksae::test

#endif  // TOPKSAE_HAS_CUDA
