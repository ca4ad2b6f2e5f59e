"""topksae.Trainer: the same run as `topksae train` on the same rows, bit for bit; resume; Ctrl-C."""
import json
import os
import signal
import threading

import numpy as np
import pytest

import topksae
from conftest import random_rows, read_safetensors, run_cli

D_IN, B = 20, 32
# AuxK in play (d_sae large for the data, a short dead window) and the scaling factor estimated.
CONFIG = dict(d_in=D_IN, d_sae=160, k=4, train_batch_size_tokens=B, training_tokens=B * 30, lr=3e-3,
              lr_scheduler_name="cosineannealing", lr_warm_up_steps=3, dead_feature_window=4,
              feature_sampling_window=10, normalize_activations="expected_average_only_in",
              n_batches_for_norm_estimate=3, seed=7)
N_ROWS = B * 33  # 3 batches for the estimate, 30 training steps


def cli_run(tmp_path, rows, shuffle, extra=()):
    np.save(tmp_path / "rows.npy", rows)
    (tmp_path / "cfg.json").write_text(json.dumps(CONFIG))
    out = tmp_path / "cli"
    run_cli("train", "--data", tmp_path / "rows.npy", "--config", tmp_path / "cfg.json", "--out", out,
            "--shuffle", shuffle, "--device", "cpu", "--no-report", *extra)
    return out


def assert_same_run(a, b):
    for f in ["sae_weights.safetensors", "sparsity.safetensors"]:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert _math_metrics(a) == _math_metrics(b)


def _math_metrics(run_dir):
    """metrics.jsonl without the perf/ keys (timings such as the data-wait share), exact otherwise."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("perf/")} for r in rows]


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def rows():
    return random_rows(N_ROWS, D_IN, seed=11, scale=5.0)  # scale: the scaling factor is far from 1


def test_fit_equals_cli_train_shuffle_none(tmp_path, rows):
    cli = cli_run(tmp_path, rows, "none", ["--checkpoint-every", B * 10])
    cfg = dict(CONFIG)
    t = topksae.Trainer(out=tmp_path / "py", shuffle="none", checkpoint_every=B * 10, report=False, **cfg)
    batches = np.split(rows, 66)  # half batches: rows are rows, whatever the chunking
    last = t.fit(batches)
    assert_same_run(cli, tmp_path / "py")
    assert last["step"] == 29 and t.steps == 30 and t.done
    m = metrics(tmp_path / "py")
    assert len(m) == 30 and any(r["losses/auxiliary_reconstruction_loss"] > 0 for r in m)  # AuxK ran
    scaler = json.loads((tmp_path / "py" / "checkpoint" / "activation_scaler.json").read_text())
    assert abs(scaler["scaling_factor"] - 1) > 0.5  # estimated, and far from 1
    assert scaler == json.loads((cli / "checkpoint" / "activation_scaler.json").read_text())


def test_fit_with_the_mixing_buffer_equals_cli_train_shuffle_buffer(tmp_path, rows):
    cli = cli_run(tmp_path, rows, "buffer", ["--buffer-batches", 4])
    t = topksae.Trainer(out=tmp_path / "py", shuffle="buffer", buffer_batches=4, report=False, **CONFIG)
    t.fit(np.split(rows, 33))
    assert_same_run(cli, tmp_path / "py")
    # And the mixing changed the run: not the in-order one.
    t2 = topksae.Trainer(out=tmp_path / "py2", shuffle="none", report=False, **CONFIG)
    t2.fit([rows])
    assert (tmp_path / "py" / "sae_weights.safetensors").read_bytes() != \
           (tmp_path / "py2" / "sae_weights.safetensors").read_bytes()


def test_step_by_step_equals_fit_and_returns_sae_lens_metrics(tmp_path, rows):
    t = topksae.Trainer(out=tmp_path / "fit", shuffle="none", report=False, **CONFIG)
    t.fit([rows])
    s = topksae.Trainer(out=tmp_path / "step", shuffle="none", report=False, **CONFIG)
    for i in range(3):  # the scaling-factor estimate takes the first 3 batches
        assert s.step(rows[i * B:(i + 1) * B]) is None
    for i in range(3, 33):
        m = s.step(rows[i * B:(i + 1) * B])
        assert m["step"] == i - 3
        for key in ["losses/overall_loss", "losses/mse_loss", "losses/auxiliary_reconstruction_loss", "metrics/l0",
                    "metrics/explained_variance", "sparsity/dead_features", "details/current_learning_rate",
                    "details/n_training_samples"]:
            assert key in m
        assert m["details/n_training_samples"] == (i - 2) * B
    s.finish()
    assert_same_run(tmp_path / "fit", tmp_path / "step")


def test_run_directory_is_the_clis(tmp_path, rows):
    t = topksae.Trainer(out=tmp_path / "run", shuffle="none", hook_name="blocks.0.hook_resid_pre",
                        model_name="tiny", **CONFIG)
    t.fit([rows])
    out = tmp_path / "run"
    for f in ["cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "run.json", "metrics.jsonl",
              "report.html"]:
        assert (out / f).exists(), f
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == "blocks.0.hook_resid_pre" and cfg["metadata"]["model_name"] == "tiny"
    assert cfg["k"] == 4
    assert read_safetensors(out / "sae_weights.safetensors")["W_enc"].shape == (D_IN, 160)
    assert "<svg" in (out / "report.html").read_text()
    run_cli("info", out)


def test_batch_size_alias_and_null_metadata(tmp_path):
    """The config goes through the CLI's --config merge (src/train/run_dir.h): the sae_lens alias
    batch_size is not overridden by the default train_batch_size_tokens, and a runner key given as
    None is left out of cfg.json's metadata."""
    cfg = {k: v for k, v in CONFIG.items() if k != "train_batch_size_tokens"}
    t = topksae.Trainer(out=tmp_path / "a", batch_size=48, hook_head_index=None, hook_name="h", report=False, **cfg)
    assert t.config["train_batch_size_tokens"] == 48
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["data"] == {"source": "live", "shuffle": "buffer", "buffer_batches": 16}
    assert run["metadata"]["hook_name"] == '"h"' and "hook_head_index" not in run["metadata"]


