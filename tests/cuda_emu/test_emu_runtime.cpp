// Checks of the CUDA emulation itself (tests/cuda_emu/README.md): kernel execution (barriers, warp
// intrinsics, 2-D launches, atomics, early exit, __device__ symbols), launch-configuration errors
// as a GPU reports them, the memory bookkeeping, and the aborts for deadlocks and bad warp masks.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <string>
#include <numeric>
#include <vector>

namespace cuda_emu_selftest {
cudaError_t block_sum(const int* in, int* out, int blocks, int threads);
cudaError_t warp_ops(const int* in, int* out, int blocks);
cudaError_t coords(int* out, int width, int height);
cudaError_t atomics(int* count, float* fsum, unsigned long long* umax, int blocks, int threads);
cudaError_t early_exit(int* out);
cudaError_t symbol_roundtrip(int* vals);
cudaError_t bounded(int* out, int threads);
cudaError_t noop(int* out, dim3 grid, dim3 block, size_t smem, cudaStream_t s);
cudaError_t raise_smem_limit(int bytes);
cudaError_t uninit_shared(int* out);
void deadlock(int* out);
void mask_mismatch(int* out);
void exited_lane(int* out);
void partial_warp(int* out);
cudaError_t big_static_smem(int* out, size_t dyn);
cudaError_t write_on(int* out, cudaStream_t s);
cudaError_t axpy_on(const int* in, int* out, int a, int n, cudaStream_t s);
}  // namespace cuda_emu_selftest

