"""Volumes: sparse files on loop devices, standing in for EBS volumes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .registry import Registry


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def _backing_file(registry: Registry, name: str) -> Path:
    return registry.root / "volumes" / f"{name}.img"


def create(registry: Registry, name: str, size: str, volume_id: str | None = None) -> dict:
    """Create (or re-attach to a loop device) the volume called name.

    A volume's backing file outlives its loop device: ``detach`` keeps the
    data, as an EBS volume outlives the instance it was attached to.
    """
    record = registry.get("volume", name)
    if record and record.get("loop"):
        return record
    image = _backing_file(registry, name)
    image.parent.mkdir(parents=True, exist_ok=True)
    if not image.exists():
        _run("truncate", "-s", size, str(image))
    record = {
        "name": name,
        "file": str(image),
        "volume_id": volume_id or (record or {}).get("volume_id") or f"vol-local{name}",
        "loop": None,
    }
    registry.put("volume", name, record)
    loop = _run("losetup", "--find", "--show", "--partscan", str(image))
    registry.update("volume", name, loop=loop)
    record["loop"] = loop
    return record


def loop_devices_of(image: str) -> list[str]:
    """Loop devices backed by image, as the kernel reports them now."""
    out = _run("losetup", "--noheadings", "--output", "NAME", "--associated", image)
    return out.split()


def detach(registry: Registry, name: str) -> None:
    """Detach the loop device; the backing file (the data) stays."""
    record = registry.get("volume", name)
    if not record:
        return
    if Path(record["file"]).exists():
        for loop in loop_devices_of(record["file"]):
            subprocess.run(["losetup", "--detach", loop], check=False)
    registry.update("volume", name, loop=None)


def grow(registry: Registry, name: str, size: str) -> None:
    """Enlarge the backing file and tell the loop device (as an EBS resize does)."""
    record = registry.get("volume", name)
    if record is None:
        raise KeyError(f"no volume named {name}")
    _run("truncate", "-s", size, record["file"])
    if record.get("loop"):
        _run("losetup", "--set-capacity", record["loop"])


def destroy(registry: Registry, name: str) -> None:
    """Detach the volume and delete its data."""
    record = registry.get("volume", name)
    if not record:
        return
    detach(registry, name)
    Path(record["file"]).unlink(missing_ok=True)
    registry.drop("volume", name)
