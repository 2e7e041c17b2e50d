"""The registry of what the local cloud started, kept as JSON under a lock.

Every resource is recorded *before* it is started so that a crash between
the two still leaves an entry that ``cleanup`` can act on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_STATE_DIR = Path(__file__).resolve().parent.parent / ".localcloud"


def state_dir() -> Path:
    """Return the state directory (``SPOTBOX_LOCALCLOUD_STATE`` or ./.localcloud)."""
    path = Path(os.environ.get("SPOTBOX_LOCALCLOUD_STATE", DEFAULT_STATE_DIR))
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


class Registry:
    """Resources by kind ("moto", "box", "volume") and name."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or state_dir()
        self.path = self.root / "registry.json"

    @contextlib.contextmanager
    def edit(self) -> Iterator[dict[str, dict[str, Any]]]:
        """Yield the registry for changes; written back atomically under a lock."""
        with open(self.root / "registry.lock", "a+", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
            tmp.replace(self.path)

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {"moto": {}, "box": {}, "volume": {}}
        return json.loads(self.path.read_text(encoding="utf-8"))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Return a copy of the registry without locking it for writing."""
        with self.edit() as data:
            return json.loads(json.dumps(data))

    def put(self, kind: str, name: str, record: dict[str, Any]) -> None:
        with self.edit() as data:
            data.setdefault(kind, {})[name] = record

    def update(self, kind: str, name: str, **fields: Any) -> None:
        with self.edit() as data:
            data[kind][name].update(fields)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.snapshot().get(kind, {}).get(name)

    def drop(self, kind: str, name: str) -> None:
        with self.edit() as data:
            data.get(kind, {}).pop(name, None)
