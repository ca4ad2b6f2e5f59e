// Token batching: cuts a stream of token sequences (documents) into sequences of exactly
// context_size tokens, with the semantics of sae_lens 6.13.1
// `tokenization_and_batching.concat_and_batch_sequences` (see shared spec MATH.md, "Token batching").
//
// One difference on purpose: every id is a std::optional, and 0 is a real token id. sae_lens tests
// begin_batch/begin_sequence for truthiness in the non-concatenating mode, so there an id of 0 behaves
// as unset; here it does not. With non-zero ids the outputs are identical (tests/interop checks it).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace topksae {

struct TokenBatchingOptions {
  int64_t context_size = 0;                           // tokens per output sequence, >= 2
  std::optional<int32_t> begin_batch_token_id;        // at position 0 of each output (BOS)
  std::optional<int32_t> begin_sequence_token_id;     // first token of each input sequence
  std::optional<int32_t> sequence_separator_token_id; // between concatenated inputs
  bool disable_concat_sequences = false;              // one output per input, short inputs dropped
};

// Receives each finished output sequence: exactly context_size tokens, valid during the call only.
using TokenSequenceSink = std::function<void(std::span<const int32_t> sequence)>;

// Streaming batcher: memory is one partial output (context_size tokens), whatever the stream length.
//   TokenBatcher b(opts);
//   for (doc : docs) b.push(doc, sink);   // sink is called for every finished output
//   // a partial output left at the end is dropped, as in sae_lens (pending_tokens() tells its size)
class TokenBatcher {
 public:
  explicit TokenBatcher(const TokenBatchingOptions& opts);  // throws Error on context_size < 2
  // Feeds the next input sequence (may be empty: it then contributes nothing).
  void push(std::span<const int32_t> sequence, const TokenSequenceSink& sink);
  int64_t emitted() const { return emitted_; }                             // outputs so far
  int64_t pending_tokens() const { return static_cast<int64_t>(batch_.size()); }  // in the partial output
  const TokenBatchingOptions& options() const { return opts_; }

 private:
  void push_concat(std::span<const int32_t> seq, const TokenSequenceSink& sink);
  void push_no_concat(std::span<const int32_t> seq, const TokenSequenceSink& sink);
  void emit(std::span<const int32_t> seq, const TokenSequenceSink& sink);

  TokenBatchingOptions opts_;
  std::vector<int32_t> batch_;  // [<= context_size] the output being filled (concatenating mode)
  bool batch_open_ = false;     // sae_lens's `batch is not None`: an output has been started
  int64_t emitted_ = 0;
};

// Validates document offsets over a flat token array of n_tokens: offsets [D+1] with offsets[0] == 0,
// non-decreasing (an empty document is allowed and contributes nothing), offsets[D] == n_tokens.
// `what` names the source in the error message (a file name).
void check_document_offsets(std::span<const int64_t> offsets, int64_t n_tokens, const std::string& what);

// Runs a TokenBatcher over documents given as a flat token array plus offsets (checked as above).
// Returns the number of output sequences passed to the sink.
int64_t batch_documents(std::span<const int32_t> tokens, std::span<const int64_t> offsets,
                        const TokenBatchingOptions& opts, const TokenSequenceSink& sink,
                        const std::string& what = "offsets");

// Convenience for small inputs and tests: all outputs in one row-major [N, context_size] array.
std::vector<int32_t> batch_documents(std::span<const int32_t> tokens, std::span<const int64_t> offsets,
                                     const TokenBatchingOptions& opts);

}  // namespace topksae
