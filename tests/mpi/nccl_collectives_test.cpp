// The NCCL engine (dist::DeviceCollectives, src/mpi/nccl_collectives.cpp) under mpirun: every
// collective against values each rank can compute for all ranks, the all-reduce bit-identical on
// every rank, each rank on its own device, and the fault path (a bad pointer; with
// `--remote-error`, a peer failure injected by the CUDA emulation's NCCL) ending in an Error that
// names the call and the rank. In the emulated build (tests/nccl_emu.cmake) it runs with R = 2
// and 3 emulated devices over MPI: a CPU check of the logic, not a GPU run. On a GPU machine
// tools/gpu_check.sh runs it with R = 1 on real NCCL.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "dist/device_collectives.h"
#include "topksae/error.h"

using namespace topksae;

namespace {

int g_rank = 0;
int g_fail = 0;

template <typename... A>
void expect(bool ok, const A&... a) {
  if (ok) return;
  ++g_fail;
  std::cerr << "rank " << g_rank << ": FAIL: ";
  (std::cerr << ... << a) << "\n";
}

void cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) TOPKSAE_FAIL(what, ": ", cudaGetErrorString(e));
}

template <typename T>
struct DeviceBuf {  // [n] on the current device
  T* p = nullptr;
  size_t n = 0;
  explicit DeviceBuf(size_t count) : n(count) { cuda(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(T)), "cudaMalloc"); }
  ~DeviceBuf() { cudaFree(p); }
  void put(const std::vector<T>& h) { cuda(cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice), "upload"); }
  std::vector<T> get() const {
    std::vector<T> h(n);
    cuda(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return h;
  }
};

// Rank q's addend i: not exactly representable sums (the all-reduce's rounding order matters),
// never zero. Every rank can compute every rank's values.
float addend(int q, size_t i) { return 0.1f * float(q + 1) + 1.0f / float(3 + i) + float(i % 5) * 1e3f; }

void expect_error(const std::function<void()>& f, const std::string& want, const char* what) {
  try {
    f();
  } catch (const std::exception& e) {
    expect(std::string(e.what()).find(want) != std::string::npos, what, ": the error '", e.what(),
           "' does not say '", want, "'");
    return;
  }
  expect(false, what, ": no error");
}