def test_bad_config_and_out_raise(tmp_path, rows):
    with pytest.raises(ValueError, match="unknown key 'learning_rate'"):
        topksae.Trainer(out=tmp_path / "a", learning_rate=1e-3, **CONFIG)
    with pytest.raises(ValueError, match="lr_scheduler_name"):
        topksae.Trainer(out=tmp_path / "b", **dict(CONFIG, lr_scheduler_name="cosine"))
    with pytest.raises(ValueError, match="must not exceed d_sae"):
        topksae.Trainer(out=tmp_path / "c", **dict(CONFIG, k=500))
    with pytest.raises(ValueError, match="device must be"):
        topksae.Trainer(out=tmp_path / "d", device="tpu", **CONFIG)
    t = topksae.Trainer(out=tmp_path / "e", shuffle="none", **CONFIG)
    with pytest.raises(ValueError, match="expected 20 columns"):
        t.push(np.zeros((4, 21), np.float32))
    with pytest.raises(TypeError, match="float32"):
        t.push(np.zeros((4, 20), np.float64))
    bad = np.ones((4, 20), np.float32)
    bad[2, 7] = np.nan
    with pytest.raises(ValueError, match="batch row 2 holds nan in column 7"):
        t.push(bad)
    with pytest.raises(ValueError, match="exists"):
        topksae.Trainer(out=tmp_path / "e", **CONFIG)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(RuntimeError, match="does not look like a topksae output"):
        topksae.Trainer(out=tmp_path / "mine", overwrite=True, **CONFIG)
    assert (tmp_path / "mine" / "precious.txt").exists()


