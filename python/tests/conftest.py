"""Shared helpers for the Python package's tests (run by tools/test.d/55-python.sh).

The `topksae` command the bit-for-bit comparisons run against is TOPKSAE_BIN, or build/tools/topksae;
the tests that need it skip without it (55-python.sh checks it exists first, so CI cannot skip them).
"""
import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def topksae_bin():
    p = Path(os.environ.get("TOPKSAE_BIN", ROOT / "build" / "tools" / "topksae"))
    if not p.exists():
        pytest.skip(f"the topksae command is not built ({p}); set TOPKSAE_BIN")
    return str(p)


def run_cli(*args):
    r = subprocess.run([topksae_bin(), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"topksae {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}"
    return r


def read_safetensors(path):
    """{name: numpy array} from a .safetensors file (little-endian, the dtypes our files use)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": np.float32, "F64": np.float64, "I32": np.int32, "I64": np.int64, "F16": np.float16}
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
    return out


def random_rows(n, d_in, seed, scale=1.0):
    """Tie-free float32 rows with a few strong directions, so training has something to find."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((4 * d_in, d_in)).astype(np.float32)
    codes = rng.random((n, 4 * d_in)) < 0.05
    x = codes.astype(np.float32) @ basis + 0.1 * rng.standard_normal((n, d_in)).astype(np.float32)
    return np.ascontiguousarray((scale * x).astype(np.float32))


@pytest.fixture(scope="session")
def small_sae(tmp_path_factory):
    """An SAE directory trained by topksae.Trainer (d_in 24, d_sae 96, k 6) and rows to encode."""
    import topksae

    out = tmp_path_factory.mktemp("sae") / "run"
    rows = random_rows(64 * 40, 24, seed=3)
    t = topksae.Trainer(out=out, d_in=24, d_sae=96, k=6, shuffle="none", batch_size=64, training_tokens=64 * 40,
                        lr=4e-3, seed=5, report=False)
    t.fit(np.split(rows, 40))
    x = random_rows(300, 24, seed=4)  # 300: not a multiple of any block size
    return out, x
