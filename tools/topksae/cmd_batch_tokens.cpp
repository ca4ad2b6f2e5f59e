// `topksae batch-tokens`: cuts tokenized documents (a flat token array plus document offsets) into
// sequences of exactly --context-size tokens with sae_lens 6.13.1 semantics (token_batching.h) and
// writes them as an [N, context_size] int32 npy. Memory stays bounded: the inputs are memory-mapped,
// documents are batched one at a time, and rows are streamed to the output (a first pass counts
// them, since the npy header holds the row count).
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

#include "command.h"
#include "topksae/atomic_file.h"
#include "topksae/error.h"
#include "topksae/npy.h"
#include "topksae/safetensors.h"
#include "topksae/token_batching.h"

namespace topksae::cli {
namespace {
namespace fs = std::filesystem;

struct BatchTokensArgs {
  std::string tokens, offsets, out;
  int64_t context_size = 0;
  int64_t bos = 0, begin_sequence = 0, separator = 0;
  bool no_concat = false;
  CLI::Option *bos_opt = nullptr, *begin_sequence_opt = nullptr, *separator_opt = nullptr;
};

// Element i of a 1-D integer array (i32 or i64); memcpy because safetensors data may be unaligned.
int64_t int_at(const ArrayView& a, int64_t i) {
  const auto* p = static_cast<const char*>(a.data);
  if (a.dtype == DType::i32) {
    int32_t v;
    std::memcpy(&v, p + i * 4, 4);
    return v;
  }
  int64_t v;
  std::memcpy(&v, p + i * 8, 8);
  return v;
}

void check_int_vector(const ArrayView& a, const std::string& what) {
  TOPKSAE_CHECK(a.dtype == DType::i32 || a.dtype == DType::i64, what, ": expected int32 or int64, got ",
                dtype_name(a.dtype));
  TOPKSAE_CHECK(a.shape.size() == 1, what, ": expected a 1-D array, got shape ", shape_str(a.shape));
}

// npy 1.0 header for a C-order '<i4' array of `shape`, padded so the data starts at a multiple of 64.
std::string npy_i32_header(int64_t rows, int64_t cols) {
  std::string dict = "{'descr': '<i4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                     std::to_string(cols) + "), }";
  const size_t total = (10 + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - 10 - dict.size() - 1, ' ');
  dict.push_back('\n');
  std::string h = "\x93NUMPY";
  h.push_back(1);
  h.push_back(0);
  h.push_back(static_cast<char>(dict.size() & 0xff));
  h.push_back(static_cast<char>(dict.size() >> 8));
  return h + dict;
}

