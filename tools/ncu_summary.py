#!/usr/bin/env python3
"""Per-kernel time of one training step from Nsight Compute's CSV (tools/gpu_check.sh's profile
stage: `ncu --csv --page raw --print-units base --metrics gpu__time_duration.sum,dram__bytes_read.sum,
dram__bytes_write.sum` over the NVTX range of one step). Groups launches by short kernel name and
prints them by total time, with the DRAM bytes they moved and the bandwidth that makes.

usage: ncu_summary.py FILE.csv [TITLE]
"""
import csv
import re
import sys


def short_name(full):
    """'void ns::(anonymous namespace)::topk_kernel<float>(const float*, ...)' -> 'topk_kernel'."""
    s = full.strip()
    depth, cut = 0, len(s)
    for i, ch in enumerate(s):  # the first '(' outside template brackets starts the arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0 and not s[i:].startswith("(anonymous"):
            cut = i
            break
    s = s[:cut]
    s = re.sub(r"^void\s+", "", s)
    s = re.sub(r"<.*>$", "", s)  # drop trailing template arguments
    return s.split("::")[-1] or full[:60]


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    path = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else path
    with open(path, newline="", errors="replace") as f:
        lines = f.read().splitlines()
    start = next((i for i, l in enumerate(lines) if '"Kernel Name"' in l or l.startswith('"ID"')), None)
    if start is None:
        print(f"{title}: no Nsight Compute CSV table in {path}")
        return 1
    rows = list(csv.reader(lines[start:]))
    head = rows[0]

    def col(name):
        for i, h in enumerate(head):
            if h == name or h.startswith(name):
                return i
        return None

    c_name, c_t = col("Kernel Name"), col("gpu__time_duration.sum")
    c_rd, c_wr = col("dram__bytes_read.sum"), col("dram__bytes_write.sum")
    if c_name is None or c_t is None:
        print(f"{title}: columns 'Kernel Name' / 'gpu__time_duration.sum' not found in {path}: {head[:12]}")
        return 1

    def num(r, c):
        try:
            return float(r[c].replace(",", "")) if c is not None and c < len(r) else 0.0
        except ValueError:
            return None

    agg = {}
    for r in rows[1:]:
        if len(r) <= max(c_name, c_t):
            continue
        t = num(r, c_t)
        if t is None:  # the units row
            continue
        a = agg.setdefault(short_name(r[c_name]), [0, 0.0, 0.0])
        a[0] += 1
        a[1] += t  # ns (--print-units base)
        a[2] += (num(r, c_rd) or 0.0) + (num(r, c_wr) or 0.0)
    total = sum(a[1] for a in agg.values())
    print(f"== {title}: {sum(a[0] for a in agg.values())} kernel launches, {total / 1e6:.3f} ms of kernel time "
          "(serialised by the profiler: launch gaps and overlap not counted)")
    print(f"{'kernel':52s} {'calls':>5s} {'ms':>8s} {'share':>6s} {'DRAM MB':>9s} {'GB/s':>7s}")
    for name, (n, t, b) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        gbs = b / t if t > 0 else 0.0  # bytes per ns = GB/s
        print(f"{name[:52]:52s} {n:5d} {t / 1e6:8.3f} {100 * t / total:5.1f}% {b / 1e6:9.1f} {gbs:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
