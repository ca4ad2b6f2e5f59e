// encode / decode / eval batches through the inference API (cli_inference.h).
#include "cli_inference.h"

#include <algorithm>

#include "topksae/error.h"

namespace topksae::cli {

FeatureEncoder::FeatureEncoder(const Model& model, bool csr, Sink sink) : model_(model), sink_(std::move(sink)) {
  batch_.csr = csr;
  all_.csr = csr;
}

FeatureEncoder::FeatureEncoder(const Model& model, bool csr)
    : FeatureEncoder(model, csr, [this](const Features& b) {
        const int64_t old = int64_t(all_.indices.size());
        all_.indices.insert(all_.indices.end(), b.indices.begin(), b.indices.end());
        all_.values.insert(all_.values.end(), b.values.begin(), b.values.end());
        if (b.csr)
          for (int64_t r = 0; r < b.rows; ++r) all_.indptr.push_back(old + b.indptr[size_t(r + 1)]);
        all_.rows += b.rows;
      }) {}

void FeatureEncoder::add(const float* x, int64_t n) {
  if (n == 0) return;  // the API refuses empty batches
  const int64_t k = model_.k();
  const View<const float> xv{x, n, model_.d_in()};
  // A batch holds at most n * k codes (no hooks here); CSR gives back what the zeros leave.
  batch_.rows = n;
  batch_.indices.resize(size_t(n * k));
  batch_.values.resize(size_t(n * k));
  if (!batch_.csr) {
    model_.encode_topk(ws_, xv, {batch_.indices.data(), n, k}, {batch_.values.data(), n, k});
  } else {
    batch_.indptr.resize(size_t(n + 1));
    const int64_t nnz =
        model_.encode_csr(ws_, xv, CsrOut{batch_.indptr.data(), batch_.indices.data(), batch_.values.data(), n * k});
    batch_.indices.resize(size_t(nnz));
    batch_.values.resize(size_t(nnz));
  }
  sink_(batch_);
}

FeatureFileWriter::FeatureFileWriter(const std::filesystem::path& out, bool csr, int64_t k, DType values_dtype)
    : w_(out), csr_(csr), k_(k) {
  // Declared in the order the in-memory writer was given them: the layout (and bytes) follow it.
  if (!csr_) {
    indices_ = w_.declare("indices", DType::i32, {k});
    values_ = w_.declare("values", values_dtype, {k});
  } else {
    indptr_ = w_.declare("indptr", DType::i64);
    indices_ = w_.declare("indices", DType::i32);
    values_ = w_.declare("values", values_dtype);
    const int64_t zero = 0;
    w_.append(indptr_, &zero, 1);
  }
}

void FeatureFileWriter::append(const Features& b) {
  TOPKSAE_CHECK(b.csr == csr_, w_.path().string(), ": a ", b.csr ? "CSR" : "top-k", " batch for a ",
                csr_ ? "CSR" : "top-k", " file");
  if (!csr_) {
    TOPKSAE_CHECK(int64_t(b.indices.size()) == b.rows * k_ && b.values.size() == b.indices.size(),
                  w_.path().string(), ": a top-k batch of ", b.rows, " rows needs ", b.rows * k_, " pairs");
    w_.append(indices_, b.indices.data(), b.rows);
    w_.append_f32(values_, b.values.data(), b.rows);
  } else {
    const int64_t nnz = int64_t(b.indices.size());
    TOPKSAE_CHECK(int64_t(b.indptr.size()) == b.rows + 1 && b.indptr.front() == 0 && b.indptr.back() == nnz &&
                      b.values.size() == b.indices.size(),
                  w_.path().string(), ": malformed CSR batch");
    indptr_buf_.resize(size_t(b.rows));
    for (int64_t r = 0; r < b.rows; ++r) indptr_buf_[size_t(r)] = entries_ + b.indptr[size_t(r + 1)];
    w_.append(indptr_, indptr_buf_.data(), b.rows);
    w_.append(indices_, b.indices.data(), nnz);
    w_.append_f32(values_, b.values.data(), nnz);
  }
  rows_ += b.rows;
  entries_ += int64_t(b.indices.size());
}

namespace {
// out [rows, d_in] = b_dec in every row: what codes of width 0 decode to (the API needs width >= 1).
void fill_b_dec(const Model& model, int64_t rows, float* out) {
  const std::vector<float>& b_dec = model.sae().params.b_dec;
  for (int64_t b = 0; b < rows; ++b) std::copy(b_dec.begin(), b_dec.end(), out + b * model.d_in());
}
}  // namespace

void decode_topk_rows(const Model& model, const int32_t* idx, const float* val, int64_t rows, int64_t width,
                      float* out, int64_t batch) {
  TOPKSAE_CHECK(batch >= 1, "decode: batch size must be >= 1, got ", batch);
  if (width == 0) return fill_b_dec(model, rows, out);
  Workspace ws;
  const int64_t d = model.d_in();
  for (int64_t b0 = 0; b0 < rows; b0 += batch) {
    const int64_t n = std::min(batch, rows - b0);
    model.decode_topk(ws, {idx + b0 * width, n, width}, {val + b0 * width, n, width}, {out + b0 * d, n, d});
  }
}

void decode_csr_rows(const Model& model, const int64_t* indptr, const int32_t* idx, const float* val, int64_t rows,
                     float* out, int64_t batch, CsrDecode how) {
  TOPKSAE_CHECK(batch >= 1, "decode: batch size must be >= 1, got ", batch);
  // The whole indptr is checked first: each batch is rebased to start at 0, which would hide a bad
  // indptr[0], and a value past indptr[rows] in an early batch would read past indices.
  TOPKSAE_CHECK(rows == 0 || indptr[0] == 0, "decode: CSR indptr[0] must be 0, got ", indptr[0]);
  for (int64_t b = 0; b < rows; ++b)
    TOPKSAE_CHECK(indptr[b] <= indptr[b + 1], "decode: CSR indptr decreases at row ", b);
  for (int64_t p = 0; p < (rows == 0 ? 0 : indptr[rows]); ++p)
    TOPKSAE_CHECK(idx[p] >= 0 && idx[p] < model.d_sae(), "decode: CSR latent index ", idx[p], " (entry ", p,
                  ") out of range [0, ", model.d_sae(), ")");
  if (how == CsrDecode::automatic) how = model.device() == Device::cuda ? CsrDecode::as_pairs : CsrDecode::native;
  Workspace ws;
  const int64_t d = model.d_in();
  std::vector<int64_t> local(static_cast<size_t>(std::min(batch, rows) + 1));  // [n + 1] this batch's indptr
  std::vector<int32_t> pair_idx;  // [n, width] the batch as zero-padded pairs
  std::vector<float> pair_val;
  for (int64_t b0 = 0; b0 < rows; b0 += batch) {
    const int64_t n = std::min(batch, rows - b0), base = indptr[b0];
    int64_t width = 0;
    for (int64_t b = 0; b < n; ++b) width = std::max(width, indptr[b0 + b + 1] - indptr[b0 + b]);
    if (how == CsrDecode::as_pairs && width >= 1 && width <= model.k()) {
      pair_idx.assign(size_t(n * width), 0);
      pair_val.assign(size_t(n * width), 0.f);
      for (int64_t b = 0; b < n; ++b)
        for (int64_t p = indptr[b0 + b]; p < indptr[b0 + b + 1]; ++p) {
          pair_idx[size_t(b * width + p - indptr[b0 + b])] = idx[p];
          pair_val[size_t(b * width + p - indptr[b0 + b])] = val[p];
        }
      model.decode_topk(ws, {pair_idx.data(), n, width}, {pair_val.data(), n, width}, {out + b0 * d, n, d});
      continue;
    }
    for (int64_t b = 0; b <= n; ++b) local[size_t(b)] = indptr[b0 + b] - base;
    model.decode_csr(ws, CsrIn{local.data(), idx + base, val + base, n}, {out + b0 * d, n, d});
  }
}

EvalRunner::EvalRunner(const Model& model) : model_(model), acc_(model.d_in(), model.d_sae()) {
  codes_.k = model.k();
  codes_.d_sae = model.d_sae();
}

void EvalRunner::add(const float* x, int64_t n) {
  if (n == 0) return;
  const int64_t d = model_.d_in(), k = model_.k();
  xhat_.resize(size_t(n * d));
  model_.forward(ws_, {x, n, d}, {xhat_.data(), n, d});  // undoes any input normalisation: xhat is unscaled
  codes_.rows = n;
  codes_.indices.resize(size_t(n * k));
  codes_.values.resize(size_t(n * k));
  model_.encode_topk(ws_, {x, n, d}, {codes_.indices.data(), n, k}, {codes_.values.data(), n, k});
  acc_.add(x, xhat_.data(), codes_);
}

}  // namespace topksae::cli
