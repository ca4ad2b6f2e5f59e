// The CUDA Context (handles, stream, scratch pool), DeviceSae and the device code containers.
#include <cstdint>
#include <cstring>

#include "cuda_internal.h"

namespace topksae::cuda {

namespace {
// The handles are created on the current device: a stream of another device would make every op
// fail later with an obscure launch error, so refuse it here. The special handles (legacy and
// per-thread default stream) always mean the current device.
void check_stream_device(Stream s, int dev) {
  const auto v = reinterpret_cast<uintptr_t>(s);
  if (v == 0 || v == reinterpret_cast<uintptr_t>(cudaStreamLegacy) ||
      v == reinterpret_cast<uintptr_t>(cudaStreamPerThread))
    return;
  int sdev = -1;
  const cudaError_t e = cudaStreamGetDevice(reinterpret_cast<cudaStream_t>(s), &sdev);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // not left behind for the next launch check
    TOPKSAE_FAIL("CUDA context: not a usable CUDA stream (", cudaGetErrorString(e), ")");
  }
  TOPKSAE_CHECK(sdev == dev, "CUDA context: the stream belongs to CUDA device ", sdev, ", the context to device ", dev);
}
}  // namespace

Context::Context(Stream s) : stream_(s) {
  TOPKSAE_CHECK(cuda_available(), "CUDA context: ", cuda_unavailable_reason());
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  check_stream_device(s, dev);
  device_ = dev;
  CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&l2_bytes_, cudaDevAttrL2CacheSize, dev));
  cublasHandle_t cb = nullptr;
  CUBLAS_CHECK(cublasCreate(&cb));
  cublas_ = cb;
  CUBLAS_CHECK(cublasSetStream(cb, reinterpret_cast<cudaStream_t>(s)));
  // Exact fp32 unless an op asks for TF32 explicitly through its compute type.
  CUBLAS_CHECK(cublasSetMathMode(cb, CUBLAS_DEFAULT_MATH));
  cusparseHandle_t cs = nullptr;
  CUSPARSE_CHECK(cusparseCreate(&cs));
  cusparse_ = cs;
  CUSPARSE_CHECK(cusparseSetStream(cs, reinterpret_cast<cudaStream_t>(s)));
  slots_.resize(detail::kSlotCount + 16);
}

Context::~Context() {
  if (cusparse_) (void)cusparseDestroy(static_cast<cusparseHandle_t>(cusparse_));
  if (cublas_) (void)cublasDestroy(static_cast<cublasHandle_t>(cublas_));
}

void Context::set_stream(Stream s) {
  check_stream_device(s, device_);
  CUBLAS_CHECK(cublasSetStream(static_cast<cublasHandle_t>(cublas_), reinterpret_cast<cudaStream_t>(s)));
  CUSPARSE_CHECK(cusparseSetStream(static_cast<cusparseHandle_t>(cusparse_), reinterpret_cast<cudaStream_t>(s)));
  stream_ = s;
}

size_t Context::scratch_bytes() const {
  size_t n = 0;
  for (const DeviceBuffer& b : slots_) n += b.bytes();
  return n;
}

void Context::synchronize() const { CUDA_CHECK(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream_))); }

void* Context::scratch(int slot, size_t bytes) {
  TOPKSAE_CHECK(slot >= 0 && size_t(slot) < slots_.size(), "scratch slot ", slot, " out of range");
  DeviceBuffer& b = slots_[size_t(slot)];
  if (b.bytes() < bytes || b.data() == nullptr) {
    // The old buffer may still be read by queued kernels: finish them before it is freed.
    synchronize();
    b = DeviceBuffer();
    b = DeviceBuffer(bytes < 256 ? 256 : bytes);
  }
  return b.data();
}

// ---- copies ------------------------------------------------------------------------------------
// Uploads go through copy_bytes (complete on return, so any stream may read them). Downloads must
// also wait for the kernels that wrote the data: copy_bytes runs on the legacy default stream,
// which does not wait for a cudaStreamNonBlocking stream, so downloads with a Context copy on its
// stream and synchronise it, and those without one synchronise the device first.
namespace {
DeviceBuffer upload_vec(const void* src, size_t bytes) {
  DeviceBuffer b(bytes == 0 ? 4 : bytes);
  topksae::detail::copy_bytes(b.data(), Device::cuda, src, Device::cpu, bytes);
  return b;
}
// Queues a device -> host copy on ctx's stream, after the ops queued there; the caller
// synchronises ctx before reading dst.
void download_async(Context& ctx, void* dst, const void* src, size_t bytes) {
  if (bytes > 0) CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, detail::stream(ctx)));
}
// For downloads that do not know the stream that wrote the data.
void wait_for_device() { CUDA_CHECK(cudaDeviceSynchronize()); }
}  // namespace

// ---- DeviceSae ---------------------------------------------------------------------------------

DeviceSae DeviceSae::upload(const Sae& sae) {
  sae.cfg.validate();
  sae.params.check_shapes(sae.cfg);
  DeviceSae d;
  d.cfg = sae.cfg;
  d.W_enc = upload_vec(sae.params.W_enc.data(), sae.params.W_enc.size() * 4);
  d.b_enc = upload_vec(sae.params.b_enc.data(), sae.params.b_enc.size() * 4);
  d.W_dec = upload_vec(sae.params.W_dec.data(), sae.params.W_dec.size() * 4);
  d.b_dec = upload_vec(sae.params.b_dec.data(), sae.params.b_dec.size() * 4);
  return d;
}

