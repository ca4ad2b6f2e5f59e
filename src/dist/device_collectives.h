// The collectives of latent-sharded training on GPU ranks: NCCL on device memory (src/mpi/
// nccl_collectives.cpp), one GPU per rank, bootstrapped over the host Collectives (MPI).
//
// Why a sibling of dist::Collectives rather than another implementation of it:
// - pointer space: every pointer here is device memory of this rank's GPU; the host interface's
//   callers pass host vectors, and an engine behind the same signatures would take them and fail
//   (or corrupt) only at run time;
// - ordering: these calls are enqueued on a CUDA stream and return before the data moved (the GPU
//   step keeps running); the host interface's calls are complete on return. synchronize() is the
//   one place that waits, and the place where a dead peer is detected (below);
// - the sharded GPU step still needs the host engine for what is small and host-side (all_ok
//   error agreement, barriers around files, rank 0 collecting shards for the final SAE), so both
//   live side by side: this one keeps a reference to the host engine it was bootstrapped from.
//
// Determinism: all_reduce_sum is ncclReduce to rank 0 then ncclBroadcast, so every rank holds the
// very same bits (b_dec is replicated and updated from reduced values on every rank). NCCL's
// ring and tree all-reduce do end in one broadcast of each reduced chunk, but NCCL documents no
// such guarantee and picks algorithms by size and topology; reduce + broadcast costs about the
// same bytes on a ring (docs/scaling.md).
//
// Faults: the communicator is non-blocking (ncclConfig_t::blocking = 0), every NCCL call and every
// synchronize() polls ncclCommGetAsyncError and the stream with a deadline of timeout_s() seconds
// (TOPKSAE_NCCL_TIMEOUT_S, default 300). A NCCL error, a peer that died (NCCL reports a remote
// error) or a collective still unfinished at the deadline aborts the communicator (ncclCommAbort)
// and throws Error naming the call and the rank; the caller then ends the job (abort()).
#pragma once
#include <cstddef>
#include <memory>

#include "dist/collectives.h"

namespace topksae::dist {

class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // This rank's CUDA device (made current by the constructor): local rank on its node.
  virtual int device() const = 0;
  // The host engine the communicator was bootstrapped over.
  virtual Collectives& host() = 0;

  // `stream` is a cudaStream_t of device(); all pointers are device memory of device().
  // recv [size() * bytes] = every rank's send [bytes], in rank order (send must not overlap recv,
  // unless send == recv + rank() * bytes: NCCL's in-place form).
  virtual void all_gather(const void* send, size_t bytes, void* recv, void* stream) = 0;
  // data[0..n) = the sum over ranks, bit-identical on every rank.
  virtual void all_reduce_sum(float* data, size_t n, void* stream) = 0;
  virtual void all_reduce_sum(double* data, size_t n, void* stream) = 0;
  // data [bytes] from root to every rank.
  virtual void broadcast(void* data, size_t bytes, int root, void* stream) = 0;
  // Point to point; the matching recv/send must be issued by the peer.
  virtual void send(const void* data, size_t bytes, int dest, void* stream) = 0;
  virtual void recv(void* data, size_t bytes, int src, void* stream) = 0;
  // Waits until all work enqueued on `stream` completed. Throws Error (after ncclCommAbort) on a
  // NCCL error, a peer's failure, or when timeout_s() passes first.
  virtual void synchronize(void* stream) = 0;
  // Aborts the communicator, then ends every rank of the job (the host engine's abort).
  [[noreturn]] virtual void abort(int code) = 0;
};

// Collective over `host`: picks this rank's GPU (the launcher's local rank: OMPI_COMM_WORLD_LOCAL_RANK,
// MPI_LOCALRANKID, SLURM_LOCALID, PMIX_LOCAL_RANK, LOCAL_RANK; else the global rank), rank 0 makes the
// ncclUniqueId and broadcasts it over `host`, every rank joins. Any rank's failure throws Error on
// all of them. In a build without NCCL it throws Error saying so (src/mpi/no_nccl.cpp).
std::unique_ptr<DeviceCollectives> make_nccl_collectives(std::shared_ptr<Collectives> host);

// Whether this build has the NCCL engine (a real NCCL, or the CUDA emulation's).
bool nccl_built();

// The deadline of every NCCL wait, in seconds: TOPKSAE_NCCL_TIMEOUT_S (> 0), default 300. Throws
// Error naming the variable when it is set to something else.
double nccl_timeout_s();

}  // namespace topksae::dist
