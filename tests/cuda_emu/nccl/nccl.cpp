// Host emulation of NCCL (include/nccl.h): the collectives on the emulation's "device" pointers
// (host memory) over MPI, one communicator per MPI process. Checks what NCCL would refuse or what
// would fault on a GPU: pointers that are not device memory of the communicator's device, ranges
// past an allocation, streams of another device, a rank or root out of range, ranks that joined
// with different ncclUniqueIds. Built into topksae_mpi (not the main library: it needs MPI).
//
// CUDA_EMU_NCCL_REMOTE_ERROR=r: from its first collective on, rank r's communicator reports
// ncclRemoteError through ncclCommGetAsyncError (as NCCL does when a peer died), so the engine's
// fault path runs under test.
#include <mpi.h>
#include <nccl.h>

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, nranks = 1, device = 0;
  bool aborted = false;
  bool inject_remote_error = false;
  ncclResult_t async = ncclSuccess;
  std::string last_error;
};

namespace {

std::string g_last_error;  // for calls without a communicator
int g_group_depth = 0;

struct P2p {
  bool is_send;
  void* buf;
  size_t bytes;
  int peer;
  ncclComm_t comm;
};
std::vector<P2p> g_group_p2p;  // posted at the outermost ncclGroupEnd

ncclResult_t fail(ncclComm_t comm, ncclResult_t r, const std::string& why) {
  (comm ? comm->last_error : g_last_error) = why;
  std::fprintf(stderr, "cuda_emu nccl: %s\n", why.c_str());
  return r;
}

size_t type_size(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
  }
  return 0;
}

// The MPI type a reduction sums in (halves are not summed here: topksae reduces fp32/fp64).
MPI_Datatype reduce_type(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: return MPI_INT8_T;
    case ncclUint8: return MPI_UINT8_T;
    case ncclInt32: return MPI_INT32_T;
    case ncclUint32: return MPI_UINT32_T;
    case ncclInt64: return MPI_INT64_T;
    case ncclUint64: return MPI_UINT64_T;
    case ncclFloat32: return MPI_FLOAT;
    case ncclFloat64: return MPI_DOUBLE;
    default: return MPI_DATATYPE_NULL;
  }
}

MPI_Op mpi_op(ncclRedOp_t op) {
  switch (op) {
    case ncclSum: return MPI_SUM;
    case ncclProd: return MPI_PROD;
    case ncclMax: return MPI_MAX;
    case ncclMin: return MPI_MIN;
    default: return MPI_OP_NULL;
  }
}

ncclResult_t check_comm(ncclComm_t comm, const char* fn) {
  if (!comm) return fail(nullptr, ncclInvalidArgument, std::string(fn) + ": comm is null");
  if (comm->aborted) return fail(comm, ncclInvalidUsage, std::string(fn) + ": the communicator was aborted");
  return ncclSuccess;
}

// A buffer NCCL reads or writes must be device memory of the communicator's device.
ncclResult_t check_buf(ncclComm_t comm, const void* p, size_t bytes, const char* fn, const char* name) {
  if (bytes == 0) return ncclSuccess;
  if (const char* why = cuda_emu::check_device_range(p, bytes))
    return fail(comm, ncclInvalidArgument, std::string(fn) + ": " + name + ": " + why);
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess || a.type != cudaMemoryTypeDevice)
    return fail(comm, ncclInvalidArgument, std::string(fn) + ": " + name + " is not device memory");
  if (a.device != comm->device)
    return fail(comm, ncclInvalidArgument,
                std::string(fn) + ": " + name + " is memory of device " + std::to_string(a.device) +
                    ", the communicator's is " + std::to_string(comm->device));
  return ncclSuccess;
}

ncclResult_t check_stream(ncclComm_t comm, cudaStream_t s, const char* fn) {
  if (s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread) return ncclSuccess;
  int dev = -1;
  if (cudaStreamGetDevice(s, &dev) != cudaSuccess)
    return fail(comm, ncclInvalidArgument, std::string(fn) + ": the stream is not a live stream");
  if (dev != comm->device)
    return fail(comm, ncclInvalidArgument, std::string(fn) + ": the stream belongs to device " +
                                               std::to_string(dev) + ", the communicator's is " +
                                               std::to_string(comm->device));
  return ncclSuccess;
}

ncclResult_t check_mpi(ncclComm_t comm, int rc, const char* fn) {
  if (rc == MPI_SUCCESS) return ncclSuccess;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  comm->async = ncclSystemError;
  return fail(comm, ncclSystemError, std::string(fn) + ": MPI: " + std::string(msg, size_t(len)));
}

