"""topksae.load / SAE: the same results as the `topksae` command, zero-copy inputs, clear errors."""
import numpy as np
import pytest

import topksae
from conftest import read_safetensors, run_cli


def test_encode_equals_the_cli_bit_for_bit(small_sae, tmp_path):
    sae_dir, x = small_sae
    np.save(tmp_path / "x.npy", x)
    run_cli("encode", "--sae", sae_dir, "--input", tmp_path / "x.npy", "--out", tmp_path / "f.safetensors",
            "--device", "cpu")
    ref = read_safetensors(tmp_path / "f.safetensors")
    sae = topksae.load(sae_dir)
    values, indices = sae.encode(x)
    assert isinstance(values, np.ndarray) and values.dtype == np.float32 and values.shape == (300, 6)
    assert indices.dtype == np.int32 and indices.shape == (300, 6)
    assert np.array_equal(indices, ref["indices"])
    assert values.tobytes() == ref["values"].tobytes()
    assert np.count_nonzero(values) > 300  # not an all-zero result


def test_decode_equals_the_cli_and_forward_is_decode_of_encode(small_sae, tmp_path):
    sae_dir, x = small_sae
    np.save(tmp_path / "x.npy", x)
    run_cli("encode", "--sae", sae_dir, "--input", tmp_path / "x.npy", "--out", tmp_path / "f.safetensors",
            "--device", "cpu")
    run_cli("decode", "--sae", sae_dir, "--input", tmp_path / "f.safetensors", "--out", tmp_path / "r.npy",
            "--device", "cpu")
    sae = topksae.load(sae_dir)
    values, indices = sae.encode(x)
    recon = sae.decode(values, indices)
    assert recon.shape == x.shape and np.abs(recon).max() > 0
    assert recon.tobytes() == np.load(tmp_path / "r.npy").tobytes()
    assert np.array_equal(sae.forward(x), recon)  # normalize_activations none: forward = decode(encode)


def test_numpy_input_is_not_copied(small_sae):
    sae_dir, x = small_sae
    assert topksae._core._input_address(x) == x.ctypes.data
    ro = x.copy()
    ro.flags.writeable = False  # read-only arrays are read in place too
    assert topksae._core._input_address(ro) == ro.ctypes.data
    assert topksae.load(sae_dir).encode(ro)[0].shape == (300, 6)


def test_torch_cpu_in_torch_out_not_copied(small_sae):
    torch = pytest.importorskip("torch")
    sae_dir, x = small_sae
    t = torch.from_numpy(x)
    assert topksae._core._input_address(t) == t.data_ptr()
    sae = topksae.load(sae_dir)
    values, indices = sae.encode(t)
    assert isinstance(values, torch.Tensor) and values.device.type == "cpu" and indices.dtype == torch.int32
    v_np, i_np = sae.encode(x)
    assert np.array_equal(values.numpy(), v_np) and np.array_equal(indices.numpy(), i_np)
    recon = sae.decode(values, indices)
    assert isinstance(recon, torch.Tensor) and torch.equal(recon, torch.from_numpy(sae.decode(v_np, i_np)))


def test_results_are_dlpack_capable(small_sae):
    sae_dir, x = small_sae
    values, _ = topksae.load(sae_dir).encode(x)
    assert hasattr(values, "__dlpack__")
    assert np.array_equal(np.from_dlpack(values), values)


def test_bad_inputs_raise_clear_errors(small_sae):
    sae_dir, x = small_sae
    sae = topksae.load(sae_dir)
    with pytest.raises(TypeError, match="float32, got float64"):
        sae.encode(x.astype(np.float64))
    with pytest.raises(TypeError, match="expected an array"):
        sae.encode([[0.0] * 24])
    with pytest.raises(ValueError, match="2-D"):
        sae.encode(x[0])
    with pytest.raises(ValueError, match="expected 24 columns"):
        sae.encode(np.zeros((3, 25), np.float32))
    with pytest.raises(ValueError, match="not C-contiguous"):
        sae.encode(np.zeros((3, 48), np.float32)[:, ::2])
    with pytest.raises(ValueError, match="not C-contiguous"):
        sae.encode(np.asfortranarray(np.ones((5, 24), np.float32)))
    values, indices = sae.encode(x)
    with pytest.raises(TypeError, match="int32, got int64"):
        sae.decode(values, indices.astype(np.int64))
    with pytest.raises(ValueError, match="same shape"):
        sae.decode(values[:5], indices)
    bad = indices.copy()
    bad[0, 0] = 96  # out of range latent: the engine refuses it
    with pytest.raises(ValueError):
        sae.decode(values, bad)
    with pytest.raises(ValueError, match="device must be"):
        topksae.load(sae_dir, device="tpu")
    with pytest.raises(RuntimeError):
        topksae.load(sae_dir.parent / "missing")


def test_cuda_load_without_a_gpu_says_why(small_sae):
    if topksae.cuda_available():
        pytest.skip("a GPU is usable here")
    with pytest.raises(ValueError, match="cuda"):
        topksae.load(small_sae[0], device="cuda")


def test_torch_cuda_tensors_stay_on_the_device(small_sae):
    torch = pytest.importorskip("torch")
    if not (topksae.cuda_available() and torch.cuda.is_available()):
        pytest.skip("needs a GPU and a CUDA build (TOPKSAE_CUDA=ON pip install .)")
    sae_dir, x = small_sae
    gpu = topksae.load(sae_dir, device="cuda")
    t = torch.from_numpy(x).cuda()
    assert topksae._core._input_address(t) == t.data_ptr()
    values, indices = gpu.encode(t)
    assert values.device.type == "cuda" and indices.device.type == "cuda"
    v_cpu, i_cpu = topksae.load(sae_dir).encode(x)
    assert np.array_equal(indices.cpu().numpy(), i_cpu)
    assert np.allclose(values.cpu().numpy(), v_cpu, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="loaded on the cpu"):
        topksae.load(sae_dir).encode(t)
