// The collectives latent-sharded training needs, behind one small interface so that the same
// sharded algorithm runs over MPI on CPU ranks (src/mpi/mpi_collectives.cpp) and, later, over NCCL
// on GPU ranks. Every call is collective (all ranks call it, in the same order) except send/recv.
//
// Determinism: all_reduce_sum must give bit-identical results on every rank (b_dec is replicated
// and updated from reduced values on each rank: ranks that rounded differently would drift apart)
// and the same result on every run with the same R (exact resume). The MPI implementation
// guarantees both by reducing to rank 0 and broadcasting (MPI_Allreduce alone does not promise
// identical floats on all ranks).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace topksae::dist {

class Collectives {
 public:
  virtual ~Collectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // recv [size() * bytes] = every rank's send [bytes], in rank order.
  virtual void all_gather(const void* send, size_t bytes, void* recv) = 0;
  // data[0..n) = the sum over ranks, identical on every rank.
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  virtual void all_reduce_sum(double* data, size_t n) = 0;
  // data [bytes] from root to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  virtual void barrier() = 0;
  // Point to point (rank 0 collects shards one at a time when it saves the final SAE).
  virtual void send(const void* data, size_t bytes, int dest) = 0;
  virtual void recv(void* data, size_t bytes, int src) = 0;
  // Ends every rank of the job now (MPI_Abort): after a rank's error, so the others do not wait
  // forever in a collective it will never join.
  [[noreturn]] virtual void abort(int code) = 0;
  // What the job is doing (a string literal: "training step", "checkpoint", ...) and its step
  // (-1: none), named when a collective stalls (the MPI engine's watchdog, collective_watchdog.h).
  virtual void set_phase(const char* phase, int64_t step) { (void)phase, (void)step; }
};

// Collective: my_error is this rank's failure ("" if none). Throws Error on every rank when any
// rank failed: its own message on that rank, "<what> failed on rank q" on the others.
void all_ok(Collectives& comm, const std::string& my_error, const char* what);

// True when this process was started by an MPI launcher with more than one rank (OpenMPI's
// OMPI_COMM_WORLD_SIZE, or PMI_SIZE / PMIX_SIZE of MPICH, Slurm's srun and others).
bool launched_with_several_ranks();

// MPI_Init (once) and MPI_COMM_WORLD. In a build without MPI it throws Error saying so
// (src/mpi/no_mpi.cpp). Finalises MPI when the last reference goes. timeout_s: a collective (or
// a send/recv) that has not completed after this many seconds ends the job with a message
// naming it (collective_watchdog.h); 0: never; < 0: collective_timeout_from_env().
std::shared_ptr<Collectives> make_mpi_collectives(double timeout_s = -1);

// Whether this build has the MPI engine.
bool mpi_built();

}  // namespace topksae::dist
