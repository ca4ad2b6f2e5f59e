// The CUDA backend: twins of the CPU ops in ops_cpu.h with the same names, in namespace
// topksae::cuda. Every op works on DEVICE pointers and runs asynchronously on the Context's
// stream; nothing here needs a CUDA header, so any translation unit can include it (the calls
// throw Error when the library was built without CUDA, see cuda_available()).
// Math: shared/spec/MATH.md. Layouts are row-major as on the CPU.
#pragma once
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "topksae/buffer.h"
#include "topksae/device.h"
#include "topksae/ops_cpu.h"
#include "topksae/precision.h"
#include "topksae/sae.h"

namespace topksae::cuda {

// Precision (of the one dense GEMM, encode u @ W_enc) and its names: topksae/precision.h.

// Handles (cuBLAS, cuSPARSE), the stream, and a scratch pool. Scratch slots only grow: after the
// first call at a given shape, ops allocate nothing (no cudaMalloc in the hot path).
// Not thread-safe: one Context per host thread / stream.
class Context {
 public:
  // Binds to the current device; throws Error without a usable CUDA device or when `stream`
  // belongs to another device.
  explicit Context(Stream stream = nullptr);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  Stream stream() const { return stream_; }
  // Moves the context (and its cuBLAS / cuSPARSE handles) to another stream of the same device
  // (another device's stream throws Error). The caller orders the work: queued work on the old
  // stream is not waited for.
  void set_stream(Stream s);
  int device() const { return device_; }  // the CUDA ordinal the handles were created on
  // Device bytes held by the scratch pool now (grows only; the inference API's growth counter).
  size_t scratch_bytes() const;
  void synchronize() const;  // waits for all work queued on the stream; rethrows async errors
  // A device buffer of at least `bytes` for scratch slot `slot` (an internal enum in kernels/).
  // Growing it frees the old buffer (cudaFree synchronises), so its contents do not survive.
  void* scratch(int slot, size_t bytes);
  void* cublas_handle() const { return cublas_; }      // cublasHandle_t
  void* cusparse_handle() const { return cusparse_; }  // cusparseHandle_t
  int sm_count() const { return sm_count_; }
  int l2_bytes() const { return l2_bytes_; }  // the device's L2 cache size

 private:
  Stream stream_ = nullptr;
  int device_ = 0;
  void* cublas_ = nullptr;
  void* cusparse_ = nullptr;
  int sm_count_ = 0;
  int l2_bytes_ = 0;
  std::vector<DeviceBuffer> slots_;
};

// A TopK SAE whose float32 parameters live on the device (same layouts as SaeParams).
struct DeviceSae {
  SaeConfig cfg;
  DeviceBuffer W_enc;       // f32 [d_in, d_sae]
  DeviceBuffer b_enc;       // f32 [d_sae]
  DeviceBuffer W_dec;       // f32 [d_sae, d_in]
  DeviceBuffer b_dec;       // f32 [d_in]
  DeviceBuffer W_enc_bf16;  // bf16 [d_in, d_sae], only after ensure_bf16 (Precision::bf16)

  // Synchronous copies: upload returns once the weights are on the device (usable from any
  // stream); download first waits for ALL work on the current device (it cannot know which
  // stream last wrote the weights), so keep it out of hot paths.
  static DeviceSae upload(const Sae& sae);
  Sae download() const;
  // Allocates (once) and refreshes the bf16 copy of W_enc from the f32 master weights.
  void ensure_bf16(Context& ctx);

