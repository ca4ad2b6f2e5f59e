"""`mpirun -np R topksae train` end to end (Python standard library only). Usage:
cli_sharded_test.py TOPKSAE MPIEXEC TMPDIR

On npy activations through the mixing buffer, with the scaling factor on and AuxK active (a short
dead_feature_window and many latents for k=3, so latents die: checked), runs one process, R=2 and
R=3 (uneven shards: 150 = 50 * 3, 75 * 2; 3 ranks do not divide 149, the second config) and checks
that every step's metrics agree (dead counts and L0 exactly, losses to 1e-6 relative) and the
final SAE directories to 1e-5. Then: an R=2 run stopped at step 7 and resumed under R=2 ends
bit-identical to the straight R=2 run; resumed under R=3 (resharded) it equals the straight R=2
run as R=3 equals R=2 (metrics to 1e-6, weights to 1e-5); resuming it in one process is refused
with the reason; a set with a part removed is refused naming the part; `topksae info` describes it.
Last, rank 1 of a 3-rank run is SIGKILLed mid-run: the job must end within 60 s (OpenMPI's mpirun
ends the other ranks) and its last complete checkpoint set must resume exactly."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

BIN, MPIEXEC, TMP = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_util import write_npy  # noqa: E402
from sharded_cli_util import BASE_ENV as ENV, fail, feature_activations, load_safetensors, metrics  # noqa: E402
import sharded_cli_util  # noqa: E402


def run(np_, *args, expect=0):
    return sharded_cli_util.run(BIN, MPIEXEC, np_, *args, expect=expect)


def compare(a, b, what):
    sharded_cli_util.compare(a, b, what, sparsity=True)


def main():
    os.makedirs(TMP, exist_ok=True)
    d_in, rows = 16, 640
    vals = feature_activations(rows, d_in)
    data = f"{TMP}/acts.npy"
    write_npy(data, (rows, d_in), vals)
    common = ["train", "--data", data, "--device", "cpu", "--k", 3, "--batch-size", 32, "--training-tokens", 32 * 14,
              "--dead-feature-window", 3, "--feature-sampling-window", 6, "--normalize-activations",
              "expected_average_only_in", "--n-batches-for-norm-estimate", 2, "--shuffle", "buffer",
              "--buffer-batches", 4, "--lr", 5e-3, "--seed", 3, "--no-report", "--overwrite"]
    for d_sae in (150, 149):
        one = f"{TMP}/one_{d_sae}"
        run(1, *common, "--d-sae", d_sae, "--out", one)
        m = metrics(one)
        if max(x["sparsity/dead_features"] for x in m) == 0 or max(x["losses/auxiliary_reconstruction_loss"] for x in m) == 0:
            fail(f"d_sae {d_sae}: no latent died or AuxK never ran; the test would not test AuxK")
        for np_ in (2, 3):
            out = f"{TMP}/np{np_}_{d_sae}"
            log = run(np_, *common, "--d-sae", d_sae, "--out", out)
            if f"latent-sharded over {np_} ranks" not in log:
                fail(f"np {np_}: the run does not say it was sharded:\n{log}")
            if log.count("saved the SAE") != 1:
                fail(f"np {np_}: expected rank 0 alone to print:\n{log}")
            compare(out, one, f"d_sae {d_sae}, {np_} ranks vs one process")
        print(f"d_sae {d_sae}: R=2 and R=3 equal one process ({len(m)} steps, up to "
              f"{int(max(x['sparsity/dead_features'] for x in m))} dead latents)")

    # Exact resume at the same R; refusals.
    straight, cut = f"{TMP}/np2_150", f"{TMP}/cut"
    run(2, *common, "--d-sae", 150, "--out", cut, "--checkpoint-every", 32 * 4, "--stop-after-steps", 7, expect=1)
    info = run(1, "info", f"{cut}/checkpoint")
    if "sharded training checkpoint" not in info or "over 2 ranks), step 7" not in info:
        fail(f"topksae info on a sharded checkpoint:\n{info}")
    resharded = f"{TMP}/cut_r3"
    shutil.rmtree(resharded, ignore_errors=True)
    shutil.copytree(cut, resharded)
    run(3, "train", "--resume", resharded)
    compare(resharded, straight, "stopped at step 7 under 2 ranks, resumed under 3 (resharded) vs 2 ranks straight")
    log = run(1, "train", "--resume", cut, expect=1)
    if "is a latent-sharded set" not in log:
        fail(f"resume in one process not refused clearly:\n{log}")
    run(2, "train", "--resume", cut)
    wa, wb = load_safetensors(f"{cut}/sae_weights.safetensors"), load_safetensors(f"{straight}/sae_weights.safetensors")
    if wa != wb:
        fail("the resumed R=2 run is not bit-identical to the straight one")
    if [x["step"] for x in metrics(cut)] != list(range(14)):
        fail(f"steps logged after resume: {[x['step'] for x in metrics(cut)]}")
    run(2, *common, "--d-sae", 150, "--out", cut, "--checkpoint-every", 32 * 4, "--stop-after-steps", 5, expect=1)
    part = sorted(glob.glob(f"{cut}/checkpoint/step-*/rank-00001-of-00002.part"))[-1]
    os.remove(part)
    log = run(2, "train", "--resume", cut, expect=1)
    if f"checkpoint part {part} (rank 1 of 2) is missing" not in log:
        fail(f"a missing part is not refused by name:\n{log}")
    print("resume at the same R is exact, at another R resharded; one process, a missing part: refused")

    # --device cuda under mpirun where it cannot run (no CUDA, no GPU, no NCCL, fewer GPUs than
    # ranks): the run stops at once with the reason, never a hang or R unsharded copies. Where it
    # runs (a GPU per rank) it must succeed; nccl_emu_cli_sharded checks what it trains.
    log = run(2, *[("cuda" if a == "cpu" else a) for a in common], "--d-sae", 150, "--out", f"{TMP}/np2_cuda",
              expect=None)
    reasons = ("topksae was built without CUDA", "training on cuda: ",  # no CUDA build / no GPU
               "--device cuda: no usable CUDA device",  # a CUDA build on a machine without a GPU (CI)
               "needs NCCL", "start at most one rank per GPU")  # no NCCL engine; one GPU for 2 ranks
    if "latent-sharded over 2 ranks" in log and "saved the SAE" in log:
        print("mpirun --device cuda: trained (a GPU per rank here)")
    elif not any(r in log for r in reasons):
        fail(f"mpirun --device cuda not refused clearly:\n{log}")
    else:
        print("mpirun --device cuda: refused with the reason")

    # A rank killed (SIGKILL) mid-run: the launcher ends the others within a bounded time, and the
    # last complete checkpoint set resumes exactly (constant lr, so the run's length does not
    # change the schedule: the resumed run must equal a straight run of the same length).
    syn = ["train", "--synthetic", "--device", "cpu", "--d-in", 16, "--d-sae", 150, "--k", 3, "--batch-size", 32,
           "--lr-scheduler-name", "constant", "--lr-warm-up-steps", 0, "--dead-feature-window", 3, "--no-report",
           "--overwrite"]
    straight, killed = f"{TMP}/kill_straight", f"{TMP}/kill"
    shutil.rmtree(killed, ignore_errors=True)  # the wait below must not see an earlier run's log
    p = subprocess.Popen([MPIEXEC, "-np", "3", BIN, *map(str, syn + ["--training-tokens", 32 * 1000000,
                          "--checkpoint-every", 32 * 5, "--out", killed])],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(f"{killed}/metrics.jsonl") and len(open(f"{killed}/metrics.jsonl").readlines()) >= 12:
            break
        time.sleep(0.05)
    victim = None
    for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout.split():
        try:
            if b"OMPI_COMM_WORLD_RANK=1" in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                victim = int(pid)
        except OSError:
            pass
    if victim is None:
        p.kill()
        fail("could not find rank 1 of the run to kill")
    os.kill(victim, signal.SIGKILL)
    t_kill = time.time()
    try:
        log, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        fail("the other ranks did not end within 60 s of rank 1's SIGKILL")
    waited = time.time() - t_kill
    if p.returncode == 0:
        fail(f"the run with a killed rank exited 0:\n{log}")
    step = json.load(open(f"{killed}/checkpoint/sharded.json"))["step"]
    if step < 5 or step % 5:
        fail(f"the last complete checkpoint is at step {step}")
    # The run went on for a while after the 12th step before the kill landed: the straight run is
    # made as long as the resumed one (constant lr: the length does not change the steps).
    total = 32 * (step + 10)
    run(3, *syn, "--training-tokens", total, "--out", straight)
    run(3, "train", "--resume", killed, "--training-tokens", total)
    if load_safetensors(f"{killed}/sae_weights.safetensors") != load_safetensors(f"{straight}/sae_weights.safetensors"):
        fail("the run resumed after a SIGKILL is not bit-identical to the straight run")
    print(f"rank 1 SIGKILLed after step 12: the job ended {waited:.1f} s later; resumed from step {step}, exact")
    print("cli_sharded: ok")


main()
