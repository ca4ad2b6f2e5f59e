#!/usr/bin/env python3
"""Prints one side-by-side table from the JSON files of a GPU check (tools/gpu_check.sh):
bench_decode.json, bench_encode.json, bench_train_step.json (this engine) and torch_peers.json
(../shared/peers/torch_peers.py, the PyTorch / sae_lens peers measured in the same call).

Usage: python3 tools/bench_table.py DIR [--markdown]
"""
import json, os, sys


def load(d, name):
    p = os.path.join(d, name)
    if os.path.exists(p):
        try:
            with open(p) as f:
                return json.load(f)
        except Exception as e:  # a truncated file from a timed-out run
            print(f"# could not read {p}: {e}")
    return salvage(d, name)


def salvage(d, name):
    """A run cut short (timeout, exception) writes no JSON, but its log holds every row it measured:
    the benches print '# {json}' per row, torch_peers.py one '{json}' line per measurement."""
    log = os.path.join(d, name[:-len(".json")] + ".log")
    if not os.path.exists(log):
        return None
    rows = []
    with open(log, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.startswith("# {"):
                line = line[2:]
            if not line.startswith("{"):
                continue
            try:
                rows.append(json.loads(line))
            except Exception:
                pass
    if not rows:
        return None
    print(f"# {name} missing: {len(rows)} rows salvaged from {log}")
    if name.startswith("bench_"):
        return {"bench": name[len("bench_"):-len(".json")], "results": rows}
    return rows


def fmt(v, nd=3):
    return "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    d = sys.argv[1]
    md = "--markdown" in sys.argv
    rows = []  # (section, shape, impl, ms, extra)
    device = None
    ceilings = {}
    for name in ("bench_train_step.json", "bench_train_step_ceiling.json", "bench_decode.json", "bench_encode.json"):
        j = load(d, name)
        if not j:
            continue
        device = device or j.get("device")
        for k, v in (j.get("ceilings") or {}).items():
            ceilings.setdefault("ours " + k, v)
        for r in j.get("results", []):
            shape = f"{r['d_in']}x{r['d_sae']} k={r['k']}"
            if "skipped" in r:
                continue
            extra = []
            if "error" in r:
                extra.append("ERROR " + r["error"][:80])
            if r.get("TFLOPs") is not None:
                extra.append(f"{r['TFLOPs']:.1f} TFLOP/s")
            if r.get("of_ceiling") is not None:  # bench_encode's gpu_encoder_gemm_<precision>_<library>
                extra.append(f"{100 * r['of_ceiling']:.0f}% of the cuBLAS ceiling {r['gemm_ceiling_TFLOPs']:.0f}")
            if r.get("lt_algo_rank") is not None:
                extra.append(f"Lt algo {r['lt_algo_rank']} of {r.get('lt_candidates')}")
            if r.get("auto_chose"):
                extra.append(f"auto chose {r['auto_chose']}")
            if r.get("GBps") is not None:
                extra.append(f"{r['GBps']:.0f} GB/s")
            if r.get("device_mem_GiB") is not None:
                extra.append(f"mem {r['device_mem_GiB']:.2f} GiB")
            if r.get("step_bytes_GiB") is not None:  # TrainStep::device_bytes: the allocation plan
                extra.append(f"plan {r['step_bytes_GiB']:.2f} GiB")
            if r.get("grad_storage") == "fused":  # no stored dense gradient (12 B/param)
                extra.append("fused gradients")
            if r.get("aux_steps_dense") is not None and r.get("steps_run"):
                extra.append(f"AuxK in {r['aux_steps_dense'] + r.get('aux_steps_gather', 0)}/{r['steps_run']} steps")
            rows.append((j["bench"], shape, "topksae " + r["variant"], r.get("ms"), ", ".join(extra)))
    peers = load(d, "torch_peers.json") or []
    for r in peers:
        if r.get("kind") == "ceiling":
            ceilings["torch " + r["what"]] = r["value"]
            continue
        if "d_in" not in r or r.get("kind") == "decode_floor_bytes":
            continue
        shape = f"{r['d_in']}x{r['d_sae']} k={r['k']}"
        section = {"train_step": "train_step", "decode": "decode", "encode_topk": "encode"}.get(r["kind"], r["kind"])
        extra = "ERROR " + r["error"][:80] if "error" in r else (f"peak {r['peak_GiB']:.1f} GiB" if "peak_GiB" in r else "")
        rows.append((section, shape, "peer " + r.get("impl", "?"), r.get("ms"), extra))

    print(f"device: {device}")
    if ceilings:
        print("ceilings: " + ", ".join(f"{k}={v:.1f}" for k, v in sorted(ceilings.items())))
    order = {"train_step": 0, "decode": 1, "encode": 2}
    rows.sort(key=lambda r: (order.get(r[0], 9), r[1], r[2]))
    if md:
        print("\n| section | shape | implementation | ms | notes |\n|---|---|---|---|---|")
        for s, sh, impl, ms, ex in rows:
            print(f"| {s} | {sh} | {impl} | {fmt(ms)} | {ex} |")
    else:
        print(f"\n{'section':<11} {'shape':<18} {'implementation':<58} {'ms':>9}  notes")
        for s, sh, impl, ms, ex in rows:
            print(f"{s:<11} {sh:<18} {impl:<58} {fmt(ms):>9}  {ex}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
