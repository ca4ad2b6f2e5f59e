"""Faults of `mpirun -np 2 topksae train` that are not a dead rank (Python standard library only;
cli_sharded_test.py covers SIGKILL). Usage: cli_faults_test.py TOPKSAE MPIEXEC TMPDIR

1. A stall: rank 1 is stopped (SIGSTOP) mid-run under --collective-timeout 2. MPI sees no error
   (the rank is alive), so only the collective watchdog can end the job: it must end within 15 s,
   non-zero, with the message naming the collective, the step and the timeout.
2. Ctrl-C: SIGINT to mpirun, the real user path (a terminal's Ctrl-C reaches mpirun alone: OpenMPI
   puts each rank in its own process group). mpirun sends the ranks SIGTERM after
   odls_base_sigkill_timeout seconds and SIGKILL as long again; the ranks agree to stop after the
   same step and write a complete checkpoint set at that step, which resumes bit-identical to a
   straight run (constant lr: the run's length does not change the steps).
3. SIGUSR1 to mpirun (the documented stop without mpirun's SIGKILL deadline, for large models):
   forwarded to the ranks, which stop after the same step, write the set and exit 130."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

BIN, MPIEXEC, TMP = sys.argv[1], sys.argv[2], sys.argv[3]
ENV = dict(os.environ, OMP_NUM_THREADS="1", TERM="dumb", OMPI_ALLOW_RUN_AS_ROOT="1",
           OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
SYN = ["train", "--synthetic", "--device", "cpu", "--d-in", 16, "--d-sae", 150, "--k", 3, "--batch-size", 32,
       "--lr-scheduler-name", "constant", "--lr-warm-up-steps", 0, "--dead-feature-window", 3, "--no-report",
       "--overwrite"]


def fail(msg):
    sys.exit("FAIL: " + msg)


def run(*args, expect_ok=True):
    cmd = [MPIEXEC, "-np", "2", BIN, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=240)
    if (p.returncode == 0) != expect_ok:
        fail(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stdout}{p.stderr}")


def start_long_run(out, *extra, env=ENV):
    """A 2-rank run of a million steps; returns the mpirun process once 12 steps are logged."""
    shutil.rmtree(out, ignore_errors=True)
    p = subprocess.Popen([MPIEXEC, "-np", "2", BIN, *map(str, SYN + ["--training-tokens", 32 * 1000000, "--out", out,
                                                                      *extra])],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(f"{out}/metrics.jsonl") and len(open(f"{out}/metrics.jsonl").readlines()) >= 12:
            return p
        if p.poll() is not None:
            fail(f"the run ended early:\n{p.stdout.read()}")
        time.sleep(0.05)
    p.kill()
    fail("the run logged no 12 steps within 120 s")


def rank_pid(p, rank):
    for pid in subprocess.run(["ps", "-o", "pid=", "--ppid", str(p.pid)], capture_output=True, text=True).stdout.split():
        try:
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                return int(pid)
        except OSError:
            pass
    p.kill()
    fail(f"could not find rank {rank} of the run")


def wait_end(p, seconds, what):
    t0 = time.time()
    try:
        log, _ = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        p.kill()
        fail(f"{what}: the job did not end within {seconds} s")
    return log, time.time() - t0


def load_weights(out):
    return open(f"{out}/sae_weights.safetensors", "rb").read()


def check_set(out, log, what):
    """The log reports one interrupt; the checkpoint set is complete at that step. Returns it."""
    words = log.split("interrupted at step ")
    if len(words) != 2 or "checkpoint written to" not in log:
        fail(f"{what}: rank 0 did not report the interrupt and its checkpoint once:\n{log}")
    step = int(words[1].split(";")[0])
    man = json.load(open(f"{out}/checkpoint/sharded.json"))
    if man["step"] != step or man["ranks"] != 2:
        fail(f"{what}: the checkpoint set is at step {man['step']} of {man['ranks']} ranks; interrupted at {step}")
    for part in man["parts"]:
        if not os.path.exists(f"{out}/checkpoint/{man['parts_dir']}/{part}"):
            fail(f"{what}: checkpoint part {part} is missing")
    logged = [json.loads(x)["step"] for x in open(f"{out}/metrics.jsonl")]
    if logged != list(range(step)):
        fail(f"{what}: metrics.jsonl holds steps {logged[:3]}..{logged[-3:]}, expected 0..{step - 1}")
    return step


def main():
    os.makedirs(TMP, exist_ok=True)
    bad = subprocess.run([BIN, *map(str, SYN), "--out", f"{TMP}/bad", "--collective-timeout", "-5"],
                         capture_output=True, text=True, env=ENV, timeout=60)
    if bad.returncode == 0 or "--collective-timeout -5: expected seconds >= 0" not in bad.stderr:
        fail(f"a negative --collective-timeout is not refused clearly: exit {bad.returncode}\n{bad.stderr}")

    # 1. A stalled rank.
    p = start_long_run(f"{TMP}/stall", "--collective-timeout", 2)
    victim = rank_pid(p, 1)
    os.kill(victim, signal.SIGSTOP)
    log, waited = wait_end(p, 15, "rank 1 stopped (SIGSTOP)")
    try:  # should mpirun have left it (it does not: SIGKILL ends a stopped process)
        os.kill(victim, signal.SIGCONT)
        os.kill(victim, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if p.returncode == 0:
        fail(f"the stalled run exited 0:\n{log}")
    if not re.search(r"error \(rank 0 of 2\): MPI (all_reduce_sum|all_gather) has not completed after 2 s, "
                     r"during training at step \d+", log):
        fail(f"no clear stall message from rank 0:\n{log}")
    if "--collective-timeout" not in log:
        fail(f"the stall message does not say how to change the limit:\n{log}")
    print(f"rank 1 SIGSTOPped: the job ended {waited:.1f} s later (timeout 2 s), exit {p.returncode}")

    # 2. Ctrl-C (SIGINT to mpirun). A 2 s grace between mpirun's SIGTERM and SIGKILL instead of
    # OpenMPI's 1 s, so a loaded CI machine finishes the step and the checkpoint in time.
    env = dict(ENV, OMPI_MCA_odls_base_sigkill_timeout="2")
    cut, straight = f"{TMP}/ctrl_c", f"{TMP}/ctrl_c_straight"
    p = start_long_run(cut, env=env)
    p.send_signal(signal.SIGINT)
    log, waited = wait_end(p, 40, "SIGINT to mpirun")
    if p.returncode == 0:
        fail(f"the interrupted run exited 0:\n{log}")
    step = check_set(cut, log, "Ctrl-C")
    total = 32 * (step + 6)
    run(*SYN, "--training-tokens", total, "--out", straight)
    run("train", "--resume", cut, "--training-tokens", total)
    if load_weights(cut) != load_weights(straight):
        fail("the run resumed after Ctrl-C is not bit-identical to the straight run")
    print(f"Ctrl-C of mpirun at step {step}: the job ended {waited:.1f} s later, exit {p.returncode}; "
          "the checkpoint set resumes exactly")

    # 3. SIGUSR1 to mpirun: no deadline, a normal exit.
    p = start_long_run(f"{TMP}/usr1")
    p.send_signal(signal.SIGUSR1)
    log, waited = wait_end(p, 40, "SIGUSR1 to mpirun")
    if p.returncode != 130:
        fail(f"the run stopped by SIGUSR1 exited {p.returncode}, expected 130:\n{log}")
    step = check_set(f"{TMP}/usr1", log, "SIGUSR1")
    print(f"SIGUSR1 to mpirun at step {step}: the job ended {waited:.1f} s later, exit 130, the set complete")
    print("cli_faults: ok")


main()