void run_batch_tokens(const BatchTokensArgs& a) {
  TokenBatchingOptions o;
  o.context_size = a.context_size;
  auto id = [](CLI::Option* opt, int64_t v, const char* name) -> std::optional<int32_t> {
    if (opt->count() == 0) return std::nullopt;
    TOPKSAE_CHECK(v >= 0 && v <= INT32_MAX, name, ": token id must be in [0, 2^31), got ", v);
    return static_cast<int32_t>(v);
  };
  o.begin_batch_token_id = id(a.bos_opt, a.bos, "--bos");
  o.begin_sequence_token_id = id(a.begin_sequence_opt, a.begin_sequence, "--begin-sequence");
  o.sequence_separator_token_id = id(a.separator_opt, a.separator, "--separator");
  o.disable_concat_sequences = a.no_concat;
  { TokenBatcher check(o); }  // rejects a bad context_size before any file is read

  // Open the inputs: one safetensors holding `tokens` and `offsets`, or two npy files.
  std::optional<SafetensorsFile> st;
  std::optional<NpyFile> tok_npy, off_npy;
  ArrayView tokens, offsets;
  std::string tok_src = a.tokens, off_src;
  if (fs::path(a.tokens).extension() == ".safetensors") {
    TOPKSAE_CHECK(a.offsets.empty(), "--offsets: not used with a safetensors --tokens file (it holds `offsets`)");
    st = SafetensorsFile::open(a.tokens);
    tokens = st->at("tokens");
    offsets = st->at("offsets");
    tok_src = a.tokens + ": tokens";
    off_src = a.tokens + ": offsets";
  } else {
    TOPKSAE_CHECK(!a.offsets.empty(), "--offsets: required with an npy --tokens file");
    tok_npy = NpyFile::open(a.tokens);
    off_npy = NpyFile::open(a.offsets);
    tokens = tok_npy->array();
    offsets = off_npy->array();
    off_src = a.offsets;
  }
  check_int_vector(tokens, tok_src);
  check_int_vector(offsets, off_src);
  const int64_t n_tokens = tokens.numel(), n_offsets = offsets.numel();

  // Offsets are small next to tokens (one per document): validate them as int64 in memory.
  std::vector<int64_t> off(static_cast<size_t>(n_offsets));  // [D + 1]
  for (int64_t i = 0; i < n_offsets; ++i) off[size_t(i)] = int_at(offsets, i);
  check_document_offsets(off, n_tokens, off_src);

  // Runs the batcher over every document; the document is copied to int32 (checked) so that int64
  // and unaligned inputs are handled alike; memory is bounded by the longest document.
  std::vector<int32_t> doc;
  auto run = [&](const TokenSequenceSink& sink) {
    TokenBatcher b(o);
    for (size_t d = 0; d + 1 < off.size(); ++d) {
      doc.resize(static_cast<size_t>(off[d + 1] - off[d]));
      for (int64_t i = off[d]; i < off[d + 1]; ++i) {
        const int64_t t = int_at(tokens, i);
        TOPKSAE_CHECK(t >= 0 && t <= INT32_MAX, tok_src, ": token ", i, " = ", t, " is not a valid token id");
        doc[size_t(i - off[d])] = static_cast<int32_t>(t);
      }
      b.push(doc, sink);
    }
    return std::pair{b.emitted(), b.pending_tokens()};
  };
  const auto [rows, dropped] = run([](std::span<const int32_t>) {});

  AtomicFile f(a.out);
  f.write(npy_i32_header(rows, a.context_size));
  run([&](std::span<const int32_t> s) { f.write(s.data(), s.size_bytes()); });
  f.commit();
  std::cout << "wrote " << rows << " sequences of " << a.context_size << " tokens to " << a.out << " (from "
            << n_offsets - 1 << " documents, " << n_tokens << " tokens; ";
  if (a.no_concat)
    std::cout << "documents shorter than context_size - 1 dropped)\n";
  else
    std::cout << "a trailing partial sequence of " << dropped << " tokens dropped)\n";
}

CommandRegistration reg([](CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "batch-tokens",
      "Cut tokenized documents into [N, context_size] int32 sequences (sae_lens 6.13.1 concat_and_batch_sequences)");
  auto args = std::make_shared<BatchTokensArgs>();
  cmd->add_option("--tokens", args->tokens,
                  "flat token array (1-D int32/int64 .npy), or a .safetensors holding `tokens` and `offsets`")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("--offsets", args->offsets,
                  "document offsets (1-D int32/int64 .npy, [n_documents + 1], from 0 to the token count)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--context-size", args->context_size, "tokens per output sequence (>= 2)")->required();
  args->bos_opt = cmd->add_option("--bos", args->bos, "begin_batch_token_id: token at position 0 of every sequence");
  args->begin_sequence_opt = cmd->add_option("--begin-sequence", args->begin_sequence,
                                             "begin_sequence_token_id: token before every document");
  args->separator_opt = cmd->add_option("--separator", args->separator,
                                        "sequence_separator_token_id: token between concatenated documents");
  cmd->add_flag("--no-concat", args->no_concat,
                "disable_concat_sequences: one sequence per document, shorter documents dropped");
  cmd->add_option("--out", args->out, "output .npy, [N, context_size] int32")->required();
  cmd->footer(
      "Token id 0 is a real id here (sae_lens treats 0 as unset in --no-concat mode). With --no-concat and only\n"
      "--bos given, the BOS is used as the begin-sequence token (sae_lens 6.13.1).");
  cmd->callback([args] { run_batch_tokens(*args); });
});
}  // namespace
}  // namespace topksae::cli
