"""Interop check 3: training steps of topksae (cpu::train_step) against sae_lens 6.13.1's own
SAETrainer._train_step (TopKTrainingSAE.training_forward_pass, backward, clip_grad_norm_(.., 1.0),
torch.optim.Adam, get_lr_scheduler, dead-latent bookkeeping), from identical weights and batches.
Dead latents are present from the first step (since_fired is preset on both sides), so AuxK runs.
Per step: the three losses, the gradient norm before clipping, the learning rate used, the number of
dead latents, the four clipped gradients and the four updated parameters must agree."""
import json
import os
import zlib

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer

from common import TOOL, Mismatch, expect_close, expect_equal, main, run

NAMES = ("W_enc", "b_enc", "W_dec", "b_dec")


def sae_lens_steps(cfg, params, X, since_fired, scaling):
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=cfg["d_in"], d_sae=cfg["d_sae"], k=cfg["k"], aux_loss_coefficient=cfg["aux_loss_coefficient"],
        apply_b_dec_to_input=cfg["apply_b_dec_to_input"], normalize_activations=cfg["normalize_activations"],
        dtype="float32", device="cpu"))
    with torch.no_grad():
        for n in NAMES:
            getattr(sae, n).copy_(torch.from_numpy(params[n]))
    S, B = X.shape[0], X.shape[1]
    tcfg = SAETrainerConfig(
        n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
        total_training_samples=cfg["training_tokens"], device="cpu", autocast=False, lr=cfg["lr"],
        lr_end=cfg["lr_end"] if cfg["lr_end"] is not None else cfg["lr"] / 10,
        lr_scheduler_name=cfg["lr_scheduler_name"], lr_warm_up_steps=cfg["lr_warm_up_steps"],
        adam_beta1=cfg["adam_beta1"], adam_beta2=cfg["adam_beta2"], lr_decay_steps=cfg["lr_decay_steps"],
        n_restart_cycles=cfg["n_restart_cycles"], train_batch_size_samples=B,
        dead_feature_window=cfg["dead_feature_window"], feature_sampling_window=cfg["feature_sampling_window"],
        logger=LoggingConfig(log_to_wandb=False))
    trainer = SAETrainer(tcfg, sae, data_provider=iter(()))
    trainer.n_forward_passes_since_fired = torch.from_numpy(since_fired.astype(np.float32))

    # Record what the step does between backward and the optimizer: the norm clip_grad_norm_ returns,
    # the clipped gradients and the learning rate Adam is about to use.
    rec = {}
    original_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *a, **kw):
        norm = original_clip(parameters, max_norm, *a, **kw)
        rec["grad_norm"] = float(norm)
        rec["grads"] = {n: getattr(sae, n).grad.detach().clone().numpy() for n in NAMES}
        rec["lr"] = trainer.optimizer.param_groups[0]["lr"]
        return norm

    torch.nn.utils.clip_grad_norm_ = recording_clip
    out = {k: [] for k in ("overall_loss", "mse_loss", "aux_loss", "grad_norm", "lr_used", "n_dead")}
    out.update({n: [] for n in NAMES}, **{"grad." + n: [] for n in NAMES})
    try:
        for s in range(S):
            out["n_dead"].append(int(trainer.dead_neurons.sum()))
            step = trainer._train_step(sae=sae, sae_in=torch.from_numpy(X[s]) * scaling)
            trainer.n_training_steps += 1  # as SAETrainer.fit does after each step
            trainer.n_training_samples += B
            out["overall_loss"].append(float(step.loss.detach()))
            out["mse_loss"].append(float(step.losses["mse_loss"]))
            out["aux_loss"].append(float(step.losses["auxiliary_reconstruction_loss"]))
            out["grad_norm"].append(rec["grad_norm"])
            out["lr_used"].append(rec["lr"])
            for n in NAMES:
                out["grad." + n].append(rec["grads"][n])
                out[n].append(getattr(sae, n).detach().clone().numpy())
    finally:
        torch.nn.utils.clip_grad_norm_ = original_clip
    return {k: np.array(v) for k, v in out.items()}


