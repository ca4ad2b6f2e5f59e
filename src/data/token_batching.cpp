// Token batching with sae_lens 6.13.1 semantics. The concatenating mode mirrors
// `_add_tokens_to_batch` step by step (including which token counts as "first" when deciding on the
// BOS and the separator), because its corner cases (prefixes cut to the space left, a long input
// continuing into the next output without a begin_sequence token) are part of the behaviour.
#include "topksae/token_batching.h"

#include <algorithm>

#include "topksae/error.h"

namespace topksae {

TokenBatcher::TokenBatcher(const TokenBatchingOptions& opts) : opts_(opts) {
  TOPKSAE_CHECK(opts_.context_size >= 2, "token batching: context_size must be at least 2, got ",
                opts_.context_size);
  if (opts_.disable_concat_sequences && opts_.begin_batch_token_id && !opts_.begin_sequence_token_id)
    opts_.begin_sequence_token_id = opts_.begin_batch_token_id;  // the 6.13.1 rule
  batch_.reserve(static_cast<size_t>(opts_.context_size));
}

void TokenBatcher::emit(std::span<const int32_t> seq, const TokenSequenceSink& sink) {
  ++emitted_;
  sink(seq);
}

void TokenBatcher::push(std::span<const int32_t> sequence, const TokenSequenceSink& sink) {
  if (opts_.disable_concat_sequences)
    push_no_concat(sequence, sink);
  else
    push_concat(sequence, sink);
}

void TokenBatcher::push_no_concat(std::span<const int32_t> seq, const TokenSequenceSink& sink) {
  const auto ctx = static_cast<size_t>(opts_.context_size);
  const auto& bs = opts_.begin_sequence_token_id;
  if (bs && !seq.empty() && seq[0] != *bs && seq.size() >= ctx - 1) {
    batch_.assign(1, *bs);
    batch_.insert(batch_.end(), seq.begin(), seq.begin() + static_cast<std::ptrdiff_t>(ctx - 1));
    emit(batch_, sink);
    batch_.clear();
    return;
  }
  if (seq.size() >= ctx) emit(seq.first(ctx), sink);
}

void TokenBatcher::push_concat(std::span<const int32_t> seq, const TokenSequenceSink& sink) {
  const auto ctx = static_cast<size_t>(opts_.context_size);
  size_t offset = 0;
  bool start_of_sequence = true;
  while (offset < seq.size()) {
    int32_t prefix[3];  // at most begin_batch/separator + begin_sequence; built back to front
    size_t n_prefix = 0;
    auto push_front = [&](int32_t t) {
      std::copy_backward(prefix, prefix + n_prefix, prefix + n_prefix + 1);
      prefix[0] = t;
      ++n_prefix;
    };
    int32_t first = seq[offset];
    if (start_of_sequence && opts_.begin_sequence_token_id && first != *opts_.begin_sequence_token_id) {
      push_front(*opts_.begin_sequence_token_id);
      first = *opts_.begin_sequence_token_id;
    }
    size_t take = 0;  // input tokens appended this round
    if (!batch_open_) {
      if (opts_.begin_batch_token_id && first != *opts_.begin_batch_token_id) push_front(*opts_.begin_batch_token_id);
      take = ctx > n_prefix ? ctx - n_prefix : 0;
      batch_.assign(prefix, prefix + std::min(n_prefix, ctx));
      batch_open_ = true;
    } else {
      if (opts_.sequence_separator_token_id && first != *opts_.sequence_separator_token_id)
        push_front(*opts_.sequence_separator_token_id);
      const size_t space = ctx - batch_.size();
      take = space > n_prefix ? space - n_prefix : 0;
      batch_.insert(batch_.end(), prefix, prefix + std::min(n_prefix, space));  // prefix cut to the space left
    }
    take = std::min(take, seq.size() - offset);
    batch_.insert(batch_.end(), seq.begin() + static_cast<std::ptrdiff_t>(offset),
                  seq.begin() + static_cast<std::ptrdiff_t>(offset + take));
    offset += take;
    start_of_sequence = false;
    if (batch_.size() == ctx) {
      emit(batch_, sink);
      batch_.clear();
      batch_open_ = false;
    }
  }
}

void check_document_offsets(std::span<const int64_t> offsets, int64_t n_tokens, const std::string& what) {
  TOPKSAE_CHECK(!offsets.empty(), what, ": document offsets are empty (need [n_documents + 1] values starting at 0)");
  TOPKSAE_CHECK(offsets.front() == 0, what, ": document offsets must start at 0, got ", offsets.front());
  for (size_t i = 1; i < offsets.size(); ++i) {
    TOPKSAE_CHECK(offsets[i] >= offsets[i - 1], what, ": document offsets must be non-decreasing, but offsets[", i,
                  "] = ", offsets[i], " < offsets[", i - 1, "] = ", offsets[i - 1]);
    TOPKSAE_CHECK(offsets[i] <= n_tokens, what, ": document offset offsets[", i, "] = ", offsets[i],
                  " is out of range (there are ", n_tokens, " tokens)");
  }
  TOPKSAE_CHECK(offsets.back() == n_tokens, what, ": the last document offset must equal the number of tokens (",
                n_tokens, "), got ", offsets.back());
}

int64_t batch_documents(std::span<const int32_t> tokens, std::span<const int64_t> offsets,
                        const TokenBatchingOptions& opts, const TokenSequenceSink& sink, const std::string& what) {
  check_document_offsets(offsets, static_cast<int64_t>(tokens.size()), what);
  TokenBatcher b(opts);
  for (size_t d = 0; d + 1 < offsets.size(); ++d)
    b.push(tokens.subspan(static_cast<size_t>(offsets[d]), static_cast<size_t>(offsets[d + 1] - offsets[d])), sink);
  return b.emitted();
}

std::vector<int32_t> batch_documents(std::span<const int32_t> tokens, std::span<const int64_t> offsets,
                                     const TokenBatchingOptions& opts) {
  std::vector<int32_t> out;
  batch_documents(tokens, offsets, opts, [&](std::span<const int32_t> s) { out.insert(out.end(), s.begin(), s.end()); });
  return out;
}

}  // namespace topksae
