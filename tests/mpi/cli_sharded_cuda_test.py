"""`mpirun -np R topksae train --device cuda` end to end in the CUDA emulation's build (each rank
on its own emulated device, NCCL emulated over MPI: a CPU check of the logic, never a GPU run;
Python standard library only). Usage: cli_sharded_cuda_test.py TOPKSAE MPIEXEC TMPDIR

On npy activations through the mixing buffer, with the scaling factor on and AuxK active (checked),
one process on cuda, then R=2 and R=3 (uneven shards: 149 latents) on cuda: every step's metrics
agree (dead counts and L0 exactly, losses to 1e-6 relative) and so do the final SAE directories
(weights to 1e-5). Then the R=2 cuda run stopped after step 7 resumes on the CPU at R=2 (the
checkpoint files are the CPU sharded run's) and ends within the CUDA-vs-CPU tolerance of the
straight cuda run."""
import os
import sys

BIN, MPIEXEC, TMP = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cli_util import write_npy  # noqa: E402
from sharded_cli_util import BASE_ENV, compare, fail, feature_activations, metrics  # noqa: E402
import sharded_cli_util  # noqa: E402

ENV = dict(BASE_ENV, CUDA_EMU_DEVICES="3")


def run(np_, *args, expect=0):
    return sharded_cli_util.run(BIN, MPIEXEC, np_, *args, env=ENV, expect=expect)


def main():
    os.makedirs(TMP, exist_ok=True)
    d_in, rows = 16, 512
    vals = feature_activations(rows, d_in)
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
        compare(out, one, f"cuda, {np_} ranks vs one process", 1e-6, 1e-5, ev_absolute=True)
    print(f"--device cuda: R=2 and R=3 equal one process ({len(m)} steps, up to "
          f"{int(max(x['sparsity/dead_features'] for x in m))} dead latents)")

    # A cuda checkpoint set resumed on the CPU (the same files): CUDA-vs-CPU tolerance.
    cut = f"{TMP}/cut"
    run(2, *common, "--out", cut, "--checkpoint-every", 32 * 7, "--stop-after-steps", 7, expect=1)
    run(2, "train", "--resume", cut, "--device", "cpu")
    compare(cut, f"{TMP}/np2", "cuda R=2 stopped at step 7, resumed on the CPU", 1e-4, 1e-4, ev_absolute=True)
    print("a cuda R=2 checkpoint resumes on the CPU at R=2")
    print("cli_sharded_cuda: ok")


main()
