#!/usr/bin/env python3
"""`topksae encode / decode / eval` with --device and --precision (Python standard library only).

usage: device_test.py TOPKSAE_BINARY

Everywhere: --precision tf32 / bf16 with --device cpu is refused with the reason (nothing written);
--device auto --precision bf16 on a machine without a GPU runs on the CPU with a note; --device cuda
without a usable GPU is refused with the reason. With a GPU: encode (top-k and CSR), decode and eval
on --device cuda agree with --device cpu (the same indices, values within 1e-5), and a CSR file
decodes bit for bit as the top-k file on the GPU too.
"""
import json
import os
import random
import re
import struct
import subprocess
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


def main():
    tmp = tempfile.mkdtemp(prefix="topksae_device_")
    sae = f"{tmp}/sae"
    run("train", "--synthetic", "--d-in", 16, "--synthetic-features", 32, "--d-sae", 64, "--k", 4, "--batch-size", 64,
        "--lr-warm-up-steps", 5, "--training-tokens", 64 * 8, "--device", "cpu", "--out", sae)
    rng = random.Random(5)
    data = f"{tmp}/x.npy"
    write_npy(data, (300, 16), [rng.gauss(0, 1) for _ in range(300 * 16)])

    # tf32 / bf16 are the GPU's: refused on --device cpu, before anything is written
    for cmd in (["encode", "--out", f"{tmp}/refused.safetensors"], ["eval"]):
        for prec in ("tf32", "bf16"):
            out = run(cmd[0], "--sae", sae, "--input", data, *cmd[1:], "--device", "cpu", "--precision", prec, expect=1)
            fail_unless(f"--precision {prec} applies to the GPU's encoder GEMM; --device cpu computes in fp32" in out,
                        f"{cmd[0]} --device cpu --precision {prec}: unclear error:\n{out}")
    fail_unless(not os.path.exists(f"{tmp}/refused.safetensors"), "a refused encode wrote its output")
    out = run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/p.safetensors", "--precision", "fp16", expect=None)
    fail_unless("fp16" in out and not os.path.exists(f"{tmp}/p.safetensors"), f"--precision fp16 was accepted:\n{out}")

    # --device cpu: the reference
    run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/cpu_topk.safetensors", "--device", "cpu")
    run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/cpu_csr.safetensors", "--device", "cpu",
        "--format", "csr")
    run("decode", "--sae", sae, "--input", f"{tmp}/cpu_topk.safetensors", "--out", f"{tmp}/cpu_x.npy", "--device", "cpu")
    cpu_eval = json.loads(run("eval", "--sae", sae, "--input", data, "--json", "--device", "cpu"))
    ref = read_safetensors(f"{tmp}/cpu_topk.safetensors")
    fail_unless(len(ref["indices"]) == 300 * 4 and any(v > 0 for v in ref["values"]), "encode --device cpu is empty")

    p = subprocess.run([BIN, "encode", "--sae", sae, "--input", data, "--out", f"{tmp}/gpu_topk.safetensors",
                        "--device", "cuda"], capture_output=True, text=True, env=ENV, timeout=240)
    out = p.stdout + p.stderr
    if p.returncode != 0:  # no usable GPU: the reason, nothing written; auto runs on the CPU
        fail_unless(p.returncode == 1 and re.search(
            r"--device cuda: (no usable CUDA device|no CUDA device|topksae was built without CUDA)", out),
            f"encode --device cuda without a GPU: unclear error (exit {p.returncode}):\n{out}")
        fail_unless(not os.path.exists(f"{tmp}/gpu_topk.safetensors"), "a refused encode wrote its output")
        for cmd in (["decode", "--input", f"{tmp}/cpu_topk.safetensors", "--out", f"{tmp}/no.npy"],
                    ["eval", "--input", data]):
            out = run(cmd[0], "--sae", sae, *cmd[1:], "--device", "cuda", expect=1)
            fail_unless("--device cuda: " in out and "not run" not in out, f"{cmd[0]} --device cuda: unclear:\n{out}")
        out = run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/auto.safetensors", "--precision", "bf16")
        fail_unless("--precision bf16 ignored" in out, f"auto --precision bf16 without a GPU: no note:\n{out}")
        fail_unless(read_safetensors(f"{tmp}/auto.safetensors") == ref, "encode --device auto differs from cpu")
        print("ok (no GPU: the refusals; the GPU comparison skipped)")
        return

    got = read_safetensors(f"{tmp}/gpu_topk.safetensors")
    fail_unless(got["indices"] == ref["indices"], "encode --device cuda picks other latents than --device cpu")
    fail_unless(close(got["values"], ref["values"]), "encode --device cuda values differ from --device cpu")
    run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/gpu_csr.safetensors", "--device", "cuda",
        "--format", "csr")
    got, ref_csr = read_safetensors(f"{tmp}/gpu_csr.safetensors"), read_safetensors(f"{tmp}/cpu_csr.safetensors")
    fail_unless(got["indptr"] == ref_csr["indptr"] and got["indices"] == ref_csr["indices"] and
                close(got["values"], ref_csr["values"]), "encode --format csr --device cuda differs from cpu")
    run("decode", "--sae", sae, "--input", f"{tmp}/cpu_topk.safetensors", "--out", f"{tmp}/gpu_x.npy", "--device", "cuda")
    fail_unless(close(read_npy_f32(f"{tmp}/gpu_x.npy"), read_npy_f32(f"{tmp}/cpu_x.npy")), "decode on cuda differs")
    run("decode", "--sae", sae, "--input", f"{tmp}/cpu_csr.safetensors", "--out", f"{tmp}/gpu_y.npy", "--device", "cuda")
    with open(f"{tmp}/gpu_x.npy", "rb") as f, open(f"{tmp}/gpu_y.npy", "rb") as g:
        fail_unless(f.read() == g.read(), "decode --device cuda: top-k and CSR features decode differently")
    gpu_eval = json.loads(run("eval", "--sae", sae, "--input", data, "--json", "--device", "cuda"))
    for key in ("l0", "mse", "explained_variance", "cosine_similarity"):
        fail_unless(abs(gpu_eval[key] - cpu_eval[key]) <= 1e-5 + 1e-4 * abs(cpu_eval[key]),
                    f"eval {key}: cuda {gpu_eval[key]} vs cpu {cpu_eval[key]}")
    for prec in ("tf32", "bf16"):
        run("encode", "--sae", sae, "--input", data, "--out", f"{tmp}/{prec}.safetensors", "--device", "cuda",
            "--precision", prec)
    print("ok (GPU: encode / decode / eval on cuda match cpu)")


if __name__ == "__main__":
    main()
