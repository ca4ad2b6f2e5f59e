"""topksae: TopK sparse autoencoders, trained and served by a C++/CUDA engine.

The math and the files are sae_lens 6.13.1's (TopKSAE, TopKTrainingSAE; an SAE directory holds
cfg.json + sae_weights.safetensors). Arrays go in and out through DLPack: numpy arrays and torch
tensors (CPU or CUDA) are read in place, without the engine depending on any ML framework.

    sae = topksae.load("runs/gpt2-l8", device="cpu")     # an sae_lens SAE directory
    values, indices = sae.encode(x)                      # x [rows, d_in] float32 -> [rows, k] top-k pairs
    x_hat = sae.decode(values, indices)                  # [rows, d_in]

    t = topksae.Trainer(out="runs/live", d_in=768, d_sae=24576, k=32, training_tokens=10_000_000)
    t.fit(batches)                                       # any iterable of [rows, d_in] arrays

See help(topksae.SAE) and help(topksae.Trainer).
"""
from ._core import __version__, built_with_cuda, cuda_available, cuda_unavailable_reason
from ._core import SAE
from ._trainer import Trainer

__all__ = ["__version__", "load", "SAE", "Trainer", "built_with_cuda", "cuda_available", "cuda_unavailable_reason"]


def load(path, device: str = "cpu", precision: str = "fp32") -> SAE:
    """Loads an sae_lens SAE directory (cfg.json + sae_weights.safetensors) for inference.

    device: "cpu", "cuda" or "cuda:N" (needs a build with TOPKSAE_CUDA=ON and a GPU).
    precision: the GPU's encoder GEMM, "fp32" (matches the CPU and sae_lens to float rounding),
    "tf32" or "bf16" (faster, looser). Returns a topksae.SAE with encode / decode / forward.
    """
    device, device_id = _split_device(device)
    return SAE(str(path), device, precision, device_id)


def _split_device(device):
    device = str(device)
    if device.startswith("cuda:"):
        return "cuda", int(device[5:])
    return device, 0
