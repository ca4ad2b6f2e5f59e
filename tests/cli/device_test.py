#!/usr/bin/env python3
"""`topksae encode / decode / eval` with --device and --precision (Python standard library only).

usage: device_test.py TOPKSAE_BINARY refusals|cuda

refusals (everywhere): --precision tf32 / bf16 with --device cpu is refused with the reason (nothing
written); without a usable GPU, --device cuda is refused with the reason and --device auto
--precision bf16 runs on the CPU with a note.
cuda: encode (top-k and CSR), decode and eval on --device cuda agree with --device cpu (the same
indices, values within 1e-5), a CSR file decodes bit for bit as the top-k file on the GPU too, and
--precision tf32 / bf16 give distinct latents per row, mostly the CPU's, with values within the
precision's tolerance. Without a usable GPU it exits with 77, which ctest reports as a skip
(tests/cli_device.cmake): the comparison did not run. tools/cuda_emu_check.sh runs it against the
CUDA emulation, so CI runs the --device cuda paths too.
"""
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile

from cli_util import BIN, ENV, fail_unless, run, write_npy


def read_npy_f32(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<H", data[8:10])[0]
    body = data[10 + n:]
    return list(struct.unpack("<%df" % (len(body) // 4), body))


def read_safetensors(path):
    """{name: list of numbers} for I32 / I64 / F32 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        code = {"I32": "i", "I64": "q", "F32": "f"}[t["dtype"]]
        blob = data[8 + n + a:8 + n + b]
        out[name] = list(struct.unpack("<%d%s" % (len(blob) // struct.calcsize(code), code), blob))
    return out


def close(a, b, atol=1e-5, rtol=1e-5):
    return len(a) == len(b) and all(abs(x - y) <= atol + rtol * abs(y) for x, y in zip(a, b))


SKIP = 77  # ctest's SKIP_RETURN_CODE for cli_device_cuda
# Tolerances of a tf32 / bf16 encoder GEMM on a pre-activation (tests/precision_check.h).
PRECISION_TOL = {"tf32": (2e-2, 5e-3), "bf16": (5e-2, 2e-2)}


def no_gpu_refusal(p):
    return p.returncode == 1 and re.search(
        r"--device cuda: (no usable CUDA device|no CUDA device|topksae was built without CUDA)", p.stdout + p.stderr)


def check_reduced_precision(prec, got, ref, k):
    """got / ref: top-k files of --device cuda --precision prec and of --device cpu."""
    atol, rtol = PRECISION_TOL[prec]
    n = len(ref["indices"])
    fail_unless(len(got["indices"]) == n and len(got["values"]) == n, f"{prec}: {len(got['indices'])} pairs, want {n}")
    same = 0
    for r in range(n // k):
        gi, gv = got["indices"][r * k:(r + 1) * k], got["values"][r * k:(r + 1) * k]
        want = dict(zip(ref["indices"][r * k:(r + 1) * k], ref["values"][r * k:(r + 1) * k]))
        fail_unless(len(set(gi)) == k, f"{prec}: row {r} names a latent twice: {gi}")
        fail_unless(all(gv[i] >= gv[i + 1] for i in range(k - 1)), f"{prec}: row {r} not sorted: {gv}")
        for j, v in zip(gi, gv):
            if j in want:
                same += 1
                fail_unless(abs(v - want[j]) <= atol + rtol * abs(want[j]),
                            f"{prec}: row {r} latent {j}: {v} vs cpu {want[j]}")
            else:  # a near-tie swapped in: at most the CPU's k-th value plus the tolerance
                fail_unless(v <= min(want.values()) + 2 * (atol + rtol * abs(min(want.values()))),
                            f"{prec}: row {r} latent {j} ({v}) is not a near-tie of the cpu's top {k}")
    fail_unless(same >= 0.8 * n, f"{prec}: only {same} of {n} latents are the cpu's")
    fail_unless(any(v > 0 for v in got["values"]), f"{prec}: all values zero")


def main():
    part = sys.argv[2] if len(sys.argv) > 2 else ""
    if part not in ("refusals", "cuda"):
        sys.exit("usage: device_test.py TOPKSAE_BINARY refusals|cuda")
    tmp = tempfile.mkdtemp(prefix="topksae_device_")
    sae = f"{tmp}/sae"
    run("train", "--synthetic", "--d-in", 16, "--synthetic-features", 32, "--d-sae", 64, "--k", 4, "--batch-size", 64,
        "--lr-warm-up-steps", 5, "--training-tokens", 64 * 8, "--device", "cpu", "--out", sae)
    rng = random.Random(5)
    data = f"{tmp}/x.npy"
    write_npy(data, (300, 16), [rng.gauss(0, 1) for _ in range(300 * 16)])

    if part == "refusals":
        refusals(sae, data, tmp)
    else:
        cuda(sae, data, tmp)


def refusals(sae, data, tmp):
    # tf32 / bf16 are the GPU's: refused on --device cpu, before anything is written
    for cmd in (["encode", "--out", f"{tmp}/refused.safetensors"], ["eval"]):
        for prec in ("tf32", "bf16"):
            out = run(cmd[0], "--sae", sae, "--input", data, *cmd[1:], "--device", "cpu", "--precision", prec, expect=1)
            fail_unless(f"--precision {prec} applies to the GPU's encoder GEMM; --device cpu computes in fp32" in out,
                        f"{cmd[0]} --device cpu --precision {prec}: unclear error:\n{out}")
    fail_unless(not os.path.exists(f"{tmp}/refused.safetensors"), "a refused encode wrote its output")
    out = run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/p.safetensors", "--precision", "fp16", expect=None)
    fail_unless("fp16" in out and not os.path.exists(f"{tmp}/p.safetensors"), f"--precision fp16 was accepted:\n{out}")

    run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/cpu_topk.safetensors", "--device", "cpu")
    ref = read_safetensors(f"{tmp}/cpu_topk.safetensors")
    p = subprocess.run([BIN, "encode", "--sae", sae, "--input", data, "--out", f"{tmp}/gpu_topk.safetensors",
                        "--device", "cuda"], capture_output=True, text=True, env=ENV, timeout=240)
    if p.returncode == 0:
        print("ok (the refusals; a GPU is usable: cli_device_cuda compares the GPU's outputs)")
        return
    # no usable GPU: the reason, nothing written; auto runs on the CPU
    fail_unless(no_gpu_refusal(p), f"encode --device cuda without a GPU: unclear error (exit {p.returncode}):\n"
                f"{p.stdout + p.stderr}")
    fail_unless(not os.path.exists(f"{tmp}/gpu_topk.safetensors"), "a refused encode wrote its output")
    for cmd in (["decode", "--input", f"{tmp}/cpu_topk.safetensors", "--out", f"{tmp}/no.npy"],
                ["eval", "--input", data]):
        out = run(cmd[0], "--sae", sae, *cmd[1:], "--device", "cuda", expect=1)
        fail_unless("--device cuda: " in out and "not run" not in out, f"{cmd[0]} --device cuda: unclear:\n{out}")
    out = run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/auto.safetensors", "--precision", "bf16")
    fail_unless("--precision bf16 ignored" in out, f"auto --precision bf16 without a GPU: no note:\n{out}")
    fail_unless(read_safetensors(f"{tmp}/auto.safetensors") == ref, "encode --device auto differs from cpu")
    print("ok (no GPU: the refusals)")


def cuda(sae, data, tmp):
    p = subprocess.run([BIN, "encode", "--sae", sae, "--input", data, "--out", f"{tmp}/gpu_topk.safetensors",
                        "--device", "cuda"], capture_output=True, text=True, env=ENV, timeout=240)
    if p.returncode != 0:
        fail_unless(no_gpu_refusal(p), f"encode --device cuda failed (exit {p.returncode}):\n{p.stdout + p.stderr}")
        print("SKIPPED: no usable GPU, nothing compared (tools/cuda_emu_check.sh runs this against the CUDA emulation)")
        sys.exit(SKIP)

    # --device cpu: the reference
    run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/cpu_topk.safetensors", "--device", "cpu")
    run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/cpu_csr.safetensors", "--device", "cpu",
        "--format", "csr")
    run("decode", "--sae", sae, "--input", f"{tmp}/cpu_topk.safetensors", "--out", f"{tmp}/cpu_x.npy", "--device", "cpu")
    cpu_eval = json.loads(run("eval", "--sae", sae, "--input", data, "--json", "--device", "cpu"))
    ref = read_safetensors(f"{tmp}/cpu_topk.safetensors")
    fail_unless(len(ref["indices"]) == 300 * 4 and any(v > 0 for v in ref["values"]), "encode --device cpu is empty")

    got = read_safetensors(f"{tmp}/gpu_topk.safetensors")
    fail_unless(got["indices"] == ref["indices"], "encode --device cuda picks other latents than --device cpu")
    fail_unless(close(got["values"], ref["values"]), "encode --device cuda values differ from --device cpu")
    run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/gpu_csr.safetensors", "--device", "cuda",
        "--format", "csr")
    got, ref_csr = read_safetensors(f"{tmp}/gpu_csr.safetensors"), read_safetensors(f"{tmp}/cpu_csr.safetensors")
    fail_unless(got["indptr"] == ref_csr["indptr"] and got["indices"] == ref_csr["indices"] and
                close(got["values"], ref_csr["values"]), "encode --format csr --device cuda differs from cpu")
    run("decode", "--sae", sae, "--input", f"{tmp}/cpu_topk.safetensors", "--out", f"{tmp}/gpu_x.npy", "--device", "cuda")
    cpu_x = read_npy_f32(f"{tmp}/cpu_x.npy")
    fail_unless(len(cpu_x) == 300 * 16 and any(v != 0 for v in cpu_x), "decode --device cpu is empty")
    fail_unless(close(read_npy_f32(f"{tmp}/gpu_x.npy"), cpu_x), "decode on cuda differs")
    run("decode", "--sae", sae, "--input", f"{tmp}/cpu_csr.safetensors", "--out", f"{tmp}/gpu_y.npy", "--device", "cuda")
    with open(f"{tmp}/gpu_x.npy", "rb") as f, open(f"{tmp}/gpu_y.npy", "rb") as g:
        fail_unless(f.read() == g.read(), "decode --device cuda: top-k and CSR features decode differently")
    gpu_eval = json.loads(run("eval", "--sae", sae, "--input", data, "--json", "--device", "cuda"))
    fail_unless(cpu_eval["mse"] > 0 and cpu_eval["l0"] > 0, f"eval --device cpu: {cpu_eval}")
    for key in ("l0", "mse", "explained_variance", "cosine_similarity"):
        fail_unless(abs(gpu_eval[key] - cpu_eval[key]) <= 1e-5 + 1e-4 * abs(cpu_eval[key]),
                    f"eval {key}: cuda {gpu_eval[key]} vs cpu {cpu_eval[key]}")
    for prec in ("tf32", "bf16"):
        run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/{prec}.safetensors", "--device", "cuda",
            "--precision", prec)
        check_reduced_precision(prec, read_safetensors(f"{tmp}/{prec}.safetensors"), ref, 4)
    print("ok (GPU: encode / decode / eval on cuda match cpu; tf32 / bf16 within their tolerances)")


if __name__ == "__main__":
    main()
