// dist::DeviceCollectives over NCCL (src/dist/device_collectives.h says what and why): one GPU per
// rank, bootstrapped over the host (MPI) engine, a non-blocking communicator whose every wait
// polls for asynchronous errors with a deadline, so a dead or stalled peer ends the job with an
// error instead of a hang.
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>

#include "dist/device_collectives.h"
#include "topksae/error.h"

namespace topksae::dist {

namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) TOPKSAE_FAIL("CUDA ", what, " failed: ", cudaGetErrorString(e));
}

// The launcher's rank of this process on its node, or -1 when no launcher variable is set.
int launcher_local_rank() {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "PMIX_LOCAL_RANK",
                          "LOCAL_RANK"}) {
    const char* v = std::getenv(var);
    if (v && *v) return std::atoi(v);
  }
  return -1;
}

class NcclCollectives final : public DeviceCollectives {
 public:
  explicit NcclCollectives(std::shared_ptr<Collectives> host)
      : host_(std::move(host)), rank_(host_->rank()), size_(host_->size()), timeout_s_(nccl_timeout_s()) {
    std::string err;
    try {
      pick_device();
    } catch (const std::exception& e) {
      err = e.what();
    }
    all_ok(*host_, err, "choosing the GPU");
    ncclUniqueId id{};
    if (rank_ == 0) {
      const ncclResult_t r = ncclGetUniqueId(&id);
      err = r == ncclSuccess ? "" : std::string("ncclGetUniqueId failed: ") + ncclGetErrorString(r);
    }
    all_ok(*host_, err, "ncclGetUniqueId");
    host_->broadcast(&id, sizeof(id), 0);
    try {
      ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
      cfg.blocking = 0;  // every call returns at once; wait_comm() polls with the deadline
      ncclComm_t comm = nullptr;
      const ncclResult_t r = ncclCommInitRankConfig(&comm, size_, id, rank_, &cfg);
      if (r == ncclSuccess || r == ncclInProgress) comm_ = comm;  // valid, possibly still initialising
      wait_comm(r, "ncclCommInitRankConfig");
      err.clear();
    } catch (const std::exception& e) {
      err = e.what();
    }
    try {
      all_ok(*host_, err, "NCCL initialisation");
    } catch (...) {  // another rank failed: do not leave this one's half-made communicator behind
      if (comm_) ncclCommAbort(std::exchange(comm_, nullptr));
      throw;
    }
  }

