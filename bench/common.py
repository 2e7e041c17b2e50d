"""Helpers shared by the benchmarks: reach a local-cloud box, run a playbook on it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localcloud import boxes  # noqa: E402


def ssh(record: dict, command: str) -> None:
    subprocess.run(boxes.ssh_argv(record, command), check=True, stdout=subprocess.DEVNULL)


def write_inventory(record: dict, path: Path, host: str = "stand-in") -> Path:
    path.write_text(json.dumps(boxes.ansible_inventory(record, host)))
    return path


def playbook(inventory: Path, name: str, *args: str, env: dict | None = None) -> tuple[float, str]:
    """Run a playbook on the inventory (plus the controller); seconds and stdout."""
    started = time.monotonic()
    out = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i",
                          str(inventory), "-i", "inventory/localhost.yml", name, *args],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return time.monotonic() - started, out
