"""Shared helpers of the sae_lens interop checks: where the topksae binaries are, how numbers are
compared, and loud failure. Every check prints one line per comparison and exits non-zero on the
first mismatch (after printing what differed)."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

BUILD = os.environ.get("TOPKSAE_BUILD", "build")
TOOL = os.path.join(BUILD, "tests", "interop_tool")
TOPKSAE = os.path.join(BUILD, "tools", "topksae")
REL_TOL = 1e-5  # fp32 agreement required by the issue: max|ours - theirs| / max|theirs|

torch.set_num_threads(1)  # determinism and the 2-core CI machine


class Mismatch(Exception):
    pass


def rel_err(ours, theirs):
    """max |ours - theirs| / max |theirs| over the whole array (the array's scale, so entries that
    are zero in both do not divide by zero)."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape:
        raise Mismatch(f"shapes differ: ours {a.shape}, sae_lens {b.shape}")
    scale = np.abs(b).max() if b.size else 0.0
    if b.size and not np.isfinite(a).all():
        raise Mismatch("ours has non-finite values")
    if scale == 0.0:
        return float(np.abs(a).max()) if a.size else 0.0
    return float(np.abs(a - b).max() / scale)


def expect_close(what, ours, theirs, tol=REL_TOL):
    e = rel_err(ours, theirs)
    theirs_np = np.asarray(theirs, dtype=np.float64)
    if theirs_np.size > 1 and not np.any(theirs_np != 0):
        raise Mismatch(f"{what}: sae_lens's values are all zero, the comparison would prove nothing")
    status = "ok  " if e <= tol else "FAIL"
    print(f"  {status} {what}: max rel err {e:.2e} (tol {tol:.0e})")
    if e > tol:
        raise Mismatch(f"{what}: max rel err {e:.3e} > {tol:.0e}")


def expect_equal(what, ours, theirs):
    ok = np.array_equal(np.asarray(ours), np.asarray(theirs))
    print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        raise Mismatch(f"{what}: ours {np.asarray(ours).tolist()[:8]}..., sae_lens {np.asarray(theirs).tolist()[:8]}...")


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise Mismatch(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout}{p.stderr}")
    return p.stdout


def main(checks):
    """Runs named check functions; prints a closing 'N passed, N failed' line; exit 1 on failure."""
    passed = failed = 0
    for name, fn in checks:
        print(f"[{name}]")
        try:
            with tempfile.TemporaryDirectory() as d:
                fn(d)
            passed += 1
        except Mismatch as e:
            failed += 1
            print(f"  FAILED: {e}")
    print(f"{os.path.basename(sys.argv[0])}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