namespace {
namespace st = cuda_emu_selftest;

template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n;
  explicit Dev(size_t count) : n(count) { EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)), cudaSuccess); }
  explicit Dev(const std::vector<T>& v) : Dev(v.size()) {
    EXPECT_EQ(cudaMemcpy(p, v.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  ~Dev() { EXPECT_EQ(cudaFree(p), cudaSuccess); }
  std::vector<T> get() const {
    std::vector<T> v(n);
    EXPECT_EQ(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return v;
  }
};

TEST(CudaEmuRuntime, BlockReductionWithBarriers) {
  const int blocks = 3, threads = 256;
  std::vector<int> in(static_cast<size_t>(blocks * threads));
  std::iota(in.begin(), in.end(), 1);
  Dev<int> din(in), dout(static_cast<size_t>(blocks));
  ASSERT_EQ(st::block_sum(din.p, dout.p, blocks, threads), cudaSuccess);
  const auto out = dout.get();
  for (int b = 0; b < blocks; ++b) {
    long want = 0;
    for (int t = 0; t < threads; ++t) want += in[size_t(b * threads + t)];
    EXPECT_EQ(out[size_t(b)], want) << "block " << b;
  }
}

TEST(CudaEmuRuntime, WarpShufflesBallotsAndScans) {
  const int blocks = 2, n = blocks * 64;
  std::vector<int> in(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) in[size_t(i)] = (i * 37) % 11 - 3;
  Dev<int> din(in), dout(size_t(n) * 5);
  ASSERT_EQ(st::warp_ops(din.p, dout.p, blocks), cudaSuccess);
  const auto out = dout.get();
  for (int w = 0; w < n / 32; ++w) {
    int sum = 0, incl = 0;
    unsigned bal = 0;
    for (int l = 0; l < 32; ++l) {
      sum += in[size_t(w * 32 + l)];
      bal |= unsigned(in[size_t(w * 32 + l)] & 1) << l;
    }
    for (int l = 0; l < 32; ++l) {
      const size_t i = size_t(w * 32 + l);
      incl += in[i];
      EXPECT_EQ(out[i * 5 + 0], sum) << "lane " << i;
      EXPECT_EQ(out[i * 5 + 1], incl) << "lane " << i;
      EXPECT_EQ(unsigned(out[i * 5 + 2]), bal) << "lane " << i;
      EXPECT_EQ(out[i * 5 + 3], in[size_t(w * 32)]) << "lane " << i;
      EXPECT_EQ(out[i * 5 + 4], l < 31 ? in[i + 1] : in[i]) << "lane " << i;
    }
  }
}

TEST(CudaEmuRuntime, TwoDimensionalLaunch) {
  const int w = 24, h = 12;
  Dev<int> d(static_cast<size_t>(w * h));
  ASSERT_EQ(st::coords(d.p, w, h), cudaSuccess);
  const auto out = d.get();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) EXPECT_EQ(out[size_t(y * w + x)], y * 1000 + x);
}

TEST(CudaEmuRuntime, AtomicsEarlyExitAndSymbols) {
  Dev<int> count(std::vector<int>{0});
  Dev<float> fsum(std::vector<float>{0.f});
  Dev<unsigned long long> umax(std::vector<unsigned long long>{0});
  ASSERT_EQ(st::atomics(count.p, fsum.p, umax.p, 5, 96), cudaSuccess);
  EXPECT_EQ(count.get()[0], 480);
  EXPECT_EQ(fsum.get()[0], 240.f);
  EXPECT_EQ(umax.get()[0], 479ull);

  Dev<int> out(std::vector<int>(64, -5));
  ASSERT_EQ(st::early_exit(out.p), cudaSuccess);
  const auto o = out.get();
  for (int t = 0; t < 64; ++t) EXPECT_EQ(o[size_t(t)], t < 40 ? 7 : -5) << t;

  int vals[4] = {10, 20, 30, 40};
  ASSERT_EQ(st::symbol_roundtrip(vals), cudaSuccess);
  EXPECT_EQ(vals[0], 10);
  EXPECT_EQ(vals[3], 43);
}

TEST(CudaEmuRuntime, SharedAndDeviceMemoryStartAsGarbage) {
  Dev<int> out(static_cast<size_t>(4));
  EXPECT_EQ(out.get()[0], -1);  // fresh device memory: 0xFF bytes
  ASSERT_EQ(st::uninit_shared(out.p), cudaSuccess);
  for (int v : out.get()) EXPECT_EQ(v, -1);
}

// Bad configurations fail the launch (cudaGetLastError reports it once), as on a GPU.
TEST(CudaEmuRuntime, LaunchConfigurationErrors) {
  Dev<int> out(static_cast<size_t>(1024));
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(1025), 0, nullptr), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(32, 32, 2), 0, nullptr), cudaErrorInvalidConfiguration);
  EXPECT_EQ(st::noop(out.p, dim3(0), dim3(32), 0, nullptr), cudaErrorInvalidConfiguration);
  EXPECT_EQ(st::noop(out.p, dim3(1, 65536), dim3(32), 0, nullptr), cudaErrorInvalidConfiguration);
  EXPECT_EQ(st::noop(out.p, dim3(2147483648u), dim3(32), 0, nullptr), cudaErrorInvalidConfiguration);
  EXPECT_EQ(st::noop(out.p, dim3(2, 3, 4), dim3(4, 4, 4), 0, nullptr), cudaSuccess);
  // Dynamic shared memory: 48 KiB by default, more only after cudaFuncSetAttribute.
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(32), 48 * 1024, nullptr), cudaSuccess);
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(32), 48 * 1024 + 4, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(st::raise_smem_limit(228 * 1024), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  ASSERT_EQ(st::raise_smem_limit(100 * 1024), cudaSuccess);
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(32), 100 * 1024, nullptr), cudaSuccess);
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(32), 100 * 1024 + 4, nullptr), cudaErrorInvalidValue);
  // __launch_bounds__(128): a larger block cannot launch.
  EXPECT_EQ(st::bounded(out.p, 128), cudaSuccess);
  EXPECT_EQ(st::bounded(out.p, 129), cudaErrorLaunchOutOfResources);
  // Streams: special handles and live streams only.
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // out was last written on the legacy stream
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(32), 0, s), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(32), 0, cudaStreamPerThread), cudaSuccess);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
  EXPECT_EQ(st::noop(out.p, dim3(1), dim3(32), 0, s), cudaErrorInvalidResourceHandle);
}