// Common entry of every collective: comm, stream, count, and the injected remote error.
ncclResult_t enter(ncclComm_t comm, cudaStream_t s, size_t count, ncclDataType_t t, const char* fn) {
  if (ncclResult_t r = check_comm(comm, fn)) return r;
  if (ncclResult_t r = check_stream(comm, s, fn)) return r;
  if (type_size(t) == 0) return fail(comm, ncclInvalidArgument, std::string(fn) + ": unknown data type");
  if (count > size_t(INT_MAX))
    return fail(comm, ncclInvalidArgument, std::string(fn) + ": the emulation moves at most INT_MAX elements");
  if (comm->inject_remote_error) comm->async = ncclRemoteError;
  return ncclSuccess;
}

}  // namespace

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return ncclInvalidArgument;
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  if (!id) return fail(nullptr, ncclInvalidArgument, "ncclGetUniqueId: id is null");
  std::random_device rd;
  for (char& c : id->internal) c = char(rd());
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t* out, int nranks, ncclUniqueId id, int rank, ncclConfig_t*) {
  if (!out) return fail(nullptr, ncclInvalidArgument, "ncclCommInitRank: comm is null");
  int inited = 0;
  MPI_Initialized(&inited);
  if (!inited) return fail(nullptr, ncclInvalidUsage, "ncclCommInitRank: the emulation runs over MPI: MPI_Init first");
  int world = 0, me = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (nranks != world || rank != me)
    return fail(nullptr, ncclInvalidArgument,
                "ncclCommInitRank: the emulation's communicators span MPI_COMM_WORLD (nranks " +
                    std::to_string(nranks) + " rank " + std::to_string(rank) + ", world " + std::to_string(world) +
                    " rank " + std::to_string(me) + ")");
  auto* comm = new ncclComm;
  comm->nranks = nranks;
  comm->rank = rank;
  cudaGetDevice(&comm->device);  // NCCL binds the communicator to the current device
  MPI_Comm_dup(MPI_COMM_WORLD, &comm->mpi);
  MPI_Comm_set_errhandler(comm->mpi, MPI_ERRORS_RETURN);
  // Every rank must hold rank 0's id (the caller broadcast it): NCCL would hang or fail otherwise.
  std::vector<char> ids(size_t(nranks) * NCCL_UNIQUE_ID_BYTES);
  MPI_Allgather(id.internal, NCCL_UNIQUE_ID_BYTES, MPI_BYTE, ids.data(), NCCL_UNIQUE_ID_BYTES, MPI_BYTE, comm->mpi);
  for (int q = 0; q < nranks; ++q)
    if (std::memcmp(ids.data() + size_t(q) * NCCL_UNIQUE_ID_BYTES, ids.data(), NCCL_UNIQUE_ID_BYTES) != 0) {
      MPI_Comm_free(&comm->mpi);
      delete comm;
      return fail(nullptr, ncclInvalidUsage,
                  "ncclCommInitRank: rank " + std::to_string(q) + " joined with another ncclUniqueId than rank 0");
    }
  if (const char* v = std::getenv("CUDA_EMU_NCCL_REMOTE_ERROR"); v && *v && std::atoi(v) == rank)
    comm->inject_remote_error = true;
  *out = comm;
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  return ncclCommInitRankConfig(comm, nranks, id, rank, nullptr);
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) { return check_comm(comm, "ncclCommFinalize"); }

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}

// A real abort tears the communicator down without waiting for peers; here the MPI communicator
// is not freed (MPI_Comm_free is collective and the peers may be gone).
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async) {
  if (!comm || !async) return fail(comm, ncclInvalidArgument, "ncclCommGetAsyncError: null argument");
  *async = comm->async;
  if (comm->async == ncclRemoteError && comm->last_error.empty())
    comm->last_error = "cuda_emu: injected remote error (CUDA_EMU_NCCL_REMOTE_ERROR)";
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}

const char* ncclGetLastError(ncclComm_t comm) { return (comm ? comm->last_error : g_last_error).c_str(); }

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (ncclResult_t r = check_comm(comm, "ncclCommCount")) return r;
  *count = comm->nranks;
  return ncclSuccess;
}
ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  if (ncclResult_t r = check_comm(comm, "ncclCommCuDevice")) return r;
  *device = comm->device;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (ncclResult_t r = check_comm(comm, "ncclCommUserRank")) return r;
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t t, ncclComm_t comm,
                           cudaStream_t s) {
  const char* fn = "ncclAllGather";
  if (ncclResult_t r = enter(comm, s, count, t, fn)) return r;
  const size_t bytes = count * type_size(t);
  if (ncclResult_t r = check_buf(comm, recv, bytes * size_t(comm->nranks), fn, "recvbuff")) return r;
  const char* mine = static_cast<const char*>(recv) + bytes * size_t(comm->rank);
  const bool in_place = send == mine;
  if (!in_place) {
    if (ncclResult_t r = check_buf(comm, send, bytes, fn, "sendbuff")) return r;
    const char* sp = static_cast<const char*>(send);
    const char* rp = static_cast<const char*>(recv);
    if (sp < rp + bytes * size_t(comm->nranks) && rp < sp + bytes)
      return fail(comm, ncclInvalidArgument, "ncclAllGather: sendbuff overlaps recvbuff but is not the in-place slot");
  }
  return check_mpi(comm,
                   MPI_Allgather(in_place ? MPI_IN_PLACE : send, int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE,
                                 comm->mpi),
                   fn);
}