void run(dist::DeviceCollectives& dc, cudaStream_t s) {
  const int R = dc.size(), r = dc.rank();
  dist::Collectives& host = dc.host();
  int cur = -1;
  cuda(cudaGetDevice(&cur), "cudaGetDevice");
  expect(cur == dc.device(), "the current device is ", cur, ", the engine's ", dc.device());
  if (const char* lr = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK"))
    expect(dc.device() == std::atoi(lr), "rank ", r, " is on device ", dc.device(), ", its local rank is ", lr);

  {  // all_gather of 7 ints per rank (not a multiple of anything), out of place and in place
    const size_t n = 7;
    DeviceBuf<int32_t> send(n), recv(n * size_t(R));
    std::vector<int32_t> mine(n);
    for (size_t i = 0; i < n; ++i) mine[i] = int32_t(1000 * (r + 1) + int(i));
    send.put(mine);
    recv.put(std::vector<int32_t>(n * size_t(R), -1));
    dc.all_gather(send.p, n * sizeof(int32_t), recv.p, s);
    dc.synchronize(s);
    std::vector<int32_t> got = recv.get();
    for (int q = 0; q < R; ++q)
      for (size_t i = 0; i < n; ++i)
        expect(got[size_t(q) * n + i] == int32_t(1000 * (q + 1) + int(i)), "all_gather: [", q, "][", i, "] = ",
               got[size_t(q) * n + i]);
    recv.put(std::vector<int32_t>(n * size_t(R), -1));
    cuda(cudaMemcpy(recv.p + size_t(r) * n, send.p, n * sizeof(int32_t), cudaMemcpyDeviceToDevice), "copy");
    dc.all_gather(recv.p + size_t(r) * n, n * sizeof(int32_t), recv.p, s);
    dc.synchronize(s);
    expect(recv.get() == got, "in-place all_gather differs from the out-of-place one");
  }
  {  // all_reduce_sum, float and double: the sum, bit-identical on every rank
    const size_t n = 37;
    std::vector<float> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = addend(r, i);
    DeviceBuf<float> f(n);
    f.put(h);
    dc.all_reduce_sum(f.p, n, s);
    std::vector<double> hd(n);
    for (size_t i = 0; i < n; ++i) hd[i] = double(addend(r, i)) * 1.0000001;
    DeviceBuf<double> d(n);
    d.put(hd);
    dc.all_reduce_sum(d.p, n, s);
    dc.synchronize(s);
    const std::vector<float> gf = f.get();
    const std::vector<double> gd = d.get();
    for (size_t i = 0; i < n; ++i) {
      double want = 0, wantd = 0;
      for (int q = 0; q < R; ++q) {
        want += double(addend(q, i));
        wantd += double(addend(q, i)) * 1.0000001;
      }
      expect(std::abs(double(gf[i]) - want) <= 1e-6 * std::abs(want), "all_reduce_sum float [", i, "] = ", gf[i],
             ", want ", want);
      expect(std::abs(gd[i] - wantd) <= 1e-12 * std::abs(wantd), "all_reduce_sum double [", i, "] = ", gd[i],
             ", want ", wantd);
    }
    std::vector<float> all_f(n * size_t(R));  // every rank's result, over the host engine
    host.all_gather(gf.data(), n * sizeof(float), all_f.data());
    std::vector<double> all_d(n * size_t(R));
    host.all_gather(gd.data(), n * sizeof(double), all_d.data());
    for (int q = 1; q < R; ++q) {
      expect(std::memcmp(all_f.data(), all_f.data() + size_t(q) * n, n * sizeof(float)) == 0,
             "all_reduce_sum float: rank ", q, "'s bits differ from rank 0's");
      expect(std::memcmp(all_d.data(), all_d.data() + size_t(q) * n, n * sizeof(double)) == 0,
             "all_reduce_sum double: rank ", q, "'s bits differ from rank 0's");
    }
  }
  {  // broadcast from the last rank
    const size_t n = 13;
    DeviceBuf<uint8_t> b(n);
    std::vector<uint8_t> h(n);
    for (size_t i = 0; i < n; ++i) h[i] = uint8_t(r == R - 1 ? 200 + i : 7);
    b.put(h);
    dc.broadcast(b.p, n, R - 1, s);
    dc.synchronize(s);
    const std::vector<uint8_t> g = b.get();
    for (size_t i = 0; i < n; ++i) expect(g[i] == uint8_t(200 + i), "broadcast [", i, "] = ", int(g[i]));
  }
  {  // send/recv: rank 0 collects every other rank's block, one at a time (as the final save does)
    const size_t n = 5;
    DeviceBuf<float> b(n);
    if (r == 0) {
      for (int q = 1; q < R; ++q) {
        b.put(std::vector<float>(n, -1.0f));
        dc.recv(b.p, n * sizeof(float), q, s);
        dc.synchronize(s);
        const std::vector<float> g = b.get();
        for (size_t i = 0; i < n; ++i) expect(g[i] == addend(q, i), "recv from ", q, " [", i, "] = ", g[i]);
      }
    } else {
      std::vector<float> h(n);
      for (size_t i = 0; i < n; ++i) h[i] = addend(r, i);
      b.put(h);
      dc.send(b.p, n * sizeof(float), 0, s);
      dc.synchronize(s);
    }
  }
}

// --step-cost B D K KAUX ITERS: the time of the collectives one sharded step issues (the latent-
// sharded algorithm of src/dist/sharded_step.cpp, docs/scaling.md) at batch B, d_in D, top-k K and
// AuxK's k KAUX, on this engine: the all-gathers of the (value, index) candidates of the top-k and
// of AuxK ([B, K] and [B, KAUX] pairs of 8 bytes per rank), the all-reduces of the two partial
// reconstructions [B, D], of b_dec's W_enc @ db_enc term [D] and of the scalars (squared norm,
// losses, dead count: 8 doubles). tools/gpu_check.sh runs it at R = 1 beside the unsharded step
// (issue 20, item 6): what the NCCL path adds to a step before the sharded CUDA step exists.
void step_cost(dist::DeviceCollectives& dc, cudaStream_t s, size_t B, size_t D, size_t K, size_t KAUX, int iters) {
  const size_t R = size_t(dc.size());
  DeviceBuf<uint8_t> cand(B * K * 8), cand_all(B * K * 8 * R), aux(B * KAUX * 8), aux_all(B * KAUX * 8 * R);
  DeviceBuf<float> part(B * D), part_aux(B * D), bdec(D);
  DeviceBuf<double> scalars(8);
  cuda(cudaMemset(cand.p, 0, cand.n), "memset");
  cuda(cudaMemset(aux.p, 0, aux.n), "memset");
  cuda(cudaMemset(part.p, 0, part.n * sizeof(float)), "memset");
  cuda(cudaMemset(part_aux.p, 0, part_aux.n * sizeof(float)), "memset");
  cuda(cudaMemset(bdec.p, 0, bdec.n * sizeof(float)), "memset");
  cuda(cudaMemset(scalars.p, 0, scalars.n * sizeof(double)), "memset");
  auto one_step = [&] {
    dc.all_gather(cand.p, cand.n, cand_all.p, s);
    dc.all_reduce_sum(part.p, part.n, s);
    dc.all_gather(aux.p, aux.n, aux_all.p, s);
    dc.all_reduce_sum(part_aux.p, part_aux.n, s);
    dc.all_reduce_sum(scalars.p, scalars.n, s);
    dc.all_reduce_sum(bdec.p, bdec.n, s);
  };
  for (int i = 0; i < 3; ++i) one_step();  // warm-up (NCCL connects lazily)
  dc.synchronize(s);
  cudaEvent_t a, b;
  cuda(cudaEventCreate(&a), "cudaEventCreate");
  cuda(cudaEventCreate(&b), "cudaEventCreate");
  cuda(cudaEventRecord(a, s), "cudaEventRecord");
  for (int i = 0; i < iters; ++i) one_step();
  cuda(cudaEventRecord(b, s), "cudaEventRecord");
  dc.synchronize(s);
  float ms = 0;
  cuda(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  if (dc.rank() == 0)
    std::cout << "nccl step collectives: R=" << R << " B=" << B << " d_in=" << D << " k=" << K << " k_aux=" << KAUX
              << " ms_per_step=" << ms / float(iters) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  const bool remote_error = argc == 2 && std::string(argv[1]) == "--remote-error";
  const bool cost = argc == 7 && std::string(argv[1]) == "--step-cost";
  if (!cost && (argc > 2 || (argc == 2 && !remote_error))) {
    std::cerr << "usage: mpirun -np R nccl_collectives_test [--remote-error | --step-cost B D K KAUX ITERS]\n";
    return 2;
  }
  try {
    auto host = dist::make_mpi_collectives();
    g_rank = host->rank();
    auto dc = dist::make_nccl_collectives(host);
    cudaStream_t s = nullptr;
    cuda(cudaStreamCreate(&s), "cudaStreamCreate");
    if (cost) {
      step_cost(*dc, s, std::stoul(argv[2]), std::stoul(argv[3]), std::stoul(argv[4]), std::stoul(argv[5]),
                std::stoi(argv[6]));
    } else if (remote_error) {
      // CUDA_EMU_NCCL_REMOTE_ERROR=1 (the emulation) makes rank 1's communicator report a peer's
      // failure: that rank's wait throws an Error naming the call; the others complete.
      const int bad = 1;
      DeviceBuf<float> f(3);
      f.put({1, 2, 3});
      if (g_rank == bad)
        expect_error([&] { dc->all_reduce_sum(f.p, 3, s); }, "remote process exited", "injected remote error");
      else
        dc->all_reduce_sum(f.p, 3, s);
      if (g_rank == bad)  // its communicator is gone: later calls say so instead of hanging
        expect_error([&] { dc->synchronize(s); }, "aborted after an earlier error", "call after abort");
      else
        dc->synchronize(s);
    } else {
      run(*dc, s);
#ifdef TOPKSAE_CUDA_EMU
      // (Emulation only: real NCCL checks pointers only with NCCL_CHECK_POINTERS=1.)
      // A host pointer is refused (NCCL faults or refuses; the emulation checks it) with an Error
      // naming the call; the communicator is aborted, and later calls say so.
      std::vector<float> not_device(4, 1.0f);
      expect_error([&] { dc->all_reduce_sum(not_device.data(), 4, s); }, "ncclReduce on rank", "host pointer");
      expect_error([&] { dc->synchronize(s); }, "aborted after an earlier error", "call after abort");
#endif
    }
    cudaStreamDestroy(s);
    double fails = g_fail;
    host->all_reduce_sum(&fails, 1);
    if (g_rank == 0) std::cout << (fails == 0 ? "PASS" : "FAIL") << " (" << host->size() << " ranks)\n";
    dc.reset();
    return fails == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "rank " << g_rank << ": error: " << e.what() << "\n";
    return 1;
  }
}
