// The public Model: validates every argument a caller can get wrong (throwing InvalidArgument
// with the op, the argument and what is wrong), then hands the call to its device's engine.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "api/engine.h"

namespace topksae {

namespace {

template <typename... Args>
void require(bool cond, const Args&... args) {
  if (!cond) throw InvalidArgument(concat(args...));
}

// A caller's [rows, cols] matrix: non-null, the expected width, and (when rows_expected >= 0)
// the batch of the call. rows_expected < 0: this view defines the batch, which must be >= 1.
template <typename T>
void check_view(const View<T>& v, const char* op, const char* name, int64_t rows_expected, int64_t cols_expected,
                const char* cols_name) {
  if (rows_expected < 0)
    require(v.rows >= 1, op, ": ", name, " has ", v.rows, " rows; a batch needs at least 1");
  else
    require(v.rows == rows_expected, op, ": ", name, " has ", v.rows, " rows, the batch has ", rows_expected);
  require(v.cols == cols_expected, op, ": ", name, " has ", v.cols, " columns, expected ", cols_name, "=",
          cols_expected);
  require(v.data != nullptr, op, ": ", name, " is a null pointer");
  require(v.rows <= std::numeric_limits<int64_t>::max() / std::max<int64_t>(v.cols, 1), op, ": ", name,
          " is too large");
}

// Host codes: every latent index in [0, d_sae).
void check_latents(const char* op, const int32_t* idx, int64_t n, int64_t d_sae) {
  for (int64_t i = 0; i < n; ++i)
    require(idx[i] >= 0 && idx[i] < d_sae, op, ": latent index ", idx[i], " (element ", i, ") out of range [0, ",
            d_sae, ")");
}

}  // namespace

Model::Model(Sae sae, const ModelOptions& opts) : sae_(std::move(sae)), device_(opts.device) {
  sae_.cfg.validate();
  sae_.params.check_shapes(sae_.cfg);
  if (opts.cuda_encode_rows < -1)
    throw InvalidArgument(concat("ModelOptions::cuda_encode_rows is ", opts.cuda_encode_rows,
                                 ": must be -1 (whole batch), 0 (automatic) or a row count"));
  engine_ = device_ == Device::cpu ? detail::make_cpu_engine(sae_) : detail::make_cuda_engine(sae_, opts);
}

Model::~Model() = default;

std::shared_ptr<const Model> Model::from_sae(Sae sae, const ModelOptions& opts) {
  return std::make_shared<const Model>(std::move(sae), opts);
}

void Model::check_call(const CallOptions& opts, const char* op) const {
  require(opts.cpu_threads >= 0, op, ": CallOptions::cpu_threads is ", opts.cpu_threads, "; must be >= 0");
  if (device_ == Device::cpu) {
    require(opts.memory == Device::cpu, op, ": the model is on cpu but CallOptions::memory says the pointers are on ",
            device_name(opts.memory), "; load the model with ModelOptions::device = Device::cuda to pass device "
            "pointers, or copy them to the host");
    require(opts.stream == nullptr, op, ": a CUDA stream was given to a model on cpu (streams belong to CUDA models; "
            "pass nullptr)");
  }
}

void Model::encode_topk(Workspace& ws, View<const float> x, View<int32_t> indices, View<float> values,
                        const CallOptions& opts) const {
  check_call(opts, "encode_topk");
  check_view(x, "encode_topk", "x", -1, d_in(), "d_in");
  check_view(indices, "encode_topk", "indices", x.rows, k(), "k");
  check_view(values, "encode_topk", "values", x.rows, k(), "k");
  detail::EncodeArgs a;
  a.x = x.data;
  a.rows = x.rows;
  a.format = detail::CodeFormat::topk;
  a.indices = indices.data;
  a.values = values.data;
  engine_->encode(ws, a, opts);
}

int64_t Model::encode_csr(Workspace& ws, View<const float> x, const CsrOut& out, const CallOptions& opts) const {
  check_call(opts, "encode_csr");
  check_view(x, "encode_csr", "x", -1, d_in(), "d_in");
  require(out.indptr != nullptr, "encode_csr: CsrOut::indptr is a null pointer");
  require(out.capacity >= 0, "encode_csr: CsrOut::capacity is ", out.capacity, "; must be >= 0");
  require(out.capacity == 0 || (out.indices != nullptr && out.values != nullptr),
          "encode_csr: CsrOut::indices or CsrOut::values is a null pointer");
  detail::EncodeArgs a;
  a.x = x.data;
  a.rows = x.rows;
  a.format = detail::CodeFormat::csr;
  a.indices = out.indices;
  a.values = out.values;
  a.indptr = out.indptr;
  a.capacity = out.capacity;
  return engine_->encode(ws, a, opts);
}

void Model::encode_dense(Workspace& ws, View<const float> x, View<float> z, const CallOptions& opts) const {
  check_call(opts, "encode_dense");
  check_view(x, "encode_dense", "x", -1, d_in(), "d_in");
  check_view(z, "encode_dense", "z", x.rows, d_sae(), "d_sae");
  detail::EncodeArgs a;
  a.x = x.data;
  a.rows = x.rows;
  a.format = detail::CodeFormat::dense;
  a.dense = z.data;
  engine_->encode(ws, a, opts);
}

void Model::decode_topk(Workspace& ws, View<const int32_t> indices, View<const float> values, View<float> out,
                        const CallOptions& opts) const {
  check_call(opts, "decode_topk");
  require(indices.cols >= 1, "decode_topk: indices has ", indices.cols, " columns; need at least 1");
  check_view(indices, "decode_topk", "indices", -1, indices.cols, "the width of indices");
  check_view(values, "decode_topk", "values", indices.rows, indices.cols, "the width of indices");
  check_view(out, "decode_topk", "out", indices.rows, d_in(), "d_in");
  if (opts.memory == Device::cpu) check_latents("decode_topk", indices.data, indices.rows * indices.cols, d_sae());
  detail::DecodeArgs a;
  a.format = detail::CodeFormat::topk;
  a.rows = indices.rows;
  a.indices = indices.data;
  a.values = values.data;
  a.width = indices.cols;
  a.out = out.data;
  engine_->decode(ws, a, opts);
}

void Model::decode_csr(Workspace& ws, const CsrIn& codes, View<float> out, const CallOptions& opts) const {
  check_call(opts, "decode_csr");
  require(codes.rows >= 1, "decode_csr: CsrIn::rows is ", codes.rows, "; a batch needs at least 1");
  require(codes.indptr != nullptr, "decode_csr: CsrIn::indptr is a null pointer");
  check_view(out, "decode_csr", "out", codes.rows, d_in(), "d_in");
  if (opts.memory == Device::cpu) {  // nnz is readable here, so the other pointers can be checked
    require(codes.indptr[codes.rows] >= 0, "decode_csr: indptr[rows] is ", codes.indptr[codes.rows]);
    require(codes.indptr[0] == 0, "decode_csr: indptr[0] is ", codes.indptr[0], "; must be 0");
    for (int64_t b = 0; b < codes.rows; ++b)
      require(codes.indptr[b] <= codes.indptr[b + 1], "decode_csr: indptr decreases at row ", b);
    require(codes.indptr[codes.rows] == 0 || (codes.indices != nullptr && codes.values != nullptr),
            "decode_csr: CsrIn::indices or CsrIn::values is a null pointer");
    check_latents("decode_csr", codes.indices, codes.indptr[codes.rows], d_sae());
  }
  detail::DecodeArgs a;
  a.format = detail::CodeFormat::csr;
  a.rows = codes.rows;
  a.indptr = codes.indptr;
  a.indices = codes.indices;
  a.values = codes.values;
  a.out = out.data;
  engine_->decode(ws, a, opts);
}

void Model::decode_dense(Workspace& ws, View<const float> z, View<float> out, const CallOptions& opts) const {
  check_call(opts, "decode_dense");
  check_view(z, "decode_dense", "z", -1, d_sae(), "d_sae");
  check_view(out, "decode_dense", "out", z.rows, d_in(), "d_in");
  detail::DecodeArgs a;
  a.format = detail::CodeFormat::dense;
  a.rows = z.rows;
  a.dense = z.data;
  a.out = out.data;
  engine_->decode(ws, a, opts);
}

void Model::forward(Workspace& ws, View<const float> x, View<float> out, bool use_error_term,
                    const CallOptions& opts) const {
  check_call(opts, "forward");
  check_view(x, "forward", "x", -1, d_in(), "d_in");
  check_view(out, "forward", "out", x.rows, d_in(), "d_in");
  const auto o = reinterpret_cast<uintptr_t>(out.data), i = reinterpret_cast<uintptr_t>(x.data);
  const auto n = uintptr_t(x.rows * d_in()) * sizeof(float);
  require(o + n <= i || i + n <= o,
          "forward: out overlaps x (the error term reads x after out is written); pass separate buffers");
  engine_->forward(ws, x.data, x.rows, out.data, use_error_term, opts);
}

}  // namespace topksae