ncclResult_t ncclReduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op, int root,
                        ncclComm_t comm, cudaStream_t s) {
  const char* fn = "ncclReduce";
  if (ncclResult_t r = enter(comm, s, count, t, fn)) return r;
  if (root < 0 || root >= comm->nranks) return fail(comm, ncclInvalidArgument, "ncclReduce: root out of range");
  if (reduce_type(t) == MPI_DATATYPE_NULL || mpi_op(op) == MPI_OP_NULL)
    return fail(comm, ncclInvalidArgument, "ncclReduce: the emulation reduces integer/fp32/fp64 with sum/prod/max/min");
  const size_t bytes = count * type_size(t);
  if (ncclResult_t r = check_buf(comm, send, bytes, fn, "sendbuff")) return r;
  const bool root_me = comm->rank == root;
  if (root_me)
    if (ncclResult_t r = check_buf(comm, recv, bytes, fn, "recvbuff")) return r;
  const void* sbuf = root_me && send == recv ? MPI_IN_PLACE : send;
  return check_mpi(comm, MPI_Reduce(sbuf, root_me ? recv : nullptr, int(count), reduce_type(t), mpi_op(op), root, comm->mpi),
                   fn);
}

ncclResult_t ncclBroadcast(const void* send, void* recv, size_t count, ncclDataType_t t, int root, ncclComm_t comm,
                           cudaStream_t s) {
  const char* fn = "ncclBroadcast";
  if (ncclResult_t r = enter(comm, s, count, t, fn)) return r;
  if (root < 0 || root >= comm->nranks) return fail(comm, ncclInvalidArgument, "ncclBroadcast: root out of range");
  const size_t bytes = count * type_size(t);
  if (ncclResult_t r = check_buf(comm, recv, bytes, fn, "recvbuff")) return r;
  if (comm->rank == root) {
    if (ncclResult_t r = check_buf(comm, send, bytes, fn, "sendbuff")) return r;
    if (send != recv && bytes) std::memmove(recv, send, bytes);
  }
  return check_mpi(comm, MPI_Bcast(recv, int(bytes), MPI_BYTE, root, comm->mpi), fn);
}

ncclResult_t ncclAllReduce(const void* send, void* recv, size_t count, ncclDataType_t t, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t s) {
  const char* fn = "ncclAllReduce";
  if (ncclResult_t r = enter(comm, s, count, t, fn)) return r;
  if (reduce_type(t) == MPI_DATATYPE_NULL || mpi_op(op) == MPI_OP_NULL)
    return fail(comm, ncclInvalidArgument, "ncclAllReduce: the emulation reduces integer/fp32/fp64 with sum/prod/max/min");
  const size_t bytes = count * type_size(t);
  if (ncclResult_t r = check_buf(comm, send, bytes, fn, "sendbuff")) return r;
  if (ncclResult_t r = check_buf(comm, recv, bytes, fn, "recvbuff")) return r;
  return check_mpi(comm,
                   MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, int(count), reduce_type(t), mpi_op(op),
                                 comm->mpi),
                   fn);
}

namespace {

ncclResult_t post_p2p(const std::vector<P2p>& ops) {
  std::vector<MPI_Request> reqs(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    const P2p& o = ops[i];
    const int rc = o.is_send ? MPI_Isend(o.buf, int(o.bytes), MPI_BYTE, o.peer, 0, o.comm->mpi, &reqs[i])
                             : MPI_Irecv(o.buf, int(o.bytes), MPI_BYTE, o.peer, 0, o.comm->mpi, &reqs[i]);
    if (ncclResult_t r = check_mpi(o.comm, rc, o.is_send ? "ncclSend" : "ncclRecv")) return r;
  }
  if (ops.empty()) return ncclSuccess;
  return check_mpi(ops.front().comm, MPI_Waitall(int(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE), "ncclGroupEnd");
}

ncclResult_t p2p(bool is_send, void* buf, size_t count, ncclDataType_t t, int peer, ncclComm_t comm, cudaStream_t s) {
  const char* fn = is_send ? "ncclSend" : "ncclRecv";
  if (ncclResult_t r = enter(comm, s, count, t, fn)) return r;
  if (peer < 0 || peer >= comm->nranks) return fail(comm, ncclInvalidArgument, std::string(fn) + ": peer out of range");
  const size_t bytes = count * type_size(t);
  if (ncclResult_t r = check_buf(comm, buf, bytes, fn, is_send ? "sendbuff" : "recvbuff")) return r;
  const P2p op{is_send, buf, bytes, peer, comm};
  if (g_group_depth > 0) {
    g_group_p2p.push_back(op);
    return ncclSuccess;
  }
  return post_p2p({op});
}

}  // namespace

ncclResult_t ncclSend(const void* send, size_t count, ncclDataType_t t, int peer, ncclComm_t comm, cudaStream_t s) {
  return p2p(true, const_cast<void*>(send), count, t, peer, comm, s);
}
ncclResult_t ncclRecv(void* recv, size_t count, ncclDataType_t t, int peer, ncclComm_t comm, cudaStream_t s) {
  return p2p(false, recv, count, t, peer, comm, s);
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}
ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return fail(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--g_group_depth > 0) return ncclSuccess;
  std::vector<P2p> ops;
  ops.swap(g_group_p2p);
  return post_p2p(ops);
}
