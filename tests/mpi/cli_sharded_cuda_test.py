"""`mpirun -np R topksae train --device cuda` end to end in the CUDA emulation's build (each rank
on its own emulated device, NCCL emulated over MPI: a CPU check of the logic, never a GPU run;
Python standard library only). Usage: cli_sharded_cuda_test.py TOPKSAE MPIEXEC TMPDIR

On npy activations through the mixing buffer, with the scaling factor on and AuxK active (checked),
one process on cuda, then R=2 and R=3 (uneven shards: 149 latents) on cuda: every step's metrics
agree (dead counts and L0 exactly, losses to 1e-6 relative) and so do the final SAE directories
(weights to 1e-5). Then the R=2 cuda run stopped after step 7 resumes on the CPU at R=2 (the
checkpoint files are the CPU sharded run's) and ends within the CUDA-vs-CPU tolerance of the
straight cuda run."""
import json
import os
import random
import struct
import subprocess
import sys
from array import array

BIN, MPIEXEC, TMP = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from cli_util import write_npy  # noqa: E402

ENV = dict(os.environ, OMP_NUM_THREADS="1", TERM="dumb", OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1", CUDA_EMU_DEVICES="3")


def fail(msg):
    sys.exit("FAIL: " + msg)


def run(np_, *args, expect=0):
    cmd = ([MPIEXEC, "-np", str(np_)] if np_ > 1 else []) + [BIN, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=240)
    out = p.stdout + p.stderr
    if (p.returncode == 0) != (expect == 0):
        fail(f"{' '.join(cmd)}\nexit {p.returncode}, expected {'0' if expect == 0 else 'an error'}\n{out}")
    if "cuda_emu: HAZARD" in out:  # the emulation's stream-order check (tests/cuda_emu/README.md)
        fail(f"{' '.join(cmd)}: a stream-order hazard (missing synchronisation between streams)\n{out}")
    return out


def load_safetensors(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k != "__metadata__":
            s, e = v["data_offsets"]
            a = array("f")
            a.frombytes(b[8 + n + s:8 + n + e])
            out[k] = a
    return out


def metrics(out):
    return [json.loads(line) for line in open(f"{out}/metrics.jsonl")]


def compare(a, b, what, loss_tol, weight_tol):
    ma, mb = metrics(a), metrics(b)
    if len(ma) != len(mb):
        fail(f"{what}: {len(ma)} vs {len(mb)} steps logged")
    for x, y in zip(ma, mb):
        for key in x:
            if key.startswith("perf/"):
                continue
            if key in ("sparsity/dead_features", "metrics/l0", "step", "details/n_training_samples",
                       "sparsity/below_1e-5", "sparsity/below_1e-6"):
                if x[key] != y[key]:
                    fail(f"{what}: step {x['step']} {key} {x[key]} vs {y[key]}")
            elif key == "metrics/explained_variance":  # 1 - mse/var: near 0 here, so to loss_tol absolute
                if abs(x[key] - y[key]) > loss_tol:
                    fail(f"{what}: step {x['step']} {key} {x[key]} vs {y[key]}")
            elif abs(x[key] - y[key]) > loss_tol * abs(y[key]) + 1e-12:
                fail(f"{what}: step {x['step']} {key} {x[key]} vs {y[key]}")
    wa, wb = load_safetensors(f"{a}/sae_weights.safetensors"), load_safetensors(f"{b}/sae_weights.safetensors")
    for k in wb:
        d = max(abs(p - q) for p, q in zip(wa[k], wb[k]))
        if len(wa[k]) != len(wb[k]) or d > weight_tol:
            fail(f"{what}: final {k} differs by {d}")


def main():
    os.makedirs(TMP, exist_ok=True)
    rng = random.Random(4)
    d_in, rows = 16, 512
    dirs = [[rng.gauss(0, 1) for _ in range(d_in)] for _ in range(24)]
    vals = []
    for _ in range(rows):
        x = [rng.gauss(0, 0.05) for _ in range(d_in)]
        for f in rng.sample(range(24), 3):
            a = rng.uniform(0.5, 2)
            x = [xi + a * di for xi, di in zip(x, dirs[f])]
        vals += x
    data = f"{TMP}/acts.npy"
    write_npy(data, (rows, d_in), vals)
    common = ["train", "--data", data, "--device", "cuda", "--k", 3, "--batch-size", 32, "--training-tokens", 32 * 12,
              "--dead-feature-window", 3, "--feature-sampling-window", 6, "--normalize-activations",
              "expected_average_only_in", "--n-batches-for-norm-estimate", 2, "--shuffle", "buffer",
              "--buffer-batches", 4, "--lr", 5e-3, "--seed", 3, "--d-sae", 149, "--no-report", "--overwrite"]
    one = f"{TMP}/one"
    run(1, *common, "--out", one)
    m = metrics(one)
    if max(x["sparsity/dead_features"] for x in m) == 0 or max(x["losses/auxiliary_reconstruction_loss"] for x in m) == 0:
        fail("no latent died or AuxK never ran; the test would not test AuxK")
    for np_ in (2, 3):
        out = f"{TMP}/np{np_}"
        log = run(np_, *common, "--out", out)
        if f"latent-sharded over {np_} ranks" not in log or log.count("saved the SAE") != 1:
            fail(f"np {np_}: not sharded, or not rank 0 alone saving:\n{log}")
        compare(out, one, f"cuda, {np_} ranks vs one process", 1e-6, 1e-5)
    print(f"--device cuda: R=2 and R=3 equal one process ({len(m)} steps, up to "
          f"{int(max(x['sparsity/dead_features'] for x in m))} dead latents)")

    # A cuda checkpoint set resumed on the CPU (the same files): CUDA-vs-CPU tolerance.
    cut = f"{TMP}/cut"
    run(2, *common, "--out", cut, "--checkpoint-every", 32 * 7, "--stop-after-steps", 7, expect=1)
    run(2, "train", "--resume", cut, "--device", "cpu")
    compare(cut, f"{TMP}/np2", "cuda R=2 stopped at step 7, resumed on the CPU", 1e-4, 1e-4)
    print("a cuda R=2 checkpoint resumes on the CPU at R=2")
    print("cli_sharded_cuda: ok")


main()
