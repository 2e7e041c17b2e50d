"""End everything the registry lists, by its own id."""

from __future__ import annotations

from . import boxes, imds, moto, volumes
from .registry import Registry


def cleanup(registry: Registry, keep_volume_data: bool = False) -> list[str]:
    """Stop the emulator (and its layer), then destroy boxes, volumes and the IMDS
    stand-ins; return what was ended."""
    ended = []
    snapshot = registry.snapshot()
    if snapshot.get("moto"):
        # First: the AWS layer boots a box for every running instance it sees.
        moto.stop(registry)
        ended.append("moto server")
    snapshot = registry.snapshot()
    for name in list(snapshot.get("box", {})):
        boxes.destroy(registry, name)
        ended.append(f"box {name}")
    for name in list(snapshot.get("volume", {})):
        if keep_volume_data:
            volumes.detach(registry, name)
        else:
            volumes.destroy(registry, name)
        ended.append(f"volume {name}")
    for name in list(snapshot.get(imds.KIND, {})):
        imds.stop(registry, name)
        ended.append(f"imds {name}")
    return ended
