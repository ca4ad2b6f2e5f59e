// The work of `topksae encode`, `decode` and `eval` on an inference Model (api.h), apart from the
// command line (no CLI11 here) so that tests/test_cli_inference.cpp runs exactly what the commands
// run, on the CPU and on the GPU. Every pointer here is host memory: a CUDA model stages it.
#pragma once
#include <cstdint>
#include <vector>

#include "topksae/api.h"
#include "topksae/metrics.h"

namespace topksae::cli {

// Sparse features as `topksae encode` writes them (FORMATS.md "Sparse features written by encode").
struct Features {
  bool csr = false;
  int64_t rows = 0;
  std::vector<int32_t> indices;     // topk [rows, k] by value descending; csr [nnz]
  std::vector<float> values;        // as indices
  std::vector<int64_t> indptr{0};   // csr [rows + 1]; topk: just {0}
};

// encode: batches of rows in, the features of every row gathered in memory.
class FeatureEncoder {
 public:
  FeatureEncoder(const Model& model, bool csr);
  void add(const float* x, int64_t n);  // x [n, d_in]
  const Features& features() const { return f_; }

 private:
  const Model& model_;
  Workspace ws_;
  Features f_;
  std::vector<int64_t> batch_indptr_;  // [n + 1] one batch's CSR row pointers
};

// decode, `batch` rows per call: top-k pairs idx/val [rows, width] -> out [rows, d_in].
void decode_topk_rows(const Model& model, const int32_t* idx, const float* val, int64_t rows, int64_t width,
                      float* out, int64_t batch);
// CSR indptr [rows + 1] (from 0, non-decreasing), indices/values [indptr[rows]] -> out [rows, d_in].
// as_pairs: each batch goes to decode_topk as pairs of width (its longest row), padded with zeros,
// when that width is at most k (as in every file `topksae encode` writes). Decode skips zero codes,
// so a CSR file then decodes bit for bit as the top-k file it was made from, on the GPU too (whose
// CSR decode, cuSPARSE, sums in another order than its top-k gather). automatic: as_pairs on a CUDA
// model; the CPU's CSR and top-k decodes already agree.
enum class CsrDecode : uint8_t { automatic, native, as_pairs };
void decode_csr_rows(const Model& model, const int64_t* indptr, const int32_t* idx, const float* val, int64_t rows,
                     float* out, int64_t batch, CsrDecode how = CsrDecode::automatic);

// eval: the metrics of MetricsAccumulator on the unscaled input and forward's output, batch by batch.
class EvalRunner {
 public:
  explicit EvalRunner(const Model& model);
  void add(const float* x, int64_t n);  // x [n, d_in]
  EvalMetrics result(int bins) const { return acc_.result(bins); }

 private:
  const Model& model_;
  Workspace ws_;
  MetricsAccumulator acc_;
  std::vector<float> xhat_;  // [n, d_in]
  cpu::TopKCodes codes_;     // [n, k]
};

}  // namespace topksae::cli
