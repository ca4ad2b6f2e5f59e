"""What the `mpirun ... topksae train` end-to-end scripts share (cli_sharded_test.py on CPU ranks,
cli_sharded_cuda_test.py on emulated GPU ranks; Python standard library only): running the command
under mpirun, reading a run's metrics and safetensors, comparing two runs, and the activations."""
import json
import os
import random
import struct
import subprocess
import sys
from array import array

BASE_ENV = dict(os.environ, OMP_NUM_THREADS="1", TERM="dumb", OMPI_ALLOW_RUN_AS_ROOT="1",
                OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")

# The per-step metrics that must agree exactly (counts); every other non-timing key to a tolerance.
EXACT_KEYS = ("sparsity/dead_features", "metrics/l0", "step", "details/n_training_samples",
              "sparsity/below_1e-5", "sparsity/below_1e-6")


def fail(msg):
    sys.exit("FAIL: " + msg)


def run(binary, mpiexec, np_, *args, env=BASE_ENV, expect=0):
    """`binary args` (under `mpiexec -np np_` when np_ > 1); expect 0: must succeed, 1: must fail,
    None: either. Fails on the CUDA emulation's stream-order hazard report (tests/cuda_emu/README.md)."""
    cmd = ([mpiexec, "-np", str(np_)] if np_ > 1 else []) + [binary, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    out = p.stdout + p.stderr
    if expect is not None and (p.returncode == 0) != (expect == 0):
        fail(f"{' '.join(cmd)}\nexit {p.returncode}, expected {'0' if expect == 0 else 'an error'}\n{out}")
    if "cuda_emu: HAZARD" in out:
        fail(f"{' '.join(cmd)}: a stream-order hazard (missing synchronisation between streams)\n{out}")
    return out


def load_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        a = array("f")
        a.frombytes(b[8 + n + s:8 + n + e])
        out[k] = a
    return out


def metrics(out):
    return [json.loads(line) for line in open(f"{out}/metrics.jsonl")]


def compare(a, b, what, loss_tol=1e-6, weight_tol=1e-5, ev_absolute=False, sparsity=False):
    """Runs a and b: every step's metrics (EXACT_KEYS exactly, the rest to loss_tol relative; with
    ev_absolute, explained variance to loss_tol absolute, for runs where it is near 0), the final
    weights to weight_tol, and with sparsity the final sparsity.safetensors exactly."""
    ma, mb = metrics(a), metrics(b)
    if len(ma) != len(mb):
        fail(f"{what}: {len(ma)} vs {len(mb)} steps logged")
    for x, y in zip(ma, mb):
        for key in x:
            if key.startswith("perf/"):  # timings (the share of time waiting for data), not the math
                continue
            if key in EXACT_KEYS:
                bad = x[key] != y[key]
            elif ev_absolute and key == "metrics/explained_variance":
                bad = abs(x[key] - y[key]) > loss_tol
            else:
                bad = abs(x[key] - y[key]) > loss_tol * abs(y[key]) + 1e-12
            if bad:
                fail(f"{what}: step {x['step']} {key} {x[key]} vs {y[key]}")
    wa, wb = load_safetensors(f"{a}/sae_weights.safetensors"), load_safetensors(f"{b}/sae_weights.safetensors")
    for k in wb:
        d = max(abs(p - q) for p, q in zip(wa[k], wb[k]))
        if len(wa[k]) != len(wb[k]) or d > weight_tol:
            fail(f"{what}: final {k} differs by {d}")
    if sparsity:
        sa, sb = load_safetensors(f"{a}/sparsity.safetensors"), load_safetensors(f"{b}/sparsity.safetensors")
        if sa["sparsity"] != sb["sparsity"]:
            fail(f"{what}: final sparsity differs")


def feature_activations(rows, d_in, seed=4, n_features=24, active=3):
    """[rows, d_in] values, row-major: each row a sum of `active` of n_features random directions
    (amplitudes 0.5..2) plus noise, so an SAE has features to find and some latents die."""
    rng = random.Random(seed)
    dirs = [[rng.gauss(0, 1) for _ in range(d_in)] for _ in range(n_features)]
    vals = []
    for _ in range(rows):
        x = [rng.gauss(0, 0.05) for _ in range(d_in)]
        for f in rng.sample(range(n_features), active):
            a = rng.uniform(0.5, 2)
            x = [xi + a * di for xi, di in zip(x, dirs[f])]
        vals += x
    return vals
