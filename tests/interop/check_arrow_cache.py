"""Interop check 6: sae_lens 6.13.1's own activation cache (a HuggingFace `datasets` directory of
Arrow IPC streams) read by topksae, row for row.

1. The cache is written by sae_lens's own code path without a model: a CacheActivationsRunner made
   with object.__new__ gets the attributes _create_shard needs; each buffer goes through
   _create_shard + save_to_disk(num_shards=1) into .tmp_shards/shard_0000i, then
   CacheActivationsRunner._consolidate_shards makes the final directory (state.json + data files).
   topksae (interop_tool dataset-rows, i.e. FileDataset) must give exactly the activations, in
   order (also against datasets' own load_from_disk), pick the hook column without --tensor, and
   `topksae train` / `topksae eval` must run on the directory.
2. pyarrow writes the layouts a cache may take in other hands (large_list, fixed_size_list,
   float16/float64, the file format, legacy framing, slices, record batches of several sizes,
   columns of many types before the activations): values equal; compressed bodies, nulls,
   dictionary and union columns refused with a clear message."""
import datetime
import decimal
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Array2D, Dataset, Features, Sequence, Value
from sae_lens.cache_activations_runner import CacheActivationsRunner

from common import TOOL, TOPKSAE, Mismatch, expect_equal, main, run

HOOK = "blocks.2.hook_resid_post"


def sae_lens_cache(d, dtype, n_buffers=3, n_seq=4, ctx=7, d_in=13, seed=0):
    """Writes a cache with sae_lens's _create_shard / save_to_disk / _consolidate_shards; returns
    the directory and the activations of each buffer ([n_seq * ctx, d_in] each, in order)."""
    runner = object.__new__(CacheActivationsRunner)
    runner.cfg = SimpleNamespace(hook_name=HOOK, n_seq_in_buffer=n_seq, d_in=d_in, dtype=dtype)
    runner.context_size = ctx
    runner.features = Features({HOOK: Array2D(shape=(ctx, d_in), dtype=dtype),  # as in its __init__
                                "token_ids": Sequence(Value(dtype="int32"), length=ctx)})
    out = Path(d) / "cache"
    tmp = out / ".tmp_shards"
    tmp.mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    tdtype = {"float32": torch.float32, "float16": torch.float16, "float64": torch.float64}[dtype]
    acts = []
    for i in range(n_buffers):
        a = (torch.randn(n_seq * ctx, d_in, generator=g) * 3 + i).to(tdtype)
        toks = torch.randint(0, 50000, (n_seq * ctx,), generator=g)
        runner._create_shard((a, toks)).save_to_disk(f"{tmp}/shard_{i:05d}", num_shards=1)
        acts.append(a.to(torch.float32).numpy())
    CacheActivationsRunner._consolidate_shards(tmp, out, copy_files=False)
    return str(out), acts


def dataset_rows(d, data, tensor=""):
    out = os.path.join(d, "rows.npy")
    desc = run([TOOL, "dataset-rows", data, tensor, out]).strip()
    return np.load(out), desc


