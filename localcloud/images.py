"""The images boxes boot from: the stand-in of each AMI, built once and cached.

* A plain AMI (Ubuntu's, say) is the Debian root filesystem (rootfs.py).
* The Deep Learning AMIs' stand-in adds what the real DLAMI ships and the roles
  rely on: several CUDA toolkits under /usr/local/cuda-X.Y, the default link
  /usr/local/cuda on the oldest, with the real ptxas/nvcc of NVIDIA's PyPI
  wheels (the same pins as molecule/cuda/vars/toolkits.yml). Where this machine
  carries the CPU wheel of PyTorch (PyPI's torch is the CUDA build, GBs), it is
  copied to /opt/spotbox/wheels, as a site with a mirror would have it.

Each image is a directory under the cache, keyed by everything that decides its
content, so that a change of pins builds a new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from . import rootfs

REPO = Path(__file__).resolve().parent.parent
TOOLKITS_FILE = REPO / "molecule" / "cuda" / "vars" / "toolkits.yml"
TORCH_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
WHEEL_DIR = "opt/spotbox/wheels"
AMIS = Path(__file__).resolve().parent / "data" / "amis.json"
DLAMI_PREFIX = "Deep Learning"


def toolkits() -> list[dict]:
    """The CUDA toolkits the DLAMI stand-in carries (molecule/cuda/vars/toolkits.yml)."""
    import yaml

    return yaml.safe_load(TOOLKITS_FILE.read_text(encoding="utf-8"))["cuda_test_toolkits"]


def wheel_cache() -> Path:
    """Where the nvcc wheels are kept: the cache molecule/cuda/prepare.yml uses too."""
    path = rootfs.cache_dir() / "cuda-wheels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_dlami(image_id: str) -> bool:
    """True for the stand-ins of the Deep Learning AMIs (data/amis.json, by name)."""
    for ami in json.loads(AMIS.read_text(encoding="utf-8")):
        if ami["ami_id"] == image_id:
            return ami["name"].startswith(DLAMI_PREFIX)
    return False


def dlami_recipe() -> dict:
    return {
        "version": 1,
        "base": rootfs.recipe_key(),
        "toolkits": toolkits(),
        "torch_wheel": TORCH_WHEEL.name if TORCH_WHEEL.exists() else None,
    }


def dlami_path() -> Path:
    spec = dlami_recipe()
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return rootfs.cache_dir() / f"dlami-{key}"


def _fetch_wheel(item: dict) -> Path:
    wheel = wheel_cache() / item["file"]
    if not wheel.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--dest", str(wheel_cache()), item["wheel"]], check=True)
    return wheel


def lay_out_toolkits(root: Path) -> None:
    """/usr/local/cuda-X.Y/{bin,lib64} with the wheels' real binaries; cuda -> the oldest."""
    items = toolkits()
    for item in items:
        base = root / "usr/local" / f"cuda-{item['version']}"
        (base / "lib64").mkdir(parents=True, exist_ok=True)
        (base / "bin").mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(_fetch_wheel(item)) as wheel:
            for binary in item["binaries"]:
                target = base / "bin" / binary
                with wheel.open(f"{item['bin_dir']}/{binary}") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                target.chmod(0o755)
    oldest = min(items, key=lambda i: tuple(int(p) for p in i["version"].split(".")))
    link = root / "usr/local/cuda"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(f"/usr/local/cuda-{oldest['version']}")


def ensure_dlami(log=print) -> Path:
    """Return the cached DLAMI stand-in image, building it (once) if absent."""
    target = dlami_path()
    if (target / ".spotbox-image.json").exists():
        return target
    # Two instances launched at once must not both build it.
    with open(rootfs.cache_dir() / ".dlami.lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".spotbox-image.json").exists():
            return target
        return _build_dlami(target, log)


def _build_dlami(target: Path, log) -> Path:
    base = rootfs.ensure_rootfs(log)
    started = time.monotonic()
    log(f"localcloud: building the Deep Learning AMI stand-in into {target} (once)")
    work = Path(tempfile.mkdtemp(prefix="dlami-build-", dir=rootfs.cache_dir()))
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", f"{base}/.", str(work)], check=True)
        lay_out_toolkits(work)
        if TORCH_WHEEL.exists():
            wheels = work / WHEEL_DIR
            wheels.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TORCH_WHEEL, wheels / TORCH_WHEEL.name)
            (wheels / TORCH_WHEEL.name).chmod(0o644)
        (work / ".spotbox-image.json").write_text(json.dumps(dlami_recipe(), indent=2),
                                                  encoding="utf-8")
        work.rename(target)
        for stale in rootfs.cache_dir().glob("dlami-*"):
            if stale != target and not stale.name.startswith("dlami-build-"):
                shutil.rmtree(stale, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    log(f"localcloud: Deep Learning AMI stand-in built in {time.monotonic() - started:.1f}s")
    return target


def for_ami(image_id: str | None, log=print) -> Path:
    """The image a box launched from image_id boots."""
    if image_id and is_dlami(image_id):
        return ensure_dlami(log)
    return rootfs.ensure_rootfs(log)