  ~NcclCollectives() override {
    if (!comm_) return;
    // Finalize flushes outstanding work; with a dead peer it could wait forever, so it gets the
    // deadline too and the communicator is aborted instead.
    try {
      wait_comm(ncclCommFinalize(comm_), "ncclCommFinalize");
      ncclCommDestroy(comm_);
    } catch (const std::exception&) {
      if (comm_) ncclCommAbort(comm_);
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int device() const override { return device_; }
  Collectives& host() override { return *host_; }

  void all_gather(const void* send, size_t bytes, void* recv, void* stream) override {
    wait_comm(ncclAllGather(send, recv, bytes, ncclUint8, live(), st(stream)), "ncclAllGather");
  }
  void all_reduce_sum(float* data, size_t n, void* stream) override { reduce_bcast(data, n, ncclFloat32, stream); }
  void all_reduce_sum(double* data, size_t n, void* stream) override { reduce_bcast(data, n, ncclFloat64, stream); }
  void broadcast(void* data, size_t bytes, int root, void* stream) override {
    wait_comm(ncclBroadcast(data, data, bytes, ncclUint8, root, live(), st(stream)), "ncclBroadcast");
  }
  void send(const void* data, size_t bytes, int dest, void* stream) override {
    wait_comm(ncclSend(data, bytes, ncclUint8, dest, live(), st(stream)), "ncclSend");
  }
  void recv(void* data, size_t bytes, int src, void* stream) override {
    wait_comm(ncclRecv(data, bytes, ncclUint8, src, live(), st(stream)), "ncclRecv");
  }

  void synchronize(void* stream) override {
    live();
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      const cudaError_t q = cudaStreamQuery(st(stream));
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) fail(std::string("the stream failed: ") + cudaGetErrorString(q), "synchronize");
      poll_async("synchronize", start);
      // Spin first (a step's collectives finish in microseconds to milliseconds), then sleep.
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    check_async("synchronize");
  }

  [[noreturn]] void abort(int code) override {
    if (comm_) ncclCommAbort(std::exchange(comm_, nullptr));
    host_->abort(code);
    std::_Exit(code);  // the host engine's abort does not return; in case one does
  }

 private:
  static cudaStream_t st(void* s) { return static_cast<cudaStream_t>(s); }

  void pick_device() {
    int n = 0;
    check_cuda(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
    TOPKSAE_CHECK(n > 0, "rank ", rank_, " sees no CUDA device");
    const int local = launcher_local_rank();
    device_ = local >= 0 ? local : rank_;
    // NCCL refuses two ranks of one communicator on one GPU; say why before it does.
    TOPKSAE_CHECK(device_ < n, "rank ", rank_, " is rank ", device_, " on its node, which has ", n,
                  " GPU(s): start at most one rank per GPU (e.g. mpirun -np ", n, " per node)");
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
  }

  ncclComm_t live() const {
    TOPKSAE_CHECK(comm_, "rank ", rank_, ": the NCCL communicator was aborted after an earlier error");
    return comm_;
  }

  void reduce_bcast(void* data, size_t n, ncclDataType_t type, void* stream) {
    // In place: rank 0 sums into data; the others' recv buffer is ignored by ncclReduce.
    wait_comm(ncclReduce(data, data, n, type, ncclSum, 0, live(), st(stream)), "ncclReduce");
    wait_comm(ncclBroadcast(data, data, n, type, 0, live(), st(stream)), "ncclBroadcast");
  }

  // After a call on the non-blocking communicator: an error throws; ncclInProgress means the
  // call is still being enqueued (or the communicator initialised), which is polled to the end.
  void wait_comm(ncclResult_t r, const char* what) {
    if (r != ncclSuccess && r != ncclInProgress) fail(describe(r), what);
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      ncclResult_t a = ncclSuccess;
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &a);
      if (q != ncclSuccess) fail(describe(q), what);
      if (a == ncclSuccess) return;
      if (a != ncclInProgress) fail(describe(a), what);
      poll_async(what, start);
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }

  void check_async(const char* what) {
    ncclResult_t a = ncclSuccess;
    const ncclResult_t q = ncclCommGetAsyncError(comm_, &a);
    if (q != ncclSuccess) fail(describe(q), what);
    if (a != ncclSuccess && a != ncclInProgress) fail(describe(a), what);
  }

  void poll_async(const char* what, std::chrono::steady_clock::time_point start) {
    check_async(what);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > timeout_s_)
      fail("not complete after " + std::to_string(timeout_s_) +
               " s (TOPKSAE_NCCL_TIMEOUT_S): a peer rank died or stalled",
           what);
  }

  std::string describe(ncclResult_t r) const {
    std::string s = ncclGetErrorString(r);
    if (comm_) {
      const char* last = ncclGetLastError(comm_);
      if (last && *last) s += std::string(" (") + last + ")";
    }
    if (r == ncclRemoteError) s += ": a peer rank failed or exited";
    return s;
  }

  [[noreturn]] void fail(const std::string& why, const char* what) {
    if (comm_) ncclCommAbort(std::exchange(comm_, nullptr));
    TOPKSAE_FAIL("NCCL ", what, " on rank ", rank_, " of ", size_, ": ", why, "; communicator aborted");
  }

  std::shared_ptr<Collectives> host_;
  int rank_ = 0, size_ = 1, device_ = 0;
  double timeout_s_ = 300;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

bool nccl_built() { return true; }

std::unique_ptr<DeviceCollectives> make_nccl_collectives(std::shared_ptr<Collectives> host) {
  TOPKSAE_CHECK(host, "make_nccl_collectives: no host engine to bootstrap NCCL over");
  return std::make_unique<NcclCollectives>(std::move(host));
}

}  // namespace topksae::dist
