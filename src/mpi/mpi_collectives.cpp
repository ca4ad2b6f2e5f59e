// dist::Collectives over MPI_COMM_WORLD. Large buffers go in pieces of at most 1 GiB (MPI counts
// are int). all_reduce_sum is MPI_Reduce to rank 0 then MPI_Bcast, so every rank gets the very
// same bits (see collectives.h). Errors return (MPI_ERRORS_RETURN) and become Error with the
// MPI message instead of aborting without one. A call that does not complete within the timeout
// (a stalled rank: MPI sees no error) ends the job through the watchdog (collective_watchdog.h).
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

#include "dist/collective_watchdog.h"
#include "dist/collectives.h"
#include "topksae/error.h"

namespace topksae::dist {

namespace {

constexpr size_t kPieceBytes = size_t(1) << 30;

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  TOPKSAE_FAIL("MPI ", what, " failed: ", std::string(msg, size_t(len)));
}

// The watchdog's end of the job: from its own thread, while the main thread waits inside MPI.
// MPI_Abort is the documented way to end every rank (mpirun then kills the others, the stalled one
// included: SIGKILL ends a stopped process too). alarm() is the backstop should MPI_Abort itself
// block (the main thread holds MPI in a funneled build): SIGALRM ends this rank, and the launcher
// ends the job when a rank dies.
[[noreturn]] void abort_on_stall(int rank, int size, const std::string& msg) {
  std::cerr << "error (rank " << rank << " of " << size << "): " << msg << std::endl;
  alarm(10);
  MPI_Abort(MPI_COMM_WORLD, 3);
  std::_Exit(3);
}

class MpiCollectives final : public Collectives {
 public:
  explicit MpiCollectives(double timeout_s) {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
      int provided = 0;
      // The trainer calls MPI from one thread only (OpenMP threads never do).
      check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
      owns_ = true;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    watchdog_.emplace(timeout_s, [r = rank_, n = size_](const std::string& msg) { abort_on_stall(r, n, msg); });
  }
  ~MpiCollectives() override {
    watchdog_.reset();  // joins its thread before MPI goes
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_ && !finalized) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void all_gather(const void* send, size_t bytes, void* recv) override {
    TOPKSAE_CHECK(bytes <= size_t(INT32_MAX), "all_gather: ", bytes, " bytes per rank is more than MPI's int count");
    WatchdogScope w(*watchdog_, "all_gather");
    check(MPI_Allgather(send, int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE, MPI_COMM_WORLD), "MPI_Allgather");
  }
  void all_reduce_sum(float* data, size_t n) override { reduce_bcast(data, n, MPI_FLOAT, sizeof(float)); }
  void all_reduce_sum(double* data, size_t n) override { reduce_bcast(data, n, MPI_DOUBLE, sizeof(double)); }
  void broadcast(void* data, size_t bytes, int root) override {
    WatchdogScope w(*watchdog_, "broadcast from", root);
    for (size_t off = 0; off < bytes; off += kPieceBytes)
      check(MPI_Bcast(static_cast<char*>(data) + off, int(std::min(kPieceBytes, bytes - off)), MPI_BYTE, root,
                      MPI_COMM_WORLD),
            "MPI_Bcast");
  }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; in case an implementation does
  }
  void barrier() override {
    WatchdogScope w(*watchdog_, "barrier");
    check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
  }
  void set_phase(const char* phase, int64_t step) override { watchdog_->set_phase(phase, step); }
  void send(const void* data, size_t bytes, int dest) override {
    WatchdogScope w(*watchdog_, "send to", dest);
    for (size_t off = 0; off < bytes; off += kPieceBytes)
      check(MPI_Send(static_cast<const char*>(data) + off, int(std::min(kPieceBytes, bytes - off)), MPI_BYTE, dest, 0,
                     MPI_COMM_WORLD),
            "MPI_Send");
  }
  void recv(void* data, size_t bytes, int src) override {
    WatchdogScope w(*watchdog_, "recv from", src);
    for (size_t off = 0; off < bytes; off += kPieceBytes)
      check(MPI_Recv(static_cast<char*>(data) + off, int(std::min(kPieceBytes, bytes - off)), MPI_BYTE, src, 0,
                     MPI_COMM_WORLD, MPI_STATUS_IGNORE),
            "MPI_Recv");
  }

 private:
  void reduce_bcast(void* data, size_t n, MPI_Datatype type, size_t item) {
    WatchdogScope w(*watchdog_, "all_reduce_sum");
    const size_t per = kPieceBytes / item;
    for (size_t off = 0; off < n; off += per) {
      const int cnt = int(std::min(per, n - off));
      char* p = static_cast<char*>(data) + off * item;
      check(MPI_Reduce(rank_ == 0 ? MPI_IN_PLACE : p, rank_ == 0 ? p : nullptr, cnt, type, MPI_SUM, 0, MPI_COMM_WORLD),
            "MPI_Reduce");
      check(MPI_Bcast(p, cnt, type, 0, MPI_COMM_WORLD), "MPI_Bcast");
    }
  }
  int rank_ = 0, size_ = 1;
  bool owns_ = false;
  std::optional<CollectiveWatchdog> watchdog_;
};

}  // namespace

bool mpi_built() { return true; }

std::shared_ptr<Collectives> make_mpi_collectives(double timeout_s) {
  return std::make_shared<MpiCollectives>(timeout_s < 0 ? collective_timeout_from_env() : timeout_s);
}

}  // namespace topksae::dist
