"""Train a TopK SAE on activations streamed live from a model: no activation files on disk.

A small TransformerLens model built from a config (random weights, nothing downloaded) runs on
random token batches; one hook's activations go straight into topksae.Trainer, which mixes them as
sae_lens does (a shuffling buffer: a model's activations come in sequence order) and trains on a
worker thread while the model produces the next batch. The result is a sae_lens SAE directory.

    python examples/python/train_live.py [--out runs/live-example] [--device cpu|cuda]

Needs torch and transformer_lens (and sae_lens for the final check that sae_lens loads the SAE).
"""
import argparse

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import topksae


def activations(model, hook_name, layer, batch, steps, seed=0):
    """Yields [batch * n_ctx, d_model] float32 activations of `hook_name`, one forward pass each."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(steps):
            tokens = torch.randint(0, model.cfg.d_vocab, (batch, model.cfg.n_ctx), generator=gen)
            _, cache = model.run_with_cache(tokens, names_filter=hook_name, stop_at_layer=layer + 1)
            yield cache[hook_name].reshape(-1, model.cfg.d_model).float().contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/live-example")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--training-tokens", type=int, default=200_000)
    a = ap.parse_args()

    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16, n_heads=4, d_vocab=512,
                                  act_fn="gelu", seed=0, device="cpu")
    model = HookedTransformer(cfg)  # random weights
    hook_name, layer = "blocks.1.hook_resid_pre", 1

    trainer = topksae.Trainer(
        out=a.out, d_in=cfg.d_model, d_sae=512, k=16, device=a.device, overwrite=True,
        train_batch_size_tokens=1024, training_tokens=a.training_tokens, lr=1e-3,
        lr_scheduler_name="cosineannealing", lr_warm_up_steps=10, dead_feature_window=50,
        normalize_activations="expected_average_only_in", n_batches_for_norm_estimate=10,
        model_name="tiny-random-2l", hook_name=hook_name, context_size=cfg.n_ctx,
        buffer_batches=8)  # the mixing buffer: 8 batches of 1024 tokens
    # 32 sequences of 32 tokens per forward pass; enough passes for the run, its norm estimate and the buffer.
    passes = (a.training_tokens + 20 * 1024) // (32 * 32) + 1
    last = trainer.fit(activations(model, hook_name, layer, batch=32, steps=passes))
    print(f"trained {trainer.steps} steps: loss {last['losses/overall_loss']:.4f}, "
          f"L0 {last['metrics/l0']:.1f}, explained variance {last['metrics/explained_variance']:.3f}")

    # The directory is a sae_lens SAE: load it there, and encode with both.
    from sae_lens import SAE
    sae_lens_sae = SAE.load_from_disk(a.out, device="cpu")
    x = next(activations(model, hook_name, layer, batch=4, steps=1, seed=1))
    ours_values, ours_indices = topksae.load(a.out).encode(x)
    with torch.no_grad():
        theirs = sae_lens_sae.encode(x)  # dense [rows, d_sae]
    top = theirs.topk(16, dim=-1)
    same = bool((top.indices.sort(-1).values == ours_indices.long().sort(-1).values).all())
    err = float((top.values - ours_values).abs().max() / top.values.abs().max())
    print(f"sae_lens.SAE.load_from_disk({a.out!r}): d_sae {sae_lens_sae.cfg.d_sae}; top-k latents equal: {same}, "
          f"max relative value difference {err:.2e}")
    if not same or err > 1e-4:
        raise SystemExit("sae_lens and topksae disagree on the trained SAE")


if __name__ == "__main__":
    main()
