// Token batching (sae_lens 6.13.1 concat_and_batch_sequences semantics): each rule of the spec on
// hand-worked cases, the non-concatenating mode, streaming equivalence, and bad input.
// The expected rows below were worked out by hand from the spec and sae_lens's source;
// tests/interop/ compares against sae_lens itself on random streams.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "topksae/error.h"
#include "topksae/token_batching.h"

using namespace topksae;

namespace {
using Rows = std::vector<std::vector<int32_t>>;

TokenBatchingOptions opts(int64_t ctx, std::optional<int32_t> bb = {}, std::optional<int32_t> bs = {},
                          std::optional<int32_t> sep = {}, bool no_concat = false) {
  TokenBatchingOptions o;
  o.context_size = ctx;
  o.begin_batch_token_id = bb;
  o.begin_sequence_token_id = bs;
  o.sequence_separator_token_id = sep;
  o.disable_concat_sequences = no_concat;
  return o;
}

Rows run(const Rows& docs, const TokenBatchingOptions& o) {
  TokenBatcher b(o);
  Rows out;
  for (const auto& d : docs)
    b.push(d, [&](std::span<const int32_t> s) {
      EXPECT_EQ(static_cast<int64_t>(s.size()), o.context_size);
      out.emplace_back(s.begin(), s.end());
    });
  EXPECT_EQ(b.emitted(), static_cast<int64_t>(out.size()));
  return out;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST(TokenBatching, BosNotDuplicatedAndTrailingPartialDropped) {
  // ctx 5, BOS 1. Doc 1 already starts with BOS; doc 2 continues into a second row which gets a BOS;
  // doc 3 starts a row with its own BOS and is left partial at the end: dropped.
  Rows got = run({{1, 10, 11}, {12, 13, 14, 15, 16, 17}, {1, 20}}, opts(5, 1));
  EXPECT_EQ(got, (Rows{{1, 10, 11, 12, 13}, {1, 14, 15, 16, 17}}));
}

TEST(TokenBatching, SeparatorNotDuplicatedAndCutToSpaceLeft) {
  // ctx 6, BOS 1, separator 2. Doc 2 starts with the separator: none inserted. Doc 3 needs one, but
  // only one slot is left: the separator fills it and doc 3 starts the next row (partial, dropped).
  Rows got = run({{10, 11}, {2, 12}, {13, 14, 15}}, opts(6, 1, {}, 2));
  EXPECT_EQ(got, (Rows{{1, 10, 11, 2, 12, 2}}));
}

TEST(TokenBatching, TwoTokenPrefixCutToSpaceLeft) {
  // ctx 5, BOS 1, begin_sequence 3, separator 2. The prefix [sep, begin_seq] of docs 2 and 3 meets a
  // single free slot: only the separator goes in; the document then opens the next row with a BOS
  // and without its begin_sequence token (sae_lens's behaviour, reproduced).
  Rows got = run({{10, 11}, {20, 21, 22}, {30}}, opts(5, 1, 3, 2));
  EXPECT_EQ(got, (Rows{{1, 3, 10, 11, 2}, {1, 20, 21, 22, 2}}));
}

TEST(TokenBatching, BeginSequenceAndBosTogether) {
  // begin_sequence before every input, BOS before every row; a long input continues without either
  // begin_sequence (only at an input's start) but with a BOS.
  Rows got = run({{10, 11}, {20, 21, 22}}, opts(4, 1, 3));
  EXPECT_EQ(got, (Rows{{1, 3, 10, 11}, {1, 3, 20, 21}}));  // [1, 22] left partial
  // An input starting with the begin_sequence token that is also the BOS gets neither again.
  EXPECT_EQ(run({{1, 5, 6, 7, 8}}, opts(4, 1, 1)), (Rows{{1, 5, 6, 7}}));
  // A middle token equal to BOS at the start of a continued row is taken as the BOS (sae_lens compares
  // the row's first token).
  EXPECT_EQ(run({{5, 6, 1, 8, 9}}, opts(3, 1)), (Rows{{1, 5, 6}, {1, 8, 9}}));
}

TEST(TokenBatching, PlainConcatenationIsTheStreamCutIntoRows) {
  std::mt19937 rng(7);
  Rows docs;
  std::vector<int32_t> flat;
  for (int d = 0; d < 50; ++d) {
    std::vector<int32_t> doc(rng() % 13);
    for (auto& t : doc) t = static_cast<int32_t>(rng() % 1000);
    flat.insert(flat.end(), doc.begin(), doc.end());
    docs.push_back(doc);
  }
  Rows got = run(docs, opts(7));
  ASSERT_EQ(got.size(), flat.size() / 7);
  ASSERT_GT(got.size(), 10u);
  for (size_t r = 0; r < got.size(); ++r)
    for (size_t c = 0; c < 7; ++c) EXPECT_EQ(got[r][c], flat[r * 7 + c]);
}

TEST(TokenBatching, ZeroIsARealTokenId) {
  EXPECT_EQ(run({{5, 6}, {7, 8}}, opts(3, 0)), (Rows{{0, 5, 6}, {0, 7, 8}}));
  EXPECT_EQ(run({{0, 5, 6, 7}}, opts(3, 0)), (Rows{{0, 5, 6}}));
  // Non-concatenating: begin_batch 0 stands in for begin_sequence (sae_lens would treat 0 as unset).
  EXPECT_EQ(run({{5, 6, 7}}, opts(4, 0, {}, {}, true)), (Rows{{0, 5, 6, 7}}));
}

TEST(TokenBatching, NoConcatRules) {
  // ctx 4, only begin_batch 1 given: used as begin_sequence.
  Rows got = run({{5, 6},               // shorter than ctx-1: dropped
                  {5, 6, 7},            // exactly ctx-1: BOS prepended
                  {1, 8, 9, 10, 11},    // already starts with BOS: first ctx tokens kept
                  {5, 6, 7, 8, 9},      // long: BOS + first ctx-1 tokens
                  {1, 2},               // starts with BOS but short: dropped
                  {}},                  // empty: dropped
                 opts(4, 1, {}, {}, true));
  EXPECT_EQ(got, (Rows{{1, 5, 6, 7}, {1, 8, 9, 10}, {1, 5, 6, 7}}));
}

TEST(TokenBatching, NoConcatWithoutIdsAndWithOwnBeginSequence) {
  EXPECT_EQ(run({{5, 6, 7}, {5, 6, 7, 8, 9}}, opts(4, {}, {}, {}, true)), (Rows{{5, 6, 7, 8}}));
  // begin_sequence given: it is used, begin_batch is not; the separator plays no part.
  EXPECT_EQ(run({{5, 6, 7}, {3, 4, 5, 6}}, opts(4, 1, 3, 2, true)), (Rows{{3, 5, 6, 7}, {3, 4, 5, 6}}));
}

TEST(TokenBatching, StreamingMatchesWholeArrayAndMemoryStaysBounded) {
  std::mt19937 rng(11);
  std::vector<int32_t> tokens;
  std::vector<int64_t> offsets{0};
  for (int d = 0; d < 300; ++d) {
    const int len = static_cast<int>(rng() % 40);
    for (int i = 0; i < len; ++i) tokens.push_back(static_cast<int32_t>(rng() % 8));  // ids collide with specials
    offsets.push_back(static_cast<int64_t>(tokens.size()));
  }
  for (bool no_concat : {false, true}) {
    const auto o = opts(17, 1, 2, 3, no_concat);
    std::vector<int32_t> whole = batch_documents(tokens, offsets, o);
    ASSERT_GT(whole.size(), 17u * 20);
    TokenBatcher b(o);
    std::vector<int32_t> streamed;
    for (size_t d = 0; d + 1 < offsets.size(); ++d) {
      b.push(std::span(tokens).subspan(size_t(offsets[d]), size_t(offsets[d + 1] - offsets[d])),
             [&](std::span<const int32_t> s) { streamed.insert(streamed.end(), s.begin(), s.end()); });
      EXPECT_LT(b.pending_tokens(), 17);
    }
    EXPECT_EQ(streamed, whole);
  }
}

TEST(TokenBatching, BadInput) {
  const std::vector<int32_t> toks{1, 2, 3, 4, 5};
  auto call = [&](std::vector<int64_t> off, int64_t ctx = 2) {
    return message_of([&] { batch_documents(toks, off, opts(ctx)); });
  };
  EXPECT_NE(call({0, 3, 2, 5}).find("non-decreasing"), std::string::npos) << call({0, 3, 2, 5});
  EXPECT_NE(call({0, 3, 9, 5}).find("out of range"), std::string::npos) << call({0, 3, 9, 5});
  EXPECT_NE(call({0, 7}).find("out of range"), std::string::npos);
  EXPECT_NE(call({1, 5}).find("start at 0"), std::string::npos);
  EXPECT_NE(call({0, 3}).find("last document offset"), std::string::npos);
  EXPECT_NE(call({}).find("empty"), std::string::npos);
  EXPECT_NE(call({0, 5}, 1).find("context_size"), std::string::npos);
  EXPECT_NE(message_of([] { TokenBatcher b(opts(0)); }).find("context_size"), std::string::npos);
  EXPECT_EQ(call({0, 2, 2, 5}), "(no error)");  // an empty document is fine
}
