"""CPU peer benchmark: topksae's CPU backend against sae_lens 6.13.1 on torch (CPU), in one run,
on the same cores.

Usage (tools/cpu_peer_bench.sh wraps it):
  python bench/cpu_peers.py [--build build] [--threads 2] [--iters 5]
                            [--shape d_in,d_sae,k,batch ...] [--out FILE.md] [--json FILE.json]

Both sides run with the same number of threads (torch.set_num_threads and OMP_NUM_THREADS for the
topksae bench binaries). Per shape, three rows:
  * encode + top-k: topksae `cpu::encode_topk` (bench_encode's cpu_twin_encode_topk_fp32: subtract
    b_dec, oneDNN GEMM + b_enc, top-k, ReLU) against sae_lens `TopKSAE.encode` (the same math with a
    dense [B, d_sae] result) and bare torch `topk(x @ W_enc + b_enc)`.
  * decode: topksae's gather decode of top-k pairs (bench_decode's cpu_twin_topk) against sae_lens
    `TopKSAE.decode` of the dense activations (what sae_lens does: a dense matmul).
  * train step with AuxK active: topksae `cpu::train_step` (bench_train_step's
    cpu_twin_train_step_fp32: ~5% dead latents, biased -2 so AuxK runs in every step) against
    sae_lens's own `SAETrainer._train_step` on a `TopKTrainingSAE` (forward with AuxK, backward,
    clip_grad_norm_, Adam, LR scheduler, firing bookkeeping), with the same ~5% dead latents,
    biased the same way and re-marked dead before each step so AuxK runs in every timed step.
Times are medians over --iters runs after a warm-up (the topksae benches report medians too).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def median_ms(fn, warmup, iters, before=None):
    for _ in range(warmup):
        if before:
            before()
        fn()
    ts = []
    for _ in range(iters):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


# ---------------------------------------------------------------- topksae (the bench binaries)
def topksae_ms(build, binary, variant, shape, iters, threads):
    d, n, k, b = shape
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        cmd = [os.path.join(build, "bench", binary), "--cpu", "--no-gpu", "--shape", f"{d},{n},{k},{b}",
               "--iters", str(iters), "--warmup", "1", "--json", out]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
        j = json.load(open(out))
    rows = [r for r in j["results"] if r.get("variant") == variant]
    if not rows or "ms" not in rows[0]:
        raise RuntimeError(f"{binary}: no timed row {variant}: {rows}")
    return rows[0]["ms"], j.get("cpu_gemm", "?")


# ---------------------------------------------------------------- sae_lens 6.13.1 on torch CPU
def dead_mask(n):
    g = torch.Generator().manual_seed(7)
    return torch.rand(n, generator=g) < 0.05  # ~5% dead, as bench_train_step


def saelens_encode_decode(shape, warmup, iters):
    from sae_lens import TopKSAE, TopKSAEConfig
    d, n, k, b = shape
    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=n, k=k, dtype="float32", device="cpu"))
    x = torch.randn(b, d)
    with torch.no_grad():
        enc, _ = median_ms(lambda: sae.encode(x), warmup, iters)
        W, bias = sae.W_enc.detach(), sae.b_enc.detach()
        raw, _ = median_ms(lambda: torch.topk(x @ W + bias, k, dim=-1), warmup, iters)
        acts = sae.encode(x)
        dec, _ = median_ms(lambda: sae.decode(acts), warmup, iters)
    return enc, raw, dec


def saelens_train_step(shape, warmup, iters):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer
    d, n, k, b = shape
    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=n, k=k, aux_loss_coefficient=1.0,
                                                dtype="float32", device="cpu"))
    dead = dead_mask(n)
    with torch.no_grad():
        sae.b_enc[dead] = -2.0  # as bench_train_step: the dead stay out of the main top-k
    window = 1000
    tcfg = SAETrainerConfig(
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False, total_training_samples=b * 1000000,
        device="cpu", autocast=False, lr=3e-4, lr_end=3e-5, lr_scheduler_name="constant", lr_warm_up_steps=0,
        adam_beta1=0.9, adam_beta2=0.999, lr_decay_steps=0, n_restart_cycles=1, train_batch_size_samples=b,
        dead_feature_window=window, feature_sampling_window=2000, logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(tcfg, sae, data_provider=iter(()))
    xs = [torch.randn(b, d), torch.randn(b, d)]
    state = {"i": 0, "aux": []}

    def mark_dead():  # AuxK in every step: the dead latents stay dead
        trainer.n_forward_passes_since_fired[dead] = window + 1

    def step():
        out = trainer._train_step(sae=sae, sae_in=xs[state["i"] % 2])
        state["i"] += 1
        state["aux"].append(float(out.losses["auxiliary_reconstruction_loss"]))

    ms, _ = median_ms(step, warmup, iters, before=mark_dead)
    if min(state["aux"]) <= 0:
        raise RuntimeError("sae_lens: AuxK did not run in every step")
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--shape", action="append", default=[])
    ap.add_argument("--out", default="")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    shapes = [tuple(int(v) for v in s.split(",")) for s in a.shape] or [(512, 8192, 32, 1024), (768, 24576, 32, 4096)]
    torch.set_num_threads(a.threads)
    import sae_lens
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except Exception:
        pass
    rows, gemm = [], "?"
    for sh in shapes:
        d, n, k, b = sh
        name = f"{d}x{n} k={k} B={b}"
        it_big = max(2, a.iters // 2) if d * n * b > (1 << 33) else a.iters
        print(f"== {name}", flush=True)
        enc_ours, gemm = topksae_ms(a.build, "bench_encode", "cpu_twin_encode_topk_fp32", sh, it_big, a.threads)
        enc_sl, enc_raw, dec_sl = saelens_encode_decode(sh, 1, it_big)
        dec_ours, _ = topksae_ms(a.build, "bench_decode", "cpu_twin_topk", sh, a.iters, a.threads)
        # bench_train_step times min(iters, 3) steps (a step at these shapes takes seconds).
        step_ours, _ = topksae_ms(a.build, "bench_train_step", "cpu_twin_train_step_fp32", sh, 3, a.threads)
        step_sl = saelens_train_step(sh, 1, 3)
        for what, ours, peer, peer_name in [
            ("encode + top-k", enc_ours, enc_sl, "sae_lens TopKSAE.encode"),
            ("encode + top-k", enc_ours, enc_raw, "torch topk(x @ W_enc + b_enc)"),
            ("decode", dec_ours, dec_sl, "sae_lens TopKSAE.decode (dense)"),
            ("train step, AuxK active", step_ours, step_sl, "sae_lens SAETrainer._train_step"),
        ]:
            r = {"shape": name, "what": what, "topksae_ms": ours, "peer": peer_name, "peer_ms": peer,
                 "speedup": peer / ours}
            rows.append(r)
            print(json.dumps(r), flush=True)
    head = (f"CPU peers, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu}, "
            f"{os.cpu_count()} cores, {a.threads} threads on both sides (torch.set_num_threads({a.threads}), "
            f"OMP_NUM_THREADS={a.threads}); torch {torch.__version__}, sae_lens {sae_lens.__version__}; "
            f"topksae CPU GEMM: {gemm}")
    lines = [head, "", "| shape | what | topksae CPU | peer | peer ms | topksae faster by |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['what']} | {r['topksae_ms']:.1f} ms | {r['peer']} | {r['peer_ms']:.1f} ms "
                     f"| {r['speedup']:.2f}x |")
    table = "\n".join(lines)
    print("\n" + table)
    if a.out:
        with open(a.out, "w") as f:
            f.write(table + "\n")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": head, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
