"""topksae.Trainer: train a TopK SAE on activations streamed live (python/src/live_run.h)."""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Optional

from . import _core


def _rows(batch):
    """[..., d_in] -> [rows, d_in] without copying (a view); 2-D inputs pass through untouched."""
    shape = getattr(batch, "shape", None)
    if shape is not None and len(shape) > 2 and hasattr(batch, "reshape"):
        return batch.reshape(-1, shape[-1])
    return batch


class Trainer:
    """Trains a TopK SAE (sae_lens 6.13.1 semantics) on batches you stream in.

        t = topksae.Trainer(out="runs/live", d_in=768, d_sae=24576, k=32,
                            training_tokens=50_000_000, lr=2e-4, hook_name="blocks.8.hook_resid_pre")
        for acts in my_activation_generator():   # each [rows, d_in] or [batch, seq, d_in], float32
            if not t.push(acts): break           # False once training_tokens are reached
        t.finish()                               # or simply t.fit(my_activation_generator())

    Config keys are the CLI's --config keys, with sae_lens names (d_in, d_sae, k, lr, adam_beta1,
    adam_beta2, lr_scheduler_name, lr_warm_up_steps, lr_decay_steps, lr_end, n_restart_cycles,
    dead_feature_window, feature_sampling_window, aux_loss_coefficient, decoder_init_norm,
    normalize_activations, n_batches_for_norm_estimate, apply_b_dec_to_input,
    rescale_acts_by_decoder_norm, train_batch_size_tokens (or batch_size), training_tokens, seed); model_name, hook_name,
    hook_head_index, dataset_path, context_size and prepend_bos go into cfg.json as metadata. An
    unknown key or a bad value raises ValueError.

    Rows go through sae_lens's mixing buffer (shuffle="buffer", buffer_batches * batch_size rows:
    fill, shuffle, serve half, keep the rest), as activations from a model come in sequence order;
    shuffle="none" trains on them in the order given. The steps run on a worker thread (the GIL is
    released), so your model's forward pass and the SAE's steps overlap; on device="cuda" the steps
    are queued ahead on the GPU. On device="cuda" with shuffle="buffer" the mixing buffer lives on
    the GPU: torch CUDA tensors go device to device into it (ordered after your stream's work through
    DLPack, without waiting for the host; rows on the GPU are not checked for NaN / Inf) and batches
    reach the steps device to device; a tensor on another GPU raises ValueError. Otherwise the mixing
    buffer is host memory (CUDA tensors are copied to it).

    `out` is what `topksae train --out` writes: the final sae_lens SAE directory (cfg.json,
    sae_weights.safetensors, sparsity.safetensors; sae_lens.SAE.load_from_disk loads it), run.json,
    metrics.jsonl (one line per step, sae_lens names), checkpoint/ (every checkpoint_every tokens,
    and on Ctrl-C) and report.html. Ctrl-C (KeyboardInterrupt) inside fit / push / step stops after
    the current step and writes a resumable checkpoint; Trainer.resume(out) continues the run
    (rows that were waiting in the mixing buffer are not in the checkpoint: a live stream cannot
    be re-read).
    """

    def __init__(self, out, d_in: int, d_sae: int, k: int, device: str = "cpu", *, precision: str = "fp32",
                 shuffle: str = "buffer", buffer_batches: int = 16, checkpoint_every: int = 0,
                 overwrite: bool = False, report: bool = True, **config: Any):
        """out: the output directory (refused if it exists, unless overwrite=True and it is a
        topksae run). device: "cpu" or "cuda". precision (cuda): "fp32", "tf32" or "bf16".
        checkpoint_every: tokens between checkpoints (0: only at the end and on Ctrl-C).
        **config: training config keys, sae_lens names (see the class docstring)."""
        cfg = dict(config, d_in=d_in, d_sae=d_sae, k=k)
        try:
            text = json.dumps(cfg)
        except TypeError as e:
            raise TypeError(f"Trainer config values must be JSON numbers, strings, booleans or None: {e}") from None
        self._run = _core.LiveRun.create(os.fspath(out), text, _device(device), precision, shuffle,
                                         int(buffer_batches), int(checkpoint_every), bool(overwrite), bool(report))

    @classmethod
    def resume(cls, out, device: str = "cpu", *, precision: str = "fp32", training_tokens: Optional[int] = None,
               checkpoint_every: int = 0, report: bool = True) -> "Trainer":
        """Continues the run in `out` from its checkpoint (written on Ctrl-C or every
        checkpoint_every tokens), on either device. training_tokens may change the run's length;
        everything else comes from out/run.json."""
        self = cls.__new__(cls)
        self._run = _core.LiveRun.resume(os.fspath(out), _device(device), precision, training_tokens,
                                         int(checkpoint_every), bool(report))
        return self

    # ---- feeding ----
    def push(self, batch) -> bool:
        """Queues rows ([rows, d_in] or [..., d_in], float32, C-contiguous; numpy or torch, cpu or
        cuda) and returns at once unless the queue is full. False once training is over
        (training_tokens reached): stop producing. A batch holding NaN or Inf raises ValueError
        (naming the row) and none of it is queued."""
        return self._guard(lambda: self._run.push(_rows(batch)))

    def step(self, batch) -> Optional[dict]:
        """Pushes `batch` and waits until every step it allows has run; returns the latest step's
        metrics (a dict with sae_lens names, plus "step"), or None while the mixing buffer is still
        filling. With shuffle="none" and batch_size rows per call this is exactly one step on
        `batch`. On cuda the metrics may lag a few steps behind (the GPU runs behind the host)."""
        def go():
            self._run.push(_rows(batch))
            self._run.wait_idle()
        self._guard(go)
        return self._run.last_metrics

    def fit(self, batches: Iterable, finish: bool = True) -> Optional[dict]:
        """Trains on every batch of an iterable (a list, or a generator over a model's activations)
        until it ends or training_tokens are reached; then, with finish=True, trains on what the
        mixing buffer holds and saves the SAE, the last checkpoint and the report. Returns the last
        step's metrics."""
        def go():
            for b in batches:
                if not self._run.push(_rows(b)):
                    break
            if finish:
                self._run.finish()
            else:
                self._run.wait_idle()
        self._guard(go)
        return self._run.last_metrics

    def finish(self) -> Optional[dict]:
        """Ends the stream: trains on what is left, saves the SAE to `out` (sae_lens directory), the
        last checkpoint (when checkpointing) and report.html. Returns the last step's metrics."""
        self._guard(self._run.finish)
        return self._run.last_metrics

    def _guard(self, fn):
        try:
            return fn()
        except KeyboardInterrupt:
            ckpt = self._run.interrupt()
            print(f"topksae: interrupted at step {self._run.steps}; checkpoint written to {ckpt}; continue with "
                  f"topksae.Trainer.resume({self._run.out!r})")
            raise

    # ---- state ----
    @property
    def metrics(self) -> Optional[dict]:
        """The latest step's metrics (sae_lens names), or None before the first step."""
        return self._run.last_metrics

    @property
    def steps(self) -> int:
        """Steps trained so far."""
        return self._run.steps

    @property
    def done(self) -> bool:
        """True once the run takes no more rows (training_tokens reached, stream finished, stopped)."""
        return self._run.training_done

    @property
    def config(self) -> dict:
        """The full training config (sae_lens names), defaults filled in."""
        return json.loads(self._run.config_json)

    @property
    def rows_taken(self) -> int:
        """After resume() (or a Ctrl-C): the rows of the stream the checkpoint's state consumed,
        the scaling-factor estimate's included. With shuffle="none", skipping this many rows of the
        stream before pushing continues the run exactly as if it had not stopped."""
        return self._run.checkpoint_rows_taken

    @property
    def out(self) -> str:
        return self._run.out

    def __repr__(self) -> str:
        c = self.config
        return (f"topksae.Trainer(out={self.out!r}, d_in={c['d_in']}, d_sae={c['d_sae']}, k={c['k']}, "
                f"steps={self.steps}, {self._run.describe})")


def _device(device) -> str:
    device = str(device)
    if device.startswith("cuda:"):
        if device != "cuda:0":
            raise ValueError(f"training runs on cuda:0 (the process's current device), got {device!r}")
        return "cuda"
    return device
