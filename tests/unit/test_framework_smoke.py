"""The conda role's framework smoke test (roles/conda/files/framework_smoke.py) with a
stand-in torch, and the message its failure gives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from spotbox_smoke import framework_smoke_failure

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "conda" / "files" / "framework_smoke.py"

FAKE_TORCH = '''
__version__ = "{version}"
class version:
    cuda = {cuda!r}
class cuda:
    @staticmethod
    def is_available():
        return {available}
    @staticmethod
    def synchronize():
        pass
    @staticmethod
    def get_device_name(index):
        return "NVIDIA A10G"
class _T:
    def __init__(self, n): self.n = n
    def __matmul__(self, other): return self  # of ones: every entry is n, the sum n**3
    def sum(self): return self
    def item(self): return float(self.n ** 3)
    def __float__(self): return self.item()
def ones(shape, device="cpu"):
    return _T(shape[0])
'''


def smoke(tmp_path: Path, mode: str, **torch) -> subprocess.CompletedProcess:
    (tmp_path / "torch.py").write_text(FAKE_TORCH.format(**torch))
    return subprocess.run([sys.executable, "-c", SCRIPT.read_text(), mode], cwd=tmp_path,
                          env={"PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                          check=False)


def test_the_cpu_build_imports_and_computes(tmp_path: Path) -> None:
    run = smoke(tmp_path, "cpu", version="2.13.0+cpu", cuda=None, available=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout) | {"python": ""} == {
        "python": "", "mode": "cpu", "version": "2.13.0+cpu", "cuda": "", "available": False}


def test_the_gpu_build_runs_a_matrix_product_on_the_device(tmp_path: Path) -> None:
    run = smoke(tmp_path, "gpu", version="2.13.0+cu126", cuda="12.6", available=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["device"] == "NVIDIA A10G"


@pytest.mark.parametrize(("version", "cuda", "todo"), [
    ("2.13.0+cpu", None, "The installed build is cpu, not cu126: a pinned conda_framework_version"),
    ("2.13.0+cu126", "12.6", "The driver cannot run this build, or the GPU is not visible: "
                             "check nvidia-smi"),
])
def test_a_gpu_the_framework_cannot_see_stops_with_what_to_do(tmp_path: Path, version: str,
                                                              cuda: str | None, todo: str) -> None:
    run = smoke(tmp_path, "gpu", version=version, cuda=cuda, available=False)
    assert run.returncode == 1
    message = framework_smoke_failure(
        {"rc": 1, "stdout": run.stdout, "stderr": run.stderr}, "cu126", "550.127.05",
        [{"name": "NVIDIA A10G"}], "the newest build of torch 2.13 that ... run")
    assert "torch.cuda.is_available() is False" in message
    assert f"Installed: torch {version}" in message
    assert "build chosen: cu126 (the newest build of torch 2.13 that ... run)" in message
    assert "driver: 550.127.05; GPU: NVIDIA A10G." in message
    assert todo in message


def test_no_torch_at_all(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-I", "-c", SCRIPT.read_text(), "cpu"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1
    message = framework_smoke_failure({"rc": 1, "stdout": run.stdout, "stderr": run.stderr})
    assert "ModuleNotFoundError: No module named 'torch'" in message
    assert "Installed: no importable torch" in message
    assert "The environment's build is broken" in message