def check_cache(dtype):
    def fn(d):
        data, acts = sae_lens_cache(d, dtype)
        files = json.loads(Path(data, "state.json").read_text())["_data_files"]
        want = np.concatenate(acts)  # [3 * 4 * 7, 13]
        ours, desc = dataset_rows(d, data)
        print(f"  {desc}")
        expect_equal(f"{dtype}: {len(files)} data files, rows {ours.shape[0]} and d_in {ours.shape[1]}",
                     ours.shape, want.shape)
        expect_equal(f"{dtype}: the --tensor default picks the hook column",
                     f"column '{HOOK}'" in desc and f"{len(files)} arrow shards" in desc, True)
        if not np.any(want != 0):
            raise Mismatch("the activations are all zero")
        expect_equal(f"{dtype}: every row equals sae_lens's activations, in order", ours, want)
        theirs = Dataset.load_from_disk(data).with_format("numpy")[HOOK]  # datasets' own reading
        expect_equal(f"{dtype}: ... and datasets' load_from_disk", ours, np.asarray(theirs, np.float32).reshape(-1, 13))
        named, _ = dataset_rows(d, data, HOOK)
        expect_equal(f"{dtype}: --tensor {HOOK} gives the same rows", named, ours)
        p = subprocess.run([TOOL, "dataset-rows", data, "token_ids", os.path.join(d, "t.npy")], capture_output=True,
                           text=True)
        expect_equal(f"{dtype}: --tensor token_ids is refused, naming the column and its type",
                     p.returncode != 0 and "column 'token_ids' has type fixed_size_list<int32>[7]" in p.stderr, True)
        if dtype == "float32":
            sae = os.path.join(d, "sae")
            log = run([TOPKSAE, "train", "--data", data, "--d-sae", "32", "--k", "4", "--batch-size", "16",
                       "--buffer-batches", "2", "--training-tokens", "80", "--out", sae, "--no-report"])
            cfg = json.loads(Path(sae, "cfg.json").read_text())
            steps = len(Path(sae, "metrics.jsonl").read_text().splitlines())
            expect_equal("topksae train on the cache: 5 steps, d_in 13 in cfg.json",
                         (steps, cfg["d_in"], "3 arrow shards" in log), (5, 13, True))
            ev = json.loads(run([TOPKSAE, "eval", "--sae", sae, "--input", data, "--json"]))
            expect_equal("topksae eval on the cache reads all 84 rows", ev.get("tokens"), 84)
    return fn


def nested(a, kind):
    """[n, ctx, d] as a pyarrow list-of-lists array of the given layout."""
    n, ctx, dd = a.shape
    flat = pa.array(a.reshape(-1))
    if kind == "list":
        return pa.ListArray.from_arrays(pa.array(np.arange(0, n * ctx + 1, ctx, dtype=np.int32)),
                                        pa.ListArray.from_arrays(pa.array(np.arange(0, n * ctx * dd + 1, dd, dtype=np.int32)), flat))
    if kind == "large_list":
        return pa.LargeListArray.from_arrays(pa.array(np.arange(0, n * ctx + 1, ctx, dtype=np.int64)),
                                             pa.LargeListArray.from_arrays(pa.array(np.arange(0, n * ctx * dd + 1, dd, dtype=np.int64)), flat))
    if kind == "fixed_size_list":
        return pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, dd), ctx)
    if kind == "list_of_fixed":
        return pa.ListArray.from_arrays(pa.array(np.arange(0, n * ctx + 1, ctx, dtype=np.int32)),
                                        pa.FixedSizeListArray.from_arrays(flat, dd))
    raise ValueError(kind)


def write_ipc(path, tables, file_format=False, **opts):
    with pa.OSFile(path, "wb") as f:
        w = (pa.ipc.new_file if file_format else pa.ipc.new_stream)(f, tables[0].schema, options=pa.ipc.IpcWriteOptions(**opts))
        for t in tables:
            w.write_table(t)
        w.close()