def test_keyboard_interrupt_checkpoints_and_resume_continues_exactly(tmp_path, rows):
    ref = topksae.Trainer(out=tmp_path / "ref", shuffle="none", report=False, **CONFIG)
    ref.fit([rows])

    def stream(stop_after):
        for i in range(33):
            if i == stop_after:
                raise KeyboardInterrupt  # Ctrl-C while the model produces the next batch
            yield rows[i * B:(i + 1) * B]

    t = topksae.Trainer(out=tmp_path / "run", shuffle="none", report=False, **CONFIG)
    with pytest.raises(KeyboardInterrupt):
        t.fit(stream(stop_after=17))
    assert (tmp_path / "run" / "checkpoint" / "trainer_state.json").exists()
    with pytest.raises(RuntimeError, match="interrupted"):
        t.finish()
    r = topksae.Trainer.resume(tmp_path / "run")
    assert 0 < r.steps <= 14 and r.rows_taken == (r.steps + 3) * B
    r.fit([rows[r.rows_taken:]])
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def test_sigint_while_the_engine_waits_leaves_a_resumable_checkpoint(tmp_path):
    cfg = dict(CONFIG, d_in=64, d_sae=4096, k=32, training_tokens=10**9, normalize_activations="none")
    x = random_rows(4 * B, 64, seed=1)
    t = topksae.Trainer(out=tmp_path / "run", shuffle="none", report=False, **cfg)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in range(10**6):  # pushing outruns the steps: push waits in C++ for room
                t.push(x)
    finally:
        timer.cancel()
    assert t.steps > 0
    state = json.loads((tmp_path / "run" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] >= t.steps - 1 > -1
    r = topksae.Trainer.resume(tmp_path / "run", training_tokens=(state["step"] + 2) * B)
    r.fit([x])
    assert r.steps == state["step"] + 2 and (tmp_path / "run" / "sae_weights.safetensors").exists()


def test_training_stops_taking_rows_when_done(tmp_path, rows):
    t = topksae.Trainer(out=tmp_path / "run", shuffle="none", report=False, **CONFIG)
    taken = [t.push(rows[i * B:(i + 1) * B]) for i in range(33)]
    t.finish()
    extra = topksae.Trainer(out=tmp_path / "run2", shuffle="none", report=False, **CONFIG)
    for i in range(33):
        extra.push(rows[i * B:(i + 1) * B])
    extra._run.wait_idle()
    assert extra.done and extra.push(rows[:B]) is False
    assert all(taken)


def test_torch_cpu_batches_train_like_numpy(tmp_path, rows):
    torch = pytest.importorskip("torch")
    a = topksae.Trainer(out=tmp_path / "np", shuffle="none", report=False, **CONFIG)
    a.fit([rows])
    b = topksae.Trainer(out=tmp_path / "torch", shuffle="none", report=False, **CONFIG)
    b.fit(torch.from_numpy(rows).reshape(33, B, D_IN))  # an iterable of [B, d_in] tensors
    assert_same_run(tmp_path / "np", tmp_path / "torch")


def _need_cuda_torch():
    torch = pytest.importorskip("torch")
    if not (topksae.cuda_available() and torch.cuda.is_available()):
        pytest.skip("needs a GPU, torch with CUDA and a CUDA build (TOPKSAE_CUDA=ON pip install .)")
    return torch


def test_cuda_tensors_train_like_host_rows(tmp_path, rows):
    """device="cuda", shuffle="buffer": torch CUDA tensors go device to device into the mixing buffer
    on the GPU and train as the same rows pushed from numpy (which are copied into that buffer)."""
    torch = _need_cuda_torch()
    a = topksae.Trainer(out=tmp_path / "np", device="cuda", buffer_batches=4, report=False, **CONFIG)
    a.fit([rows[i * B:(i + 1) * B] for i in range(33)])
    b = topksae.Trainer(out=tmp_path / "torch", device="cuda", buffer_batches=4, report=False, **CONFIG)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # a producer on its own stream: DLPack orders its work before ours
        x = torch.from_numpy(rows).to("cuda", non_blocking=True) * 1.0
        b.fit(x[i * B:(i + 1) * B] for i in range(33))
    assert a.steps == b.steps == 30
    wa, wb = (read_safetensors(tmp_path / d / "sae_weights.safetensors") for d in ("np", "torch"))
    for name in wa:
        np.testing.assert_allclose(wb[name], wa[name], rtol=1e-5, atol=1e-6, err_msg=name)
    ma, mb = _math_metrics(tmp_path / "np"), _math_metrics(tmp_path / "torch")
    assert [m["step"] for m in ma] == [m["step"] for m in mb]
    for x_, y_ in zip(ma, mb):
        assert x_["losses/mse_loss"] == pytest.approx(y_["losses/mse_loss"], rel=1e-5)


def test_cuda_tensor_on_another_gpu_raises(tmp_path):
    torch = _need_cuda_torch()
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    t = topksae.Trainer(out=tmp_path / "run", device="cuda", report=False, **CONFIG)
    with pytest.raises(ValueError, match="on cuda:1, but this Trainer trains on cuda:0"):
        t.push(torch.zeros(B, D_IN, device="cuda:1"))


def test_gpu_step_time_is_the_engines(tmp_path):
    """On a GPU: torch CUDA batches in, the step time within 5% of bench_train_step's (same call).
    tools/gpu_check.sh's python stage runs this with TOPKSAE_BENCH_STEP_MS set from the bench's
    tf32 data_on step at this shape. The batches take the device path (the mixing buffer on the
    GPU, device to device into the step's batch buffer). Not quite the same work: the bench keeps
    5% of the latents dead so AuxK runs in every step; a fresh run here has none dead (cheaper),
    and its batches are gathered from the mixing buffer (one device copy more)."""
    torch = _need_cuda_torch()
    bench_ms = os.environ.get("TOPKSAE_BENCH_STEP_MS")
    d_in, d_sae, k, b = 768, 24576, 32, 4096
    n = 60
    cfg = dict(d_in=d_in, d_sae=d_sae, k=k, train_batch_size_tokens=b, training_tokens=b * n, seed=1)
    t = topksae.Trainer(out=tmp_path / "gpu", device="cuda", precision="tf32", shuffle="buffer", buffer_batches=2,
                        report=False, **cfg)
    x = torch.randn(b, d_in, device="cuda")
    import time
    for _ in range(10):
        t.push(x)
    t._run.wait_idle()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n - 20):
        t.push(x)
    t._run.wait_idle()
    torch.cuda.synchronize()  # cudaDeviceSynchronize: the trainer's stream too
    ms = (time.perf_counter() - t0) * 1e3 / (n - 20)
    for _ in range(10):
        t.push(x)
    t.finish()
    assert t.steps == n
    print(f"python live step {ms:.3f} ms (bench_train_step {bench_ms} ms)")
    if bench_ms:
        assert ms <= 1.05 * float(bench_ms)


def test_step_with_the_mixing_buffer_waits_for_it_to_fill(tmp_path, rows):
    cfg = dict(CONFIG, normalize_activations="none")
    t = topksae.Trainer(out=tmp_path / "run", buffer_batches=4, report=False, **cfg)
    got = [t.step(rows[i * B:(i + 1) * B]) for i in range(6)]
    # 4 batches fill the buffer, which then serves half of it (2 steps) before taking more rows.
    assert got[:3] == [None, None, None] and got[3]["step"] == 1 and got[5]["step"] == 3


def test_readme_from_files_snippet(tmp_path, rows):
    np.save(tmp_path / "acts.npy", rows)
    acts = np.load(tmp_path / "acts.npy", mmap_mode="r")
    t = topksae.Trainer(out=tmp_path / "from-files", d_in=D_IN, d_sae=64, k=4, train_batch_size_tokens=B,
                        training_tokens=len(acts) // B * B, buffer_batches=4)
    last = t.fit(np.ascontiguousarray(acts[i:i + 100]) for i in range(0, len(acts), 100))
    assert last["step"] == len(acts) // B - 1 and np.isfinite(last["losses/overall_loss"])
    assert (tmp_path / "from-files" / "report.html").exists()
