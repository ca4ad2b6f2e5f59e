"""The package itself: version, stubs, docstrings."""
import re
from pathlib import Path

import topksae
from conftest import ROOT


def test_version_is_the_cmake_project_version():
    m = re.search(r"project\(topksae VERSION ([0-9.]+)", (ROOT / "CMakeLists.txt").read_text())
    assert m and topksae.__version__ == m.group(1)


def test_type_stubs_ship_and_describe_the_module():
    pkg = Path(topksae.__file__).parent
    assert (pkg / "py.typed").exists()
    stub = (pkg / "_core.pyi").read_text()
    for name in ["class SAE", "def encode(", "def decode(", "def forward(", "class LiveRun", "def push(",
                 "def cuda_available("]:
        assert name in stub, f"{name!r} missing from the generated _core.pyi"


def test_help_is_useful():
    for obj in [topksae, topksae.load, topksae.SAE, topksae.SAE.encode, topksae.SAE.decode, topksae.Trainer,
                topksae.Trainer.fit, topksae.Trainer.step, topksae.Trainer.resume]:
        assert obj.__doc__ and len(obj.__doc__) > 40, obj
    assert "[rows, k]" in topksae.SAE.encode.__doc__