def pyarrow_layouts(d):
    rng = np.random.default_rng(6)
    a = rng.standard_normal((5, 3, 4)).astype(np.float32)
    n = len(a)
    others = {"nul": pa.nulls(n), "i8": pa.array(range(n), pa.int8()), "b": pa.array([True] * n),
              "s": pa.array(["x"] * n), "ls": pa.array(["y"] * n, pa.large_string()), "bin": pa.array([b"z"] * n),
              "fsb": pa.array([b"ab"] * n, pa.binary(2)), "dec": pa.array([decimal.Decimal("1.5")] * n),
              "date": pa.array([datetime.date(2020, 1, 1)] * n), "ts": pa.array([datetime.datetime(2020, 1, 1)] * n),
              "dur": pa.array([datetime.timedelta(1)] * n, pa.duration("s")), "tm": pa.array([datetime.time(1)] * n),
              "st": pa.array([{"a": 1, "b": "q"}] * n), "lst": pa.array([[1, 2]] * n),
              "mp": pa.array([[("k", 1)]] * n, pa.map_(pa.string(), pa.int32())),
              "ree": pc.run_end_encode(pa.array([1] * n)), "lv": pa.array([[1, 2]] * n, pa.list_view(pa.int32())),
              "tok": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(n * 3, dtype=np.int32)), 3)}
    t = pa.table({"acts": nested(a, "list")})
    cases = [(kind, [pa.table({"acts": nested(x, kind)})], {}, x)
             for kind in ("list", "large_list", "fixed_size_list", "list_of_fixed")
             for x in (a, a.astype(np.float16), a.astype(np.float64))]
    cases += [("file format", [t], {"file_format": True}, a),
              ("legacy framing", [t], {"use_legacy_format": True}, a),
              ("batches of 2, 0, 3 rows", [t.slice(0, 2), t.slice(2, 0), t.slice(2, 3)], {}, a),
              ("a slice (offsets from a non-zero base)", [t.slice(1, 3)], {}, a[1:4]),
              ("fixed_size_list slice", [pa.table({"acts": nested(a, "fixed_size_list")}).slice(2, 2)], {}, a[2:4]),
              ("18 columns of other types first", [pa.table({**others, "acts": nested(a, "list"), "z": pa.array(["w"] * n)})],
               {}, a)]
    for i, (what, tables, opts, x) in enumerate(cases):
        path = os.path.join(d, f"v{i}.arrow")
        write_ipc(path, tables, **opts)
        ours, _ = dataset_rows(d, path)
        want = x.reshape(-1, x.shape[-1]).astype(np.float32)
        if ours.dtype != np.float32 or not np.array_equal(ours, want):
            raise Mismatch(f"{what} ({x.dtype}): rows differ: ours {ours.shape}, pyarrow {want.shape}")
    expect_equal(f"{len(cases)} pyarrow-written layouts read exactly", True, True)

    nulls = pa.ListArray.from_arrays(pa.array([0, 3, 6, 9, 12, 15], pa.int32()), nested(a, "list").values,
                                     mask=pa.array([False, True, False, False, False]))
    refused = [("compressed body", [t], {"compression": "zstd"}, "compressed"),
               ("nulls", [pa.table({"acts": nulls})], {}, "must not be null"),
               ("dictionary column", [pa.table({"d": pa.array(["a", "b", "a", "b", "a"]).dictionary_encode(),
                                                "acts": nested(a, "list")})], {}, "dictionary"),
               ("union column first", [pa.table({"u": pa.UnionArray.from_sparse(pa.array([0] * n, pa.int8()),
                                                                                 [pa.array(range(n))]),
                                                 "acts": nested(a, "list")})], {}, "cannot step over"),
               ("two activation columns", [pa.table({"a1": nested(a, "list"), "a2": nested(a, "list")})], {},
                "several activation columns (a1, a2)")]
    for what, tables, opts, msg in refused:
        path = os.path.join(d, "bad.arrow")
        write_ipc(path, tables, **opts)
        p = subprocess.run([TOOL, "dataset-rows", path, "", os.path.join(d, "x.npy")], capture_output=True, text=True)
        if p.returncode == 0 or msg not in p.stderr or "bad.arrow" not in p.stderr:
            raise Mismatch(f"{what}: expected an error mentioning {msg!r}, got exit {p.returncode}: {p.stderr}")
    expect_equal(f"{len(refused)} unsupported layouts refused with a clear message", True, True)


if __name__ == "__main__":
    main([("sae_lens cache, float32", check_cache("float32")), ("sae_lens cache, float16", check_cache("float16")),
          ("pyarrow layouts", pyarrow_layouts)])
