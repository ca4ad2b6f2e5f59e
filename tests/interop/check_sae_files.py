"""Interop checks 1 and 2: SAE directories move between topksae and sae_lens 6.13.1 and both compute
the same encode / decode on the same activations (fp32, max rel err <= 1e-5, top-k index sets equal).

1. topksae trains an SAE (Trainer, expected_average_only_in so the scaling factor is folded on save)
   and saves it; sae_lens SAE.load_from_disk loads it as a TopKSAE; outputs agree.
2. sae_lens creates random TopKSAEs (every normalize_activations mode, apply_b_dec_to_input on and
   off, non-zero biases) and saves them with save_model; topksae loads them; outputs agree."""
import json
import os

import numpy as np
import torch
from safetensors.numpy import load_file
from sae_lens import SAE, TopKSAE, TopKSAEConfig

from common import TOOL, Mismatch, expect_close, expect_equal, main, run


def activations(rng, B, d_in):
    # Not centred and not unit-scale, so that layer_norm / constant_norm_rescale / b_dec matter.
    return (rng.standard_normal((B, d_in)) * 2.5 + rng.standard_normal(d_in)).astype(np.float32)


def sae_lens_outputs(sae, x):
    """sae_lens's top-k sets (on the raw pre-activations), dense codes and forward output."""
    captured = {}
    h = sae.hook_sae_acts_pre.register_forward_hook(lambda m, i, o: captured.__setitem__("pre", o.detach()))
    with torch.no_grad():
        xt = torch.from_numpy(x)
        z = sae.encode(xt)
        xhat = sae(xt)
    h.remove()
    pre = captured["pre"]
    return pre.numpy(), z.numpy(), xhat.numpy()


def compare(d, sae_dir, sae, x, label):
    out = os.path.join(d, "ours.safetensors")
    run([TOOL, "encode", sae_dir, os.path.join(d, "x.npy"), out])
    ours = load_file(out)
    pre, z, xhat = sae_lens_outputs(sae, x)
    k = sae.cfg.k
    # Top-k index sets, row by row. A differing set is accepted only at a genuine tie (the k-th and
    # (k+1)-th pre-activations equal to 1e-6 of the row's scale); none is expected with random data.
    srt = np.sort(pre, axis=1)[:, ::-1]
    theirs_idx = np.argsort(-pre, axis=1, kind="stable")[:, :k]
    differ = [b for b in range(len(x)) if set(ours["indices"][b]) != set(theirs_idx[b])]
    for b in differ:
        gap = srt[b, k - 1] - srt[b, k]
        if gap > 1e-6 * np.abs(srt[b]).max():
            raise Mismatch(f"{label}: row {b}: top-k sets differ without a tie (gap {gap:.3e})")
    expect_equal(f"{label}: top-k index sets equal in {len(x) - len(differ)}/{len(x)} rows "
                 f"({len(differ)} exact ties)", len(differ) == 0, True)
    expect_close(f"{label}: encode (dense codes)", ours["z"], z)
    expect_close(f"{label}: forward / decode output", ours["xhat"], xhat)


def check_topksae_to_sae_lens(d):
    rng = np.random.default_rng(1)
    d_in, d_sae, k, B = 40, 300, 12, 64
    train_x = activations(rng, 64 * 30, d_in) * 4.0
    cfg = {"d_in": d_in, "d_sae": d_sae, "k": k, "lr": 3e-3, "batch_size": 64, "training_tokens": 64 * 25,
           "normalize_activations": "expected_average_only_in", "n_batches_for_norm_estimate": 5,
           "dead_feature_window": 3, "seed": 7}
    cfg_path = os.path.join(d, "train.json")
    json.dump(cfg, open(cfg_path, "w"))
    np.save(os.path.join(d, "train_x.npy"), train_x)
    sae_dir = os.path.join(d, "trained")
    print("  " + run([TOOL, "train-save", cfg_path, os.path.join(d, "train_x.npy"), sae_dir]).strip())
    sae = SAE.load_from_disk(sae_dir, device="cpu")
    if not isinstance(sae, TopKSAE) or sae.cfg.k != k or sae.cfg.d_sae != d_sae:
        raise Mismatch(f"load_from_disk gave {type(sae).__name__} with cfg {sae.cfg}")
    if sae.cfg.normalize_activations != "none":
        raise Mismatch(f"saved normalize_activations is {sae.cfg.normalize_activations}, want none (folded)")
    expect_equal("SAE.load_from_disk -> TopKSAE, k/d_sae/normalize as saved", True, True)
    x = activations(rng, B, d_in) * 4.0
    np.save(os.path.join(d, "x.npy"), x)
    compare(d, sae_dir, sae, x, "topksae-trained")


def check_sae_lens_to_topksae(d):
    rng = np.random.default_rng(2)
    torch.manual_seed(3)
    cases = [(mode, True) for mode in ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")]
    cases.append(("none", False))
    for mode, abd in cases:
        d_in, d_sae, k, B = 33, 257, 7, 50
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, normalize_activations=mode,
                                    apply_b_dec_to_input=abd, dtype="float32", device="cpu"))
        with torch.no_grad():  # sae_lens initialises both biases to zero; make them matter
            sae.b_enc.normal_(0.0, 0.05)
            sae.b_dec.normal_(0.0, 0.3)
        sae_dir = os.path.join(d, f"sae_{mode}_{abd}")
        sae.save_model(sae_dir)
        x = activations(rng, B, d_in)
        np.save(os.path.join(d, "x.npy"), x)
        loaded = SAE.load_from_disk(sae_dir, device="cpu")  # compare against what sae_lens reads back
        compare(d, sae_dir, loaded, x, f"sae_lens {mode}, apply_b_dec_to_input={abd}")


if __name__ == "__main__":
    main([("1: trained by topksae, loaded by sae_lens", check_topksae_to_sae_lens),
          ("2: created by sae_lens, loaded by topksae", check_sae_lens_to_topksae)])