TEST(CudaEmuRuntime, MemoryBookkeeping) {
  void* p = nullptr;
  ASSERT_EQ(cudaMalloc(&p, 100), cudaSuccess);
  cudaPointerAttributes a{};
  ASSERT_EQ(cudaPointerGetAttributes(&a, static_cast<char*>(p) + 50), cudaSuccess);
  EXPECT_EQ(a.type, cudaMemoryTypeDevice);
  EXPECT_EQ(a.device, 0);
  int host = 0;
  ASSERT_EQ(cudaPointerGetAttributes(&a, &host), cudaSuccess);
  EXPECT_EQ(a.type, cudaMemoryTypeUnregistered);
  std::vector<char> buf(200);
  EXPECT_EQ(cudaMemcpy(p, buf.data(), 101, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // past the end
  EXPECT_EQ(cudaMemcpy(buf.data(), &host, 4, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);  // not device memory
  EXPECT_EQ(cudaMemsetAsync(p, 0, 100, nullptr), cudaSuccess);
  EXPECT_EQ(cudaMemsetAsync(static_cast<char*>(p) + 1, 0, 100, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(static_cast<char*>(p) + 4), cudaErrorInvalidDevicePointer);
  EXPECT_EQ(cudaFree(p), cudaSuccess);
  EXPECT_EQ(cudaFree(p), cudaErrorInvalidDevicePointer);  // double free
  void* h = nullptr;
  ASSERT_EQ(cudaMallocHost(&h, 64), cudaSuccess);
  ASSERT_EQ(cudaPointerGetAttributes(&a, h), cudaSuccess);
  EXPECT_EQ(a.type, cudaMemoryTypeHost);
  EXPECT_EQ(cudaFreeHost(h), cudaSuccess);
  (void)cudaGetLastError();
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  ASSERT_EQ(cudaEventCreate(&e0), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&e1, cudaEventDisableTiming), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e0, nullptr), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(e1, nullptr), cudaSuccess);
  float ms = 0;
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e0), cudaSuccess);
  EXPECT_EQ(cudaEventElapsedTime(&ms, e0, e1), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaEventDestroy(e0), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(e1), cudaSuccess);
  (void)cudaGetLastError();
}

// Work of two streams on one buffer with nothing ordering them is reported (the stream-order
// check; every operation is synchronous here, so it cannot change a result).
TEST(CudaEmuRuntime, StreamOrderHazardsAreReported) {
  if (const char* m = std::getenv("CUDA_EMU_HAZARDS")) GTEST_SKIP() << "CUDA_EMU_HAZARDS=" << m << " (needs the default)";
  Dev<int> out(static_cast<size_t>(32));
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  std::vector<int> host(32);
  auto hazards = [&](auto&& body) {
    testing::internal::CaptureStderr();
    body();
    const std::string err = testing::internal::GetCapturedStderr();
    size_t n = 0;
    for (size_t at = err.find("HAZARD"); at != std::string::npos; at = err.find("HAZARD", at + 1)) ++n;
    return n;
  };
  // A download on the legacy stream does not wait for a non-blocking stream.
  EXPECT_EQ(hazards([&] {
              ASSERT_EQ(st::write_on(out.p, s), cudaSuccess);
              ASSERT_EQ(cudaMemcpy(host.data(), out.p, 128, cudaMemcpyDeviceToHost), cudaSuccess);
            }),
            1u);
  // Ordered: stream synchronisation, an event the other stream waits for, the same stream.
  EXPECT_EQ(hazards([&] {
              ASSERT_EQ(st::write_on(out.p, s), cudaSuccess);
              ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
              ASSERT_EQ(cudaMemcpy(host.data(), out.p, 128, cudaMemcpyDeviceToHost), cudaSuccess);
              cudaEvent_t e = nullptr;
              ASSERT_EQ(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), cudaSuccess);
              ASSERT_EQ(st::write_on(out.p, nullptr), cudaSuccess);
              ASSERT_EQ(cudaEventRecord(e, nullptr), cudaSuccess);
              ASSERT_EQ(cudaStreamWaitEvent(s, e, 0), cudaSuccess);
              ASSERT_EQ(st::write_on(out.p, s), cudaSuccess);
              ASSERT_EQ(cudaMemcpyAsync(host.data(), out.p, 128, cudaMemcpyDeviceToHost, s), cudaSuccess);
              ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
              ASSERT_EQ(cudaEventDestroy(e), cudaSuccess);
            }),
            0u);
  ASSERT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// What a GPU would hang on or leave undefined aborts the emulated launch with a message (which