Sae DeviceSae::download() const {
  Sae s;
  s.cfg = cfg;
  s.params = SaeParams::zeros(cfg);
  wait_for_device();
  topksae::detail::copy_bytes(s.params.W_enc.data(), Device::cpu, W_enc.data(), Device::cuda, s.params.W_enc.size() * 4);
  topksae::detail::copy_bytes(s.params.b_enc.data(), Device::cpu, b_enc.data(), Device::cuda, s.params.b_enc.size() * 4);
  topksae::detail::copy_bytes(s.params.W_dec.data(), Device::cpu, W_dec.data(), Device::cuda, s.params.W_dec.size() * 4);
  topksae::detail::copy_bytes(s.params.b_dec.data(), Device::cpu, b_dec.data(), Device::cuda, s.params.b_dec.size() * 4);
  return s;
}

void DeviceSae::ensure_bf16(Context& ctx) {
  const int64_t n = cfg.d_in * cfg.d_sae;
  if (W_enc_bf16.bytes() < size_t(n) * 2) W_enc_bf16 = DeviceBuffer(size_t(n) * 2);
  to_bf16(ctx, w_enc(), static_cast<uint16_t*>(W_enc_bf16.data()), n);
}

// ---- host <-> device containers ----------------------------------------------------------------
TopKCodes TopKCodes::allocate(int64_t rows, int64_t k, int64_t d_sae) {
  TopKCodes c;
  c.rows = rows;
  c.k = k;
  c.d_sae = d_sae;
  const size_t n = size_t(rows * k);
  c.indices = DeviceBuffer(n == 0 ? 4 : n * 4);
  c.values = DeviceBuffer(n == 0 ? 4 : n * 4);
  return c;
}

TopKCodes TopKCodes::upload(const cpu::TopKCodes& h) {
  TopKCodes c = allocate(h.rows, h.k, h.d_sae);
  topksae::detail::copy_bytes(c.indices.data(), Device::cuda, h.indices.data(), Device::cpu, h.indices.size() * 4);
  topksae::detail::copy_bytes(c.values.data(), Device::cuda, h.values.data(), Device::cpu, h.values.size() * 4);
  return c;
}

namespace {
cpu::TopKCodes host_codes_like(const TopKCodes& c) {
  cpu::TopKCodes h;
  h.rows = c.rows;
  h.k = c.k;
  h.d_sae = c.d_sae;
  h.indices.resize(size_t(c.rows * c.k));
  h.values.resize(size_t(c.rows * c.k));
  return h;
}
}  // namespace

cpu::TopKCodes TopKCodes::download(Context& ctx) const {
  cpu::TopKCodes h = host_codes_like(*this);
  download_async(ctx, h.indices.data(), indices.data(), h.indices.size() * 4);
  download_async(ctx, h.values.data(), values.data(), h.values.size() * 4);
  ctx.synchronize();
  return h;
}

cpu::TopKCodes TopKCodes::download() const {
  cpu::TopKCodes h = host_codes_like(*this);
  wait_for_device();
  topksae::detail::copy_bytes(h.indices.data(), Device::cpu, indices.data(), Device::cuda, h.indices.size() * 4);
  topksae::detail::copy_bytes(h.values.data(), Device::cpu, values.data(), Device::cuda, h.values.size() * 4);
  return h;
}

Csr Csr::upload(const cpu::Csr& h) {
  Csr c;
  c.rows = h.rows;
  c.cols = h.cols;
  c.nnz = int64_t(h.values.size());
  c.capacity = c.nnz;
  c.indptr = upload_vec(h.indptr.data(), h.indptr.size() * 8);
  c.indices = upload_vec(h.indices.data(), h.indices.size() * 4);
  c.values = upload_vec(h.values.data(), h.values.size() * 4);
  return c;
}

int64_t Csr::sync_nnz(Context& ctx) {
  if (nnz < 0) {
    int64_t n = 0;
    download_async(ctx, &n, static_cast<const int64_t*>(indptr.data()) + rows, 8);
    ctx.synchronize();
    nnz = n;
  }
  return nnz;
}

cpu::Csr Csr::download(Context& ctx) {
  sync_nnz(ctx);
  cpu::Csr h;
  h.rows = rows;
  h.cols = cols;
  h.indptr.resize(size_t(rows + 1));
  h.indices.resize(size_t(nnz));
  h.values.resize(size_t(nnz));
  download_async(ctx, h.indptr.data(), indptr.data(), h.indptr.size() * 8);
  download_async(ctx, h.indices.data(), indices.data(), h.indices.size() * 4);
  download_async(ctx, h.values.data(), values.data(), h.values.size() * 4);
  ctx.synchronize();
  return h;
}

int64_t Coo::sync_nnz(Context& ctx) {
  if (nnz < 0) {
    int64_t n = 0;
    download_async(ctx, &n, count.data(), 8);
    ctx.synchronize();
    nnz = n;
  }
  return nnz;
}

cpu::Coo Coo::download(Context& ctx) {
  sync_nnz(ctx);
  cpu::Coo h;
  h.rows = rows;
  h.cols = cols;
  h.row.resize(size_t(nnz));
  h.col.resize(size_t(nnz));
  h.values.resize(size_t(nnz));
  download_async(ctx, h.row.data(), row.data(), h.row.size() * 8);
  download_async(ctx, h.col.data(), col.data(), h.col.size() * 4);
  download_async(ctx, h.values.data(), values.data(), h.values.size() * 4);
  ctx.synchronize();
  return h;
}

}  // namespace topksae::cuda