def case(name, *, S, B, d_in, d_sae, k, n_dead0, window, scaling=None, **sched):
    def fn(d):
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        torch.manual_seed(11)
        cfg = {"d_in": d_in, "d_sae": d_sae, "k": k, "lr": 2e-3, "adam_beta1": 0.9, "adam_beta2": 0.999,
               "lr_scheduler_name": "constant", "lr_warm_up_steps": 0, "lr_decay_steps": 0, "lr_end": None,
               "n_restart_cycles": 1, "batch_size": B, "training_tokens": B * S, "dead_feature_window": window,
               "feature_sampling_window": 2000, "aux_loss_coefficient": 1.0, "apply_b_dec_to_input": True,
               "normalize_activations": "expected_average_only_in" if scaling else "none"}
        cfg.update(sched)
        # sae_lens's own initialisation (kaiming, decoder rows at norm 0.1, W_enc = W_dec^T), then
        # non-zero biases so that their gradients and the b_dec term of AuxK matter.
        init = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu"))
        params = {n: getattr(init, n).detach().clone().numpy() for n in NAMES}
        params["b_enc"] = (rng.standard_normal(d_sae) * 0.02).astype(np.float32)
        params["b_dec"] = (rng.standard_normal(d_in) * 0.1).astype(np.float32)
        X = (rng.standard_normal((S, B, d_in)) * 0.7 + rng.standard_normal(d_in) * 0.3).astype(np.float32)
        since_fired = np.zeros(d_sae, dtype=np.int64)
        since_fired[rng.choice(d_sae, size=n_dead0, replace=False)] = window + 1  # dead from step one

        tensors = {"x": X, "since_fired": since_fired, **params}
        meta = {"config": json.dumps(cfg)}
        if scaling:
            meta["scaling_factor"] = repr(float(np.float32(scaling)))
        save_file(tensors, os.path.join(d, "in.safetensors"), metadata=meta)
        run([TOOL, "train-steps", os.path.join(d, "in.safetensors"), os.path.join(d, "out.safetensors")])
        ours = load_file(os.path.join(d, "out.safetensors"))
        theirs = sae_lens_steps(cfg, params, X, since_fired, float(np.float32(scaling)) if scaling else 1.0)

        if theirs["aux_loss"][0] <= 0 or theirs["n_dead"][0] != n_dead0:
            raise Mismatch(f"set-up: sae_lens saw {theirs['n_dead'][0]} dead latents and AuxK loss "
                           f"{theirs['aux_loss'][0]} at step 0; AuxK must run")
        for s in range(S):
            print(f"  step {s}: loss {theirs['overall_loss'][s]:.6g} (mse {theirs['mse_loss'][s]:.6g}, "
                  f"aux {theirs['aux_loss'][s]:.6g}), dead {theirs['n_dead'][s]}, lr {theirs['lr_used'][s]:.6g}")
        expect_equal("dead latents per step", ours["n_dead"], theirs["n_dead"])
        expect_close("learning rate per step", ours["lr_used"], theirs["lr_used"], tol=1e-9)
        for key in ("overall_loss", "mse_loss", "aux_loss", "grad_norm"):
            expect_close(f"{key} per step", ours[key], theirs[key])
        for s in range(S):
            for n in NAMES:
                expect_close(f"step {s}: clipped grad {n}", ours["grad." + n][s], theirs["grad." + n][s])
            for n in NAMES:
                expect_close(f"step {s}: {n} after Adam", ours[n][s], theirs[n][s])
    return fn


if __name__ == "__main__":
    main([
        ("3a: one step, half the latents dead", case("3a", S=1, B=24, d_in=20, d_sae=120, k=6, n_dead0=60, window=5)),
        ("3b: several steps, few dead (AuxK scale < 1), warm-up + cosine, scaling factor",
         case("3b", S=6, B=32, d_in=24, d_sae=150, k=5, n_dead0=4, window=1, scaling=1.7,
              lr_scheduler_name="cosineannealing", lr_warm_up_steps=2)),
        ("3c: several steps, window 1 (latents die and revive), linear decay to the end",
         case("3c", S=5, B=17, d_in=18, d_sae=97, k=4, n_dead0=30, window=1, lr_decay_steps=2, lr_end=5e-4)),
        ("3d: window 0 (dead: did not fire in the previous step)",
         case("3d", S=4, B=16, d_in=16, d_sae=90, k=4, n_dead0=20, window=0)),
    ])