// one depends on the order the threads run in: CUDA_EMU_ORDER).
TEST(CudaEmuRuntimeDeathTest, DeadlocksAndBadWarpMasksAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Dev<int> out(static_cast<size_t>(64));
  EXPECT_DEATH(st::deadlock(out.p), "deadlock_kernel.*DEADLOCK.*thread \\(16,0,0\\) waits at __syncthreads");
  EXPECT_DEATH(st::mask_mismatch(out.p), "mask_mismatch_kernel.*(mask 0xffff0000.*meets lane|names lane 16, which has exited)");
  EXPECT_DEATH(st::exited_lane(out.p), "exited_lane_kernel.*names lane 16, which has exited");
  EXPECT_DEATH(st::partial_warp(out.p), "partial_warp_kernel.*names lanes that do not exist");
  EXPECT_EQ(st::big_static_smem(out.p, 8 * 1024), cudaSuccess);  // 48 KiB in all: fits
  EXPECT_DEATH((void)st::big_static_smem(out.p, 8 * 1024 + 4), "big_static_smem_kernel.*shared memory exceed");
  int host[4] = {};
  EXPECT_DEATH((void)st::coords(host, 8, 4), "coords_kernel: pointer argument #0 .* not inside any live device allocation");
}

}  // namespace

// ---- stream capture and graphs --------------------------------------------------------------------
// A capture records (runs nothing), a replay runs the recorded work in order on its stream, with the
// launch arguments of the capture and the memory as it is at the replay.
TEST(CudaEmuGraph, CaptureRecordsAndReplaysInOrder) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  const int n = 100;
  Dev<int> din(std::vector<int>(size_t(n), 1)), dout(std::vector<int>(size_t(n), 7)), dcopy(std::vector<int>(size_t(n), 7));
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusInvalidated;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  ASSERT_EQ(cudaStreamIsCapturing(s, &cs), cudaSuccess);
  EXPECT_EQ(cs, cudaStreamCaptureStatusActive);
  ASSERT_EQ(cudaMemsetAsync(dout.p, 0, size_t(n) * 4, s), cudaSuccess);
  ASSERT_EQ(st::axpy_on(din.p, dout.p, 3, n, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpyAsync(dcopy.p, dout.p, size_t(n) * 4, cudaMemcpyDeviceToDevice, s), cudaSuccess);
  ASSERT_EQ(st::axpy_on(din.p, dout.p, 2, n, s), cudaSuccess);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(cudaStreamIsCapturing(s, &cs), cudaSuccess);
  EXPECT_EQ(cs, cudaStreamCaptureStatusNone);
  EXPECT_EQ(dout.get(), std::vector<int>(size_t(n), 7)) << "the capture ran the work it recorded";
  EXPECT_EQ(dcopy.get(), std::vector<int>(size_t(n), 7)) << "the capture ran the work it recorded";
  cudaGraphExec_t x = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&x, g, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphDestroy(g), cudaSuccess);  // the executable graph does not need it
  for (int rep = 0; rep < 3; ++rep) {
    std::vector<int> in(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) in[size_t(i)] = (i * 7 + rep * 5) % 13 + 1;  // never 0: a skipped op shows
    ASSERT_EQ(cudaMemcpy(din.p, in.data(), size_t(n) * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(x, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    const auto out = dout.get(), copy = dcopy.get();
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(copy[size_t(i)], 3 * in[size_t(i)]) << "replay " << rep << ", i " << i;
      ASSERT_EQ(out[size_t(i)], 5 * in[size_t(i)]) << "replay " << rep << ", i " << i;
    }
  }
  EXPECT_EQ(cudaGraphExecDestroy(x), cudaSuccess);
  EXPECT_EQ(cudaGraphExecDestroy(x), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

// What a GPU refuses while a stream captures is refused here, and invalidates the capture.
TEST(CudaEmuGraph, IllegalCallsDuringCaptureFailAndInvalidateIt) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);  // blocking: work on the legacy stream would join it
  cudaEvent_t ev = nullptr;
  ASSERT_EQ(cudaEventCreate(&ev), cudaSuccess);
  Dev<int> buf(std::vector<int>(64, 0));
  std::vector<int> pageable(64, 1);
  void* extra = nullptr;
  struct Case {
    const char* what;
    cudaError_t want;
    std::function<cudaError_t()> call;
  };
  const std::vector<Case> cases = {
      {"cudaMalloc", cudaErrorStreamCaptureUnsupported, [&] { return cudaMalloc(&extra, 64); }},
      {"cudaMemcpy", cudaErrorStreamCaptureUnsupported,
       [&] { return cudaMemcpy(buf.p, pageable.data(), 256, cudaMemcpyHostToDevice); }},
      {"cudaMemset", cudaErrorStreamCaptureUnsupported, [&] { return cudaMemset(buf.p, 0, 256); }},
      {"cudaStreamSynchronize", cudaErrorStreamCaptureUnsupported, [&] { return cudaStreamSynchronize(s); }},
      {"cudaStreamQuery", cudaErrorStreamCaptureUnsupported, [&] { return cudaStreamQuery(s); }},
      {"cudaDeviceSynchronize", cudaErrorStreamCaptureUnsupported, [&] { return cudaDeviceSynchronize(); }},
      {"cudaMemGetInfo", cudaErrorStreamCaptureUnsupported, [&] {
         size_t f = 0, t = 0;
         return cudaMemGetInfo(&f, &t);
       }},
      {"pageable cudaMemcpyAsync", cudaErrorStreamCaptureUnsupported,
       [&] { return cudaMemcpyAsync(buf.p, pageable.data(), 256, cudaMemcpyHostToDevice, s); }},
      {"launch on the legacy stream", cudaErrorStreamCaptureImplicit,
       [&] { return st::noop(buf.p, dim3(1), dim3(32), 0, nullptr); }},
      {"cudaEventSynchronize of a captured event", cudaErrorCapturedEvent, [&] {
         const cudaError_t e = cudaEventRecord(ev, s);
         return e != cudaSuccess ? e : cudaEventSynchronize(ev);
       }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    ASSERT_EQ(st::axpy_on(buf.p, buf.p, 1, 64, s), cudaSuccess);  // recorded before the illegal call
    testing::internal::CaptureStderr();
    EXPECT_EQ(c.call(), c.want);
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("invalidated"), std::string::npos) << err;
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    ASSERT_EQ(cudaStreamIsCapturing(s, &cs), cudaSuccess);
    EXPECT_EQ(cs, cudaStreamCaptureStatusInvalidated);
    EXPECT_EQ(st::axpy_on(buf.p, buf.p, 1, 64, s), cudaErrorStreamCaptureInvalidated);
    cudaGraph_t g = reinterpret_cast<cudaGraph_t>(&cs);
    EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(g, nullptr);
    (void)cudaGetLastError();
  }
  EXPECT_EQ(extra, nullptr);
  EXPECT_EQ(buf.get(), std::vector<int>(64, 0)) << "no recorded or refused operation ran";
  // Relaxed mode lets the unsafe calls through; the legacy stream cannot capture at all.
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&extra, 64), cudaSuccess);
  ASSERT_EQ(cudaFree(extra), cudaSuccess);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(g), cudaSuccess);
  testing::internal::CaptureStderr();
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeThreadLocal), cudaErrorStreamCaptureUnsupported);
  (void)testing::internal::GetCapturedStderr();
  EXPECT_EQ(cudaStreamEndCapture(s, &g), cudaErrorIllegalState);  // not capturing
  (void)cudaGetLastError();
  EXPECT_EQ(cudaEventDestroy(ev), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

