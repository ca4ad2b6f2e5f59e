// The work of `topksae encode`, `decode` and `eval` on an inference Model (api.h), apart from the
// command line (no CLI11 here) so that tests/test_cli_inference.cpp runs exactly what the commands
// run, on the CPU and on the GPU. Every pointer here is host memory: a CUDA model stages it.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "topksae/api.h"
#include "topksae/metrics.h"
#include "topksae/safetensors.h"

namespace topksae::cli {

// Sparse features as `topksae encode` writes them (FORMATS.md "Sparse features written by encode"):
// one batch's, or every row's when gathered.
struct Features {
  bool csr = false;
  int64_t rows = 0;
  std::vector<int32_t> indices;     // topk [rows, k] by value descending; csr [nnz]
  std::vector<float> values;        // as indices
  std::vector<int64_t> indptr{0};   // csr [rows + 1], from 0; topk: just {0}
};

// encode, batch by batch: each batch's features go to a sink (memory: one batch), or are gathered.
class FeatureEncoder {
 public:
  using Sink = std::function<void(const Features& batch)>;
  FeatureEncoder(const Model& model, bool csr, Sink sink);
  // Gathers every row into features(): memory grows with the rows (tests, small inputs).
  FeatureEncoder(const Model& model, bool csr);
  FeatureEncoder(const FeatureEncoder&) = delete;  // the gathering sink points at this one
  FeatureEncoder& operator=(const FeatureEncoder&) = delete;
  void add(const float* x, int64_t n);  // x [n, d_in]
  const Features& features() const { return all_; }  // gathered rows (none when streaming to a sink)

 private:
  const Model& model_;
  Workspace ws_;
  Features batch_;  // the last batch, reused
  Features all_;    // gathered
  Sink sink_;
};

// The file `topksae encode` writes, appended batch by batch through a SafetensorsStreamWriter, so
// memory does not grow with the rows: top-k indices int32 [N, k] and values [N, k]; CSR indptr int64
// [N + 1], indices int32 [nnz], values [nnz]; values stored as `values_dtype`. The bytes are those
// SafetensorsWriter would write for the gathered features (tests/test_cli_inference.cpp checks).
// Errors name the output file; a failed or unfinished file leaves nothing behind.
class FeatureFileWriter {
 public:
  FeatureFileWriter(const std::filesystem::path& out, bool csr, int64_t k, DType values_dtype);
  void append(const Features& batch);  // batch.csr as this file's format; CSR indptr from 0
  void set_metadata(const std::string& key, const std::string& value) { w_.set_metadata(key, value); }
  void finish() { w_.finish(); }
  int64_t rows() const { return rows_; }
  int64_t entries() const { return entries_; }  // indices written: rows * k, or nnz

 private:
  SafetensorsStreamWriter w_;
  bool csr_;
  int64_t k_;
  size_t indptr_ = 0, indices_ = 0, values_ = 0;  // tensor handles
  int64_t rows_ = 0, entries_ = 0;
  std::vector<int64_t> indptr_buf_;  // [batch rows] the batch's row ends, offset to the whole file
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