  float* w_enc() { return static_cast<float*>(W_enc.data()); }
  float* w_dec() { return static_cast<float*>(W_dec.data()); }
  float* bias_enc() { return static_cast<float*>(b_enc.data()); }
  float* bias_dec() { return static_cast<float*>(b_dec.data()); }
  const float* w_enc() const { return static_cast<const float*>(W_enc.data()); }
  const float* w_dec() const { return static_cast<const float*>(W_dec.data()); }
  const float* bias_enc() const { return static_cast<const float*>(b_enc.data()); }
  const float* bias_dec() const { return static_cast<const float*>(b_dec.data()); }
  const uint16_t* w_enc_bf16() const { return static_cast<const uint16_t*>(W_enc_bf16.data()); }
};

// Top-k pairs on the device (see cpu::TopKCodes): [rows, k] int32 indices and f32 values. The
// buffers may be larger than rows * k (encode_topk keeps them when the batch shrinks).
struct TopKCodes {
  int64_t rows = 0, k = 0, d_sae = 0;
  DeviceBuffer indices;  // int32 [>= rows * k]
  DeviceBuffer values;   // f32 [>= rows * k]
  static TopKCodes allocate(int64_t rows, int64_t k, int64_t d_sae);
  static TopKCodes upload(const cpu::TopKCodes& c);  // returns once the copies are complete
  // Waits for ctx's stream (the one whose ops wrote the codes), then copies.
  cpu::TopKCodes download(Context& ctx) const;
  // Without a Context: waits for all work on the current device first (slower, always safe).
  cpu::TopKCodes download() const;
  int32_t* idx() { return static_cast<int32_t*>(indices.data()); }
  float* val() { return static_cast<float*>(values.data()); }
  const int32_t* idx() const { return static_cast<const int32_t*>(indices.data()); }
  const float* val() const { return static_cast<const float*>(values.data()); }
};

// CSR / COO on the device, sized for rows*k entries. `nnz` is the host's copy of the entry count:
// -1 after topk_to_csr/coo (the count is on the device, in indptr[rows] / the counter) until
// sync_nnz() reads it (one synchronisation; cuSPARSE needs it on the host). download(ctx) always
// waits for ctx's stream before copying.
struct Csr {
  int64_t rows = 0, cols = 0, nnz = -1, capacity = 0;
  DeviceBuffer indptr;   // int64 [>= rows + 1]
  DeviceBuffer indices;  // int32 [capacity]
  DeviceBuffer values;   // f32 [capacity]
  static Csr upload(const cpu::Csr& c);  // returns once the copies are complete
  cpu::Csr download(Context& ctx);
  int64_t sync_nnz(Context& ctx);
};
struct Coo {
  int64_t rows = 0, cols = 0, nnz = -1, capacity = 0;
  DeviceBuffer row;      // int64 [capacity]
  DeviceBuffer col;      // int32 [capacity]
  DeviceBuffer values;   // f32 [capacity]
  DeviceBuffer count;    // int64 [1]: the entry count on the device
  cpu::Coo download(Context& ctx);
  int64_t sync_nnz(Context& ctx);
};

// ---- building blocks ---------------------------------------------------------------------------
// Options of the per-row selection beyond the CPU twin's signature.
struct TopKOptions {
  const float* bias = nullptr;     // [n]: selects on h + bias (the fused encoder bias); may be null
  const uint8_t* mask = nullptr;   // [n]: only j with mask[j] != 0 compete (AuxK's dead latents)
  const int32_t* k_dev = nullptr;  // device scalar: the k to use (<= k); rows past it are untouched.
                                   // 0 selects nothing. Lets AuxK's k stay on the device.
  bool relu = false;               // write relu(value) instead of the raw value
  bool sorted = true;              // false: the same k winners in ascending index order, without
                                   // the candidates' sort (for consumers of the set: AuxK's dense
                                   // path); three radix passes + one ordered pass over the row
};
// Per row of h [B, n] (n <= 2^31-1, k <= 8192): the k largest RAW values (+bias), sorted
// descending, ties to the lower index; NaN ranks as -inf. idx/val [B, k]. A radix selection per
// row, never a full sort of it: one read of the row (after a 4096-entry sample) when a threshold
// from the sample leaves between k and 4096 candidates (n >= 8192, k <= 1365); else two reads when
// its top 11-bit radix bin and above hold <= 4096 entries (a sort of those candidates), else four
// (three histogram passes, then a sort of the k winners).
void topk_select(Context& ctx, const float* h, int64_t B, int64_t n, int64_t k, int32_t* idx, float* val,
                 const TopKOptions& opt = {});
constexpr int64_t kMaxTopK = 8192;

// u = normalize_in(x) - a * b_dec, u [B, d_in], in every normalize_activations mode; for
// constant_norm_rescale / layer_norm, scale / shift [B] (device, may be null) receive the per-row
// statistics as cpu::NormStats (normalize_out needs them).
void process_sae_in(Context& ctx, const DeviceSae& sae, const float* x, int64_t B, float* u, float* scale = nullptr,
                    float* shift = nullptr);
// h = u @ W_enc (+ b_enc when add_bias), h [B, d_sae]. bf16 needs sae.ensure_bf16() first. `how`
// picks the GEMM's library (EncoderGemm, precision.h; with cublasLt the bias is its epilogue).
void encode_pre(Context& ctx, const DeviceSae& sae, const float* u, int64_t B, float* h, Precision p,
                bool add_bias = true, EncoderGemm how = EncoderGemm::cublas);
// x [B, d_in] -> top-k pairs (values after ReLU): process_sae_in, GEMM, fused bias + top-k, in
// chunks of rows (encode_chunk_rows(d_sae, B, chunk_rows)) so the pre-activations never take more
// than one chunk's [rows, d_sae] floats of scratch. out's buffers only grow: a batch no larger
// than one seen before allocates nothing.
void encode_topk(Context& ctx, const DeviceSae& sae, const float* x, int64_t B, Precision p, TopKCodes& out,
                 int64_t chunk_rows = 0, EncoderGemm how = EncoderGemm::cublas);

// The encoder GEMM + top-k run over chunks of rows so that h [rows, d_sae] (f32) stays within
// kEncodeChunkBytes: at 2304 x 65536 and batch 4096, 1024 rows (256 MiB) instead of 1 GiB. A chunk
// is still a large GEMM (1024 x 2304 x 65536 = 309 GFLOP), so the split costs the GEMM little.
constexpr int64_t kEncodeChunkBytes = int64_t(256) << 20;
// Rows per chunk for a batch: requested > 0 is taken as given (capped at batch), -1 means the whole
// batch, 0 picks automatically: the chunk count c = ceil(batch*d_sae*4 / kEncodeChunkBytes), then
// rows = ceil(batch / c) rounded up to a multiple of 4 (so u's chunks stay 16-byte aligned),
// capped at batch. Always >= 1 for batch >= 1. Host-only arithmetic (no GPU needed).
inline int64_t encode_chunk_rows(int64_t d_sae, int64_t batch, int64_t requested) {
  if (batch <= 0) return 1;
  if (requested > 0) return requested < batch ? requested : batch;
  if (requested < 0) return batch;
  const int64_t row_bytes = d_sae * 4;
  const int64_t chunks = (batch * row_bytes + kEncodeChunkBytes - 1) / kEncodeChunkBytes;
  if (chunks <= 1) return batch;
  int64_t rows = (batch + chunks - 1) / chunks;
  rows = (rows + 3) / 4 * 4;
  return rows < batch ? rows : batch;
}

// Conversions, zeros dropped, row-major order (as the CPU twins). out's buffers only grow: codes
// no larger than out has held before allocate nothing.
void topk_to_csr(Context& ctx, const TopKCodes& codes, Csr& out);
void topk_to_coo(Context& ctx, const TopKCodes& codes, Coo& out);

// Decode without output normalisation: out [B, d_in] = z @ W_dec + b_dec.
// decode_topk never reads outside W_dec: a pair whose index is outside [0, d_sae) adds nothing
// (the CPU twin throws; an op here cannot without a synchronisation: the inference API checks
// caller codes and throws InvalidArgument).
void decode_topk(Context& ctx, const DeviceSae& sae, const TopKCodes& codes, float* out);  // gather kernel
void decode_csr(Context& ctx, const DeviceSae& sae, Csr& csr, float* out);                  // cuSPARSE SpMM
void decode_coo(Context& ctx, const DeviceSae& sae, Coo& coo, float* out);                  // cuSPARSE SpMM
void decode_dense(Context& ctx, const DeviceSae& sae, const float* z, int64_t B, float* out,
                  Precision p = Precision::fp32);                                         // cuBLAS
// The gather kernel on raw pointers: out[b] = bias + sum_{i < k_used} val[b,i] * W[idx[b,i]], with
// k_used = *k_dev when k_dev is given (AuxK), else k; ld is the row stride of idx/val. With
// n_rows > 0 (W has n_rows rows), a pair whose index is outside [0, n_rows) adds nothing instead
// of reading out of bounds; n_rows = 0 trusts the indices (codes this library selected itself).
// threads_per_token (16, 32, 64 or 128; 0 = gather_threads_per_token) sets the column slab a block
// sweeps (4 columns per thread): narrow slabs keep W's slab in L2 across the batch (the benches
// compare them).
void gather_decode(Context& ctx, const float* W, const float* bias, const int32_t* idx, const float* val,
                   int64_t B, int64_t k, int64_t ld, const int32_t* k_dev, int64_t d, float* out,
                   int64_t n_rows = 0, int threads_per_token = 0);
// The automatic choice for a decode touching `rows_used` rows of W: 32 threads (128-column slabs,
// the fastest on an H200 at both PERF.md shapes), 16 when those slabs' rows would not fit in L2.
int gather_threads_per_token(const Context& ctx, int64_t rows_used);

// ---- the pointer-level layer ---------------------------------------------------------------------
// The ops above on raw device arrays, for callers that hold their own memory (the inference
// engine, src/api/cuda_engine.cpp); the container forms above are built on these.
//
// Normalisation (CPU twin: cpu::normalize_in / normalize_out, src/cpu/normalize.cpp), all four
// modes. u = normalize_in(x) - b_dec (b_dec may be null), x/u [B, d]; for constant_norm_rescale
// and layer_norm, scale / shift [B] (may be null) receive the statistics that normalize_out needs.
void normalize_in(Context& ctx, Normalize mode, const float* x, const float* b_dec, int64_t B, int64_t d, float* u,
                  float* scale, float* shift);
// Undoes normalize_in on xhat [B, d] in place (nothing for none / expected_average_only_in).
void normalize_out(Context& ctx, Normalize mode, float* xhat, int64_t B, int64_t d, const float* scale,
                   const float* shift);
// Sparse conversions of top-k pairs idx/val [B, k] (CPU twins: src/cpu/sparse_convert.cpp).
// offsets [B + 1] = the exclusive scan of each row's non-zero count: a CSR indptr, offsets[B] = nnz.
void topk_row_offsets(Context& ctx, const float* val, int64_t B, int64_t k, int64_t* offsets);
// The non-zero pairs of each row, in order, at offsets[b] of cols / vals (and rows, the row index,
// when non-null: COO).
void compact_topk(Context& ctx, const int32_t* idx, const float* val, int64_t B, int64_t k, const int64_t* offsets,
                  int64_t* rows, int32_t* cols, float* vals);
// z [B, n] = 0 with z[b, idx[b, i]] = val[b, i].
void topk_to_dense(Context& ctx, const int32_t* idx, const float* val, int64_t B, int64_t k, int64_t n, float* z);
// The gather kernel of gather_decode over CSR rows: out[b] = bias + sum over p in
// [indptr[b], indptr[b+1]) of val[p] * W[idx[p]]; zero values add nothing, and with n_rows > 0
// an index outside [0, n_rows) adds nothing.
void gather_decode_csr(Context& ctx, const float* W, const float* bias, const int64_t* indptr, const int32_t* idx,
                       const float* val, int64_t B, int64_t d, float* out, int64_t n_rows = 0,
                       int threads_per_token = 0);
// Checks of codes in device memory, before a kernel gathers through them: set *bad (device int32,
// zeroed by the caller) to 1 when an index of idx [count] is outside [0, n_rows), or when indptr
// [B + 1] is not a CSR offset array (indptr[0] != 0, or decreasing).
void check_latents(Context& ctx, const int32_t* idx, int64_t count, int64_t n_rows, int32_t* bad);
void check_indptr(Context& ctx, const int64_t* indptr, int64_t B, int32_t* bad);
// The error term of forward with use_error_term (CPU twin: src/cpu/forward.cpp), in two steps so
// that hook_sae_error can observe it: e = x - e (e holding the reconstruction), then out += e; [n].
void error_term(Context& ctx, const float* x, float* e, int64_t n);
void add_error_term(Context& ctx, float* out, const float* e, int64_t n);

// Bandwidth ceiling helper for the benches: dst = src, `bytes` a multiple of 16.
void device_copy(Context& ctx, void* dst, const void* src, size_t bytes);
// Fills a device f32 array with a deterministic pseudo-random N(0, scale^2)-like pattern.
void fill_random(Context& ctx, float* dst, int64_t n, uint64_t seed, float scale);
// f32 -> bf16 (round to nearest even).
void to_bf16(Context& ctx, const float* src, uint16_t* dst, int64_t n);

// CUDA twin of cpu::gather_rows (kernels/gather_rows.cu): rows, slots and out in device memory,
// queued on `stream` (the mixing buffer has a stream but no Context).
void gather_rows(Stream stream, const float* rows, int64_t d, const int64_t* slots, int64_t n, float* out);

}  // namespace topksae::cuda
