#!/usr/bin/env python3
"""End-to-end tests of the `topksae` command (Python standard library only).

usage: cli_test.py TOPKSAE_BINARY CASE

Each case builds its inputs with struct (npy / safetensors written here, not by our own writers),
drives the binary, and checks what it wrote. Cases are small: seconds each on 2 cores.
"""
import json
import os
import random
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from xml.etree import ElementTree

from cli_util import BIN, ENV, fail_unless, run, write_npy

CASE = sys.argv[2]


def expect_error(fragment, *args):
    out = run(*args, expect=1)
    fail_unless(fragment in out, f"topksae {' '.join(map(str, args))}: error should mention {fragment!r}:\n{out}")
    fail_unless("unexpected error" not in out, f"not a clean error:\n{out}")


# ---- writers (independent of the engine's own) ------------------------------------------------

def write_safetensors(path, tensors):
    """tensors: {name: (shape, list of float32)}"""
    header, blobs, off = {}, [], 0
    for name, (shape, vals) in tensors.items():
        b = struct.pack("<%df" % len(vals), *vals)
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_npy_shape(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<H", data[8:10])[0]
    hdr = data[10:10 + n].decode()
    shape = hdr.split("'shape': (")[1].split(")")[0]
    return tuple(int(s) for s in shape.replace(",", " ").split())


def sparse_rows(n, d, seed, n_dirs=30):
    """n rows of width d: sparse non-negative combinations of n_dirs random directions."""
    rng = random.Random(seed)
    dirs = [[rng.gauss(0, 1) for _ in range(d)] for _ in range(n_dirs)]
    out = []
    for _ in range(n):
        v = [0.0] * d
        for j in rng.sample(range(n_dirs), 3):
            a = rng.uniform(0.5, 2.0)
            for i in range(d):
                v[i] += a * dirs[j][i]
        out.extend(v)
    return out


def make_shards(root, d=16, seed=0):
    """A directory of 3 shards (2-D npy, 3-D npy, safetensors with two tensors): 400 rows of d_in d."""
    os.makedirs(root)
    write_npy(f"{root}/a_000.npy", (150, d), sparse_rows(150, d, seed))
    write_npy(f"{root}/b_001.npy", (10, 15, d), sparse_rows(150, d, seed + 1))
    write_safetensors(f"{root}/c_002.safetensors",
                      {"acts": ((100, d), sparse_rows(100, d, seed + 2)), "tokens": ((4,), [1.0, 2.0, 3.0, 4.0])})
    return root


def metrics_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def ckpt_step(out):
    with open(f"{out}/checkpoint/trainer_state.json") as f:
        return json.load(f)["step"]


def same_file(a, b):
    with open(a, "rb") as f, open(b, "rb") as g:
        return f.read() == g.read()


def syn_args(**over):
    """A small synthetic run; keyword arguments replace flags (d_sae=40 -> --d-sae 40)."""
    flags = {"d_in": 16, "synthetic_features": 32, "d_sae": 64, "k": 4, "batch_size": 64, "lr_warm_up_steps": 5,
             "dead_feature_window": 10, "feature_sampling_window": 20}
    flags.update(over)
    return ["--synthetic"] + [x for k, v in flags.items() for x in ("--" + k.replace("_", "-"), v)]


SMALL_SYN = syn_args()
NPY_TRAIN = ["--tensor", "acts", "--d-sae", 48, "--k", 4, "--batch-size", 32, "--buffer-batches", 4,
             "--dead-feature-window", 10, "--feature-sampling-window", 20, "--lr", 1e-3]
SAE_LENS_KEYS = ["losses/overall_loss", "losses/mse_loss", "losses/auxiliary_reconstruction_loss", "metrics/l0",
                 "metrics/explained_variance", "sparsity/dead_features", "sparsity/mean_passes_since_fired",
                 "details/current_learning_rate", "details/n_training_samples"]


def check_readback(out, data, d_in):
    """`topksae info` and `topksae eval` read the SAE directory back."""
    info = run("info", out)
    fail_unless("SAE directory" in info and f"d_in={d_in}" in info, f"info does not describe {out}:\n{info}")
    ev = json.loads(run("eval", "--sae", out, "--input", data, "--tensor", "acts", "--json"))
    for k in ["l0", "l1", "mse", "explained_variance", "cosine_similarity", "l2_ratio", "relative_reconstruction_bias",
              "saelens_mse", "saelens_explained_variance_legacy", "feature_density_histogram"]:
        fail_unless(k in ev, f"eval --json lacks {k}: {ev}")
    fail_unless(ev["l0"] > 0 and ev["mse"] > 0 and ev["explained_variance"] is not None, f"eval metrics look empty: {ev}")
    fail_unless(sum(ev["feature_density_histogram"]["counts"]) == ev["d_sae"], "histogram does not count every latent")
    return ev


def case_synthetic_run(tmp):
    out = f"{tmp}/syn"
    log = run("train", *SMALL_SYN, "--training-tokens", 64 * 60, "--out", out)
    fail_unless("recovered" in log and "planted features" in log, f"no recovery summary printed:\n{log}")
    for f in ["cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "run.json", "metrics.jsonl", "report.html"]:
        fail_unless(os.path.exists(f"{out}/{f}"), f"{f} missing from {out}")
    lines = metrics_lines(f"{out}/metrics.jsonl")
    fail_unless([l["step"] for l in lines] == list(range(60)), "metrics.jsonl does not hold steps 0..59")
    for k in SAE_LENS_KEYS:
        fail_unless(k in lines[-1], f"metrics.jsonl lacks {k}")
    fail_unless(any("metrics/mean_log10_feature_sparsity" in l for l in lines), "no sparsity-window metrics logged")
    with open(f"{out}/report.html") as f:
        html = f.read()
    fail_unless(html.count("<svg") >= 5 and "Recovery of the planted features" in html, "report lacks charts/recovery")
    fail_unless("https://" not in html and "<script" not in html and "<link" not in html, "report is not self-contained")
    for svg in re.findall(r"<svg.*?</svg>", html, re.S):
        ElementTree.fromstring(svg)  # every chart is well-formed XML (a browser would show nothing otherwise)
    with open(f"{out}/cfg.json") as f:
        cfg = json.load(f)
    fail_unless(cfg["d_sae"] == 64 and cfg["k"] == 4 and cfg["normalize_activations"] == "none", f"cfg.json: {cfg}")
    data = f"{tmp}/syn_eval.npy"
    write_npy(data, (200, 16), sparse_rows(200, 16, 5))
    check_readback(out, data, 16)
    # the same command again refuses to overwrite, and --overwrite replaces
    expect_error("exists", "train", *SMALL_SYN, "--training-tokens", 64 * 8, "--out", out)
    run("train", *SMALL_SYN, "--training-tokens", 64 * 8, "--out", out, "--overwrite")
    fail_unless(len(metrics_lines(f"{out}/metrics.jsonl")) == 8, "--overwrite kept the old metrics log")
    # sae_lens takes dead_feature_window 0 (dead: did not fire in the previous step); so do we
    run("train", *syn_args(dead_feature_window=0), "--training-tokens", 64 * 8, "--out", f"{tmp}/w0")
    with open(f"{tmp}/w0/run.json") as f:
        fail_unless(json.load(f)["config"]["dead_feature_window"] == 0, "run.json lost dead_feature_window 0")
    lines = metrics_lines(f"{tmp}/w0/metrics.jsonl")
    fail_unless(lines[1]["sparsity/dead_features"] > 0, f"window 0: no latent dead after a step: {lines[1]}")
    expect_error("--k: expected a number", "train", *syn_args(k="four"), "--out", f"{tmp}/o12")


def case_npy_run(tmp):
    data = make_shards(f"{tmp}/shards")
    out = f"{tmp}/npy"
    cfgfile = f"{tmp}/cfg.json"
    with open(cfgfile, "w") as f:
        json.dump({"k": 6, "lr": 2e-3, "training_tokens": 32 * 12, "model_name": "gpt2", "hook_name": "blocks.0.hook_resid_pre"}, f)
    log = run("train", "--data", data, *NPY_TRAIN, "--config", cfgfile, "--out", out)
    fail_unless("3 npy/safetensors shards" in log, f"data not described:\n{log}")
    with open(f"{out}/cfg.json") as f:
        cfg = json.load(f)
    fail_unless(cfg["k"] == 4, "a flag must override the --config file (k)")
    fail_unless(cfg["d_in"] == 16 and cfg["d_sae"] == 48, f"cfg.json: {cfg}")
    fail_unless(cfg["metadata"].get("model_name") == "gpt2" and cfg["metadata"].get("hook_name") == "blocks.0.hook_resid_pre",
                f"metadata from --config not kept: {cfg['metadata']}")
    lines = metrics_lines(f"{out}/metrics.jsonl")
    fail_unless(len(lines) == 12, "training_tokens from --config not used")
    # the share of time the device waited for data: on the progress line, in every metrics line, in the report
    fail_unless(re.search(r"\| data wait \d+% \|", log), f"the progress line lacks the data-wait share:\n{log}")
    fail_unless(all(0 <= l["perf/data_wait_fraction"] <= 1 for l in lines), "metrics.jsonl lacks perf/data_wait_fraction")
    with open(f"{out}/report.html") as f:
        fail_unless("time the device waited for data" in f.read(), "the report lacks the data-wait share")
    check_readback(out, data, 16)
    # encode -> decode, top-k and CSR agree
    run("encode", "--sae", out, "--input", data, "--tensor", "acts", "--out", f"{tmp}/f.safetensors")
    run("encode", "--sae", out, "--input", data, "--tensor", "acts", "--out", f"{tmp}/c.safetensors", "--format", "csr")
    run("decode", "--sae", out, "--input", f"{tmp}/f.safetensors", "--out", f"{tmp}/x.npy")
    run("decode", "--sae", out, "--input", f"{tmp}/c.safetensors", "--out", f"{tmp}/y.npy")
    fail_unless(read_npy_shape(f"{tmp}/x.npy") == (400, 16), f"decode shape {read_npy_shape(f'{tmp}/x.npy')}")
    fail_unless(same_file(f"{tmp}/x.npy", f"{tmp}/y.npy"), "top-k and CSR features decode differently")
    with open(f"{tmp}/f.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    fail_unless(hdr["indices"]["dtype"] == "I32" and hdr["indices"]["shape"] == [400, 4], f"encode header {hdr}")
    fail_unless(hdr["__metadata__"]["d_sae"] == "48" and hdr["__metadata__"]["k"] == "4", f"encode metadata {hdr}")
    # --init continues from the trained weights
    run("train", "--data", data, *NPY_TRAIN, "--training-tokens", 64, "--init", out, "--out", f"{tmp}/init")
    fail_unless(os.path.exists(f"{tmp}/init/sae_weights.safetensors"), "--init run wrote nothing")


def case_arrow_run(tmp):
    """Training, eval and encode on a sae_lens-style activation cache (Arrow IPC streams in a
    `datasets` directory, written by tests/fixtures/make_fixtures.py): the hook column is found
    without --tensor, token_ids is passed over, rows come in state.json order."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
    import make_fixtures
    d, ctx = 16, 8
    data = f"{tmp}/cache"
    buffers = [sparse_rows(n * ctx, d, 10 + i) for i, n in enumerate((20, 15, 15))]
    make_fixtures.write_sae_lens_cache(data, buffers, ctx, d, hook="blocks.3.hook_resid_post")
    out = f"{tmp}/arrow"
    log = run("train", "--data", data, "--d-sae", 48, "--k", 4, "--batch-size", 32, "--buffer-batches", 4,
              "--dead-feature-window", 10, "--feature-sampling-window", 20, "--training-tokens", 32 * 12,
              "--out", out)
    fail_unless("3 arrow shards" in log and "column 'blocks.3.hook_resid_post'" in log and "400 rows of d_in 16" in log,
                f"data not described:\n{log}")
    fail_unless(len(metrics_lines(f"{out}/metrics.jsonl")) == 12, "not 12 steps")
    ev = json.loads(run("eval", "--sae", out, "--input", data, "--json"))
    fail_unless(ev["l0"] > 0 and ev["mse"] > 0, f"eval metrics look empty: {ev}")
    run("encode", "--sae", out, "--input", data, "--out", f"{tmp}/f.safetensors")
    with open(f"{tmp}/f.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
    fail_unless(hdr["indices"]["shape"] == [400, 4], f"encode header {hdr}")
    # One file of the cache, and the column chosen by name
    run("eval", "--sae", out, "--input", f"{data}/data-00001-of-00003.arrow", "--tensor", "blocks.3.hook_resid_post")
    expect_error("token_ids", "eval", "--sae", out, "--input", data, "--tensor", "token_ids")
    expect_error("no column named 'nope'", "train", "--data", data, "--tensor", "nope", "--out", f"{tmp}/o1")


def interrupted_equals_straight(tmp, name, args, steps, stop):
    # Byte-identical weights are a promise of the CPU trainer (its reductions have a fixed order);
    # pin the device so that a machine with a GPU (where auto picks cuda) tests the same promise.
    args = [*args, "--device", "cpu"]
    straight, broken = f"{tmp}/{name}_straight", f"{tmp}/{name}_broken"
    run("train", *args, "--out", straight)
    out = run("train", *args, "--out", broken, "--stop-after-steps", stop, expect=130)
    fail_unless("--resume" in out, f"the interruption message does not say how to resume:\n{out}")
    fail_unless(ckpt_step(broken) == stop, f"checkpoint at step {ckpt_step(broken)}, expected {stop}")
    out = run("train", "--resume", broken, "--device", "cpu")
    fail_unless(f"at step {stop}" in out, f"resume did not start at step {stop}:\n{out}")
    fail_unless(same_file(f"{straight}/sae_weights.safetensors", f"{broken}/sae_weights.safetensors"),
                f"{name}: interrupted + resumed weights differ from an uninterrupted run")
    steps_logged = [l["step"] for l in metrics_lines(f"{broken}/metrics.jsonl")]
    fail_unless(steps_logged == list(range(steps)), f"{name}: resumed metrics log steps {steps_logged}")


def case_resume_exact(tmp):
    interrupted_equals_straight(tmp, "syn", SMALL_SYN + ["--training-tokens", 64 * 30, "--checkpoint-every", 640],
                                30, 13)
    data = make_shards(f"{tmp}/shards")
    # 400 rows, batch 32, buffer 4 batches: the interruption falls mid-way through the mixing buffer
    interrupted_equals_straight(tmp, "npy", ["--data", data, *NPY_TRAIN, "--training-tokens", 32 * 12], 12, 7)


def case_resume_edges(tmp):
    # The mixing buffer's state across the places a resume could lose it.
    # --loop-data: 400 rows, batch 32, buffer 4 batches; at step 11 the reader is past row 400, so the
    # buffer holds rows of both epochs when the checkpoint is written.
    data = make_shards(f"{tmp}/shards")
    interrupted_equals_straight(tmp, "loop", ["--data", data, *NPY_TRAIN, "--loop-data", "--training-tokens", 32 * 20],
                                20, 11)
    # --skip-nonfinite: rows with NaN / Inf before and after the interruption are skipped; the resumed
    # run skips the same rows and mixes the same ones.
    nan = f"{tmp}/nan"
    os.makedirs(nan)
    d = 16
    vals = sparse_rows(400, d, 7)
    for r in (3, 40, 41, 150, 260, 261, 262, 399):
        vals[r * d + r % d] = float("nan") if r % 2 else float("inf")
    write_npy(f"{nan}/x.npy", (400, d), vals)
    interrupted_equals_straight(tmp, "skip", ["--data", nan, *NPY_TRAIN, "--skip-nonfinite", "--training-tokens", 32 * 12],
                                12, 6)


def case_sigint(tmp):
    out = f"{tmp}/long"
    # --device cpu: byte-identical resumes are the CPU trainer's promise (as in interrupted_equals_straight).
    # A constant learning rate: the run is resumed with another --training-tokens, and the synthetic
    # preset's cosine schedule depends on the run's length.
    syn = [*SMALL_SYN, "--lr-scheduler-name", "constant", "--device", "cpu"]
    args = [BIN, "train", *map(str, syn), "--training-tokens", str(64 * 1000000), "--out", out]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(f"{out}/metrics.jsonl") and len(metrics_lines(f"{out}/metrics.jsonl")) >= 3:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    log, _ = p.communicate(timeout=120)
    fail_unless(p.returncode == 130, f"Ctrl-C exit code {p.returncode}, expected 130:\n{log}")
    step = ckpt_step(out)
    fail_unless(step >= 3, f"checkpoint at step {step}")
    out2 = run("train", "--resume", out, "--training-tokens", 64 * (step + 4), "--device", "cpu")
    fail_unless(f"at step {step}" in out2, f"resume did not start at step {step}:\n{out2}")
    steps_logged = [l["step"] for l in metrics_lines(f"{out}/metrics.jsonl")]
    fail_unless(steps_logged == list(range(step + 4)), f"steps after resume: {steps_logged}")
    fail_unless(os.path.exists(f"{out}/sae_weights.safetensors"), "no final SAE after resume")
    # The checkpoint a real Ctrl-C wrote resumes exactly: the same weights, byte for byte, as a run of
    # step + 4 steps that was never interrupted.
    straight = f"{tmp}/long_straight"
    run("train", *syn, "--training-tokens", 64 * (step + 4), "--out", straight)
    fail_unless(same_file(f"{straight}/sae_weights.safetensors", f"{out}/sae_weights.safetensors"),
                f"Ctrl-C at step {step} + resume: weights differ from an uninterrupted run of {step + 4} steps")


def case_full_disk(tmp):
    out = f"{tmp}/disk"
    args = SMALL_SYN + ["--training-tokens", 64 * 20, "--checkpoint-every", 64 * 4]
    run("train", *args, "--out", out, "--stop-after-steps", 5, expect=130)
    fail_unless(ckpt_step(out) == 5, "no checkpoint at step 5")
    # Files may not grow past 7 KiB: cfg.json and the metrics log fit, sae_weights.safetensors
    # (~8.5 KiB here) does not, so the checkpoint at step 8 fails half-written; then the Ctrl-C
    # checkpoint at step 10 fails too, and the run exits with an error.
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (7 * 1024, 7 * 1024))
    log = run("train", "--resume", out, "--stop-after-steps", 10, expect=1, preexec=limit)
    fail_unless("previous checkpoint (step 5)" in log, f"the failed save does not say the old checkpoint is kept:\n{log}")
    fail_unless(ckpt_step(out) == 5, "the previous checkpoint was damaged by the failed save")
    ev = run("eval", "--sae", f"{out}/checkpoint", "--input", write_eval_npy(tmp), "--json")
    fail_unless(json.loads(ev)["tokens"] == 100, "the surviving checkpoint does not load")
    out2 = run("train", "--resume", out)
    fail_unless("at step 5" in out2, f"resume after the failed save:\n{out2}")


def write_eval_npy(tmp):
    p = f"{tmp}/eval16.npy"
    write_npy(p, (100, 16), sparse_rows(100, 16, 9))
    return p


def case_bad_inputs(tmp):
    d = 16
    good = make_shards(f"{tmp}/good")
    sae = f"{tmp}/sae"
    run("train", "--data", good, *NPY_TRAIN, "--training-tokens", 64, "--out", sae)
    # NaN row: refused with the file and row; --skip-nonfinite counts and skips
    nan = f"{tmp}/nan"
    os.makedirs(nan)
    vals = sparse_rows(100, d, 3)
    vals[37 * d + 5] = float("nan")
    vals[60 * d] = float("inf")
    write_npy(f"{nan}/x.npy", (100, d), vals)
    expect_error("x.npy row 37", "train", "--data", nan, *NPY_TRAIN, "--training-tokens", 64, "--out", f"{tmp}/o1")
    out = run("train", "--data", nan, *NPY_TRAIN, "--training-tokens", 64, "--out", f"{tmp}/o2", "--skip-nonfinite")
    fail_unless("skipped 2 rows" in out, f"skipped rows not reported:\n{out}")
    expect_error("x.npy row 37", "eval", "--sae", sae, "--input", nan)
    # shards of different d_in
    mixed = f"{tmp}/mixed"
    os.makedirs(mixed)
    write_npy(f"{mixed}/a.npy", (40, d), sparse_rows(40, d, 1))
    write_npy(f"{mixed}/b.npy", (40, d + 1), sparse_rows(40, d + 1, 1))
    expect_error("b.npy", "train", "--data", mixed, "--out", f"{tmp}/o3")
    # empty, unreadable, wrong kind
    os.makedirs(f"{tmp}/empty")
    expect_error("no *.npy, *.safetensors or *.arrow", "train", "--data", f"{tmp}/empty", "--out", f"{tmp}/o4")
    with open(f"{tmp}/junk.npy", "wb") as f:
        f.write(b"this is not numpy")
    expect_error("junk.npy", "train", "--data", f"{tmp}/junk.npy", "--out", f"{tmp}/o5")
    write_npy(f"{tmp}/ints.npy", (4, 4), list(range(16)), descr="<i4")
    expect_error("ints.npy", "eval", "--sae", sae, "--input", f"{tmp}/ints.npy")
    expect_error("no such file", "train", "--data", f"{tmp}/missing", "--out", f"{tmp}/o6")
    # the SAE and the data disagree
    write_npy(f"{tmp}/wide.npy", (10, d + 4), sparse_rows(10, d + 4, 1))
    expect_error("expects d_in 16", "eval", "--sae", sae, "--input", f"{tmp}/wide.npy")
    expect_error("expects d_in 16", "encode", "--sae", sae, "--input", f"{tmp}/wide.npy", "--out", f"{tmp}/f.st")
    expect_error("d_in", "train", "--data", f"{tmp}/wide.npy", "--init", sae, "--out", f"{tmp}/o7")
    # config errors
    expect_error("must not exceed d_sae", "train", *syn_args(k=100), "--out", f"{tmp}/o8")
    expect_error("decay from 0 to 0", "train", *SMALL_SYN, "--training-tokens", 64 * 20, "--lr-decay-steps", 5,
                 "--lr-end", 0, "--lr-scheduler-name", "cosineannealing", "--out", f"{tmp}/o9")
    with open(f"{tmp}/bad.json", "w") as f:
        f.write("{not json")
    expect_error("bad.json", "train", *SMALL_SYN, "--config", f"{tmp}/bad.json", "--out", f"{tmp}/o10")
    with open(f"{tmp}/unknown.json", "w") as f:
        json.dump({"k_typo": 3}, f)
    expect_error("k_typo", "train", *SMALL_SYN, "--config", f"{tmp}/unknown.json", "--out", f"{tmp}/o11")
    # --device cuda: without a usable GPU, the reason (and nothing written); with one, a normal run
    p = subprocess.run([BIN, "train", *map(str, SMALL_SYN), "--training-tokens", "640", "--device", "cuda", "--out",
                        f"{tmp}/o12"], capture_output=True, text=True, env=ENV, timeout=240)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        fail_unless(p.returncode == 1, f"--device cuda without a GPU: exit {p.returncode}, expected 1:\n{out}")
        fail_unless(re.search(r"--device cuda: (no usable CUDA device|no CUDA device|topksae was built without CUDA)", out),
                    f"--device cuda without a GPU: unclear error:\n{out}")
        fail_unless("unexpected error" not in out, f"not a clean error:\n{out}")
        fail_unless(not os.path.exists(f"{tmp}/o12"), "--device cuda failed but wrote an output directory")
    else:
        fail_unless("device cuda (fp32)" in out and os.path.exists(f"{tmp}/o12/sae_weights.safetensors"),
                    f"--device cuda with a GPU did not train on it:\n{out}")
    expect_error("--precision bf16 applies to the GPU", "train", *SMALL_SYN, "--device", "cpu", "--precision", "bf16",
                 "--out", f"{tmp}/o13")
    expect_error("no run.json", "train", "--resume", f"{tmp}/good")
    expect_error("--k cannot change on --resume", "train", "--resume", sae, "--k", 3)
    # --overwrite never deletes a directory that is not ours
    os.makedirs(f"{tmp}/precious")
    with open(f"{tmp}/precious/thesis.tex", "w") as f:
        f.write("x")
    expect_error("does not look like a topksae output", "train", *SMALL_SYN, "--out", f"{tmp}/precious", "--overwrite")
    fail_unless(os.path.exists(f"{tmp}/precious/thesis.tex"), "--overwrite deleted a foreign directory")
    # features of another SAE
    run("encode", "--sae", sae, "--input", good, "--tensor", "acts", "--out", f"{tmp}/f.safetensors")
    other = f"{tmp}/other"
    run("train", *syn_args(d_sae=40), "--training-tokens", 64 * 8, "--out", other)
    expect_error("d_sae", "decode", "--sae", other, "--input", f"{tmp}/f.safetensors", "--out", f"{tmp}/x.npy")


CASES = {n[5:]: f for n, f in globals().items() if n.startswith("case_")}

if __name__ == "__main__":
    if CASE not in CASES:
        sys.exit(f"unknown case {CASE}; one of {', '.join(CASES)}")
    tmp = tempfile.mkdtemp(prefix=f"topksae_cli_{CASE}_")
    try:
        CASES[CASE](tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"cli {CASE}: ok")
