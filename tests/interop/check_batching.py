"""Interop check 5: `topksae batch-tokens` against sae_lens 6.13.1 concat_and_batch_sequences on
random token streams, concatenating and non-concatenating, over combinations of the three special
ids (ids collide with ordinary tokens on purpose, so the "already starts with it" rules fire).
Known, documented difference left out: in non-concatenating mode sae_lens treats an id of 0 as unset;
topksae does not. So 0 is used as a special id only in concatenating mode (where both treat it as set)."""
import itertools
import os

import numpy as np
import torch
from sae_lens.tokenization_and_batching import concat_and_batch_sequences

from common import TOPKSAE, Mismatch, expect_equal, main, run


def random_stream(rng, n_docs, vocab, max_len, allow_empty):
    lens = rng.integers(0 if allow_empty else 1, max_len + 1, size=n_docs)
    return [rng.integers(0, vocab, size=int(n)).astype(np.int64) for n in lens]


def theirs(docs, ctx, bb, bs, sep, no_concat):
    out = list(concat_and_batch_sequences(iter(torch.from_numpy(d) for d in docs), ctx, begin_batch_token_id=bb,
                                          begin_sequence_token_id=bs, sequence_separator_token_id=sep,
                                          disable_concat_sequences=no_concat))
    return np.stack([t.numpy() for t in out]) if out else np.zeros((0, ctx), dtype=np.int64)


def ours(d, docs, ctx, bb, bs, sep, no_concat):
    toks = os.path.join(d, "tokens.npy")
    offs = os.path.join(d, "offsets.npy")
    out = os.path.join(d, "out.npy")
    np.save(toks, np.concatenate(docs).astype(np.int32) if docs else np.zeros(0, np.int32))
    np.save(offs, np.concatenate([[0], np.cumsum([len(x) for x in docs])]).astype(np.int64))
    cmd = [TOPKSAE, "batch-tokens", "--tokens", toks, "--offsets", offs, "--context-size", str(ctx), "--out", out]
    for flag, v in (("--bos", bb), ("--begin-sequence", bs), ("--separator", sep)):
        if v is not None:
            cmd += [flag, str(v)]
    if no_concat:
        cmd.append("--no-concat")
    run(cmd)
    a = np.load(out)
    if a.dtype != np.int32 or a.ndim != 2 or a.shape[1] != ctx:
        raise Mismatch(f"output is {a.dtype} {a.shape}, want int32 [N, {ctx}]")
    return a


def check_mode(no_concat):
    def fn(d):
        rng = np.random.default_rng(5 if no_concat else 4)
        ids = [None, 1, 2] if no_concat else [None, 0, 1, 2]
        total_rows = 0
        for ctx in (2, 3, 8, 33):
            for bb, bs, sep in itertools.product(ids, repeat=3):
                docs = random_stream(rng, n_docs=40, vocab=6, max_len=2 * ctx + 3, allow_empty=not no_concat)
                t = theirs(docs, ctx, bb, bs, sep, no_concat)
                o = ours(d, docs, ctx, bb, bs, sep, no_concat)
                if not np.array_equal(o, t):
                    raise Mismatch(f"ctx={ctx} bos={bb} begin_seq={bs} sep={sep}: ours {o.shape} vs sae_lens "
                                   f"{t.shape}; first rows ours {o[:3].tolist()}, sae_lens {t[:3].tolist()}")
                total_rows += len(t)
        if total_rows < 100:
            raise Mismatch(f"only {total_rows} rows compared")
        expect_equal(f"{'no-concat' if no_concat else 'concat'}: {4 * len(ids) ** 3} configurations, "
                     f"{total_rows} rows identical", True, True)
    return fn


if __name__ == "__main__":
    main([("batching, concatenating", check_mode(False)), ("batching, disable_concat_sequences", check_mode(True))])
