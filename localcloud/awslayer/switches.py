"""The layer's switches: one JSON file in the local cloud's state dir.

The server reads it at each request (re-parsed only when it changed), so
``python -m localcloud quota set ...`` and friends act on a running layer.
A missing file is a new AWS account: rules on, spot quotas for G/VT and P at
0, no spot service-linked role, a default VPC, capacity everywhere.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FILE = "awslayer.json"

DEFAULTS: dict[str, Any] = {
    "strict": True,
    # Spot vCPU quotas by quota code; codes not here answer their AWS default.
    "quotas": {},
    # [instance type, zone] pairs with no capacity.
    "capacity_off": [],
    "default_vpc": True,
    # None: leave the account as it is (a new account has no such role);
    # True/False: the layer creates/deletes AWSServiceRoleForEC2Spot in moto.
    "spot_role": None,
    # Seconds before a persistent request whose instance was terminated is
    # fulfilled again by a new instance.
    "spot_relaunch_delay": 1.0,
}

_cache: dict[Path, tuple[float, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE


def read(state_dir: Path) -> dict[str, Any]:
    """The switches now (defaults for what the file does not set)."""
    file = path(state_dir)
    try:
        stamp = file.stat().st_mtime_ns
    except FileNotFoundError:
        return copy.deepcopy(DEFAULTS)
    with _cache_lock:
        cached = _cache.get(file)
        if cached and cached[0] == stamp:
            return copy.deepcopy(cached[1])
    try:
        data = {**copy.deepcopy(DEFAULTS), **json.loads(file.read_text(encoding="utf-8"))}
    except (OSError, ValueError):
        return copy.deepcopy(DEFAULTS)
    with _cache_lock:
        _cache[file] = (stamp, data)
    return copy.deepcopy(data)


@contextlib.contextmanager
def edit(state_dir: Path) -> Iterator[dict[str, Any]]:
    """Yield the switches for changes; written back atomically under a lock."""
    file = path(state_dir)
    with open(file.with_suffix(".lock"), "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = read(state_dir)
        yield data
        data["generation"] = data.get("generation", 0) + 1
        tmp = file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(file)
