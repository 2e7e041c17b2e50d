"""Helpers shared by the benchmarks: reach a local-cloud box, run a playbook on
it, time the role against the floor in rounds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localcloud import boxes, cleanup  # noqa: E402
from localcloud.registry import Registry  # noqa: E402


def run(argv: list[str], env: dict) -> str:
    """argv's output; on failure the benchmark ends, with the command and its output's end."""
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                            check=False)
    if result.returncode:
        sys.exit(f"{Path(sys.argv[0]).name}: {' '.join(argv)} failed ({result.returncode}):\n"
                 f"{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
    return result.stdout


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


def time_pair(floor: Callable[[], object], role: Callable[[], object], floor_first: bool) -> dict:
    """Seconds of the floor (by hand) and the role's first run, in that order or the
    other, then of the role's re-run: {"floor", "first", "rerun"}."""
    order = [("floor", floor), ("first", role)]
    if not floor_first:
        order.reverse()
    times = {}
    for name, step in [*order, ("rerun", role)]:
        started = time.monotonic()
        step()
        times[name] = time.monotonic() - started
    return times


def run_rounds(count: int, one_round: Callable[[Registry, Path, int, bool], dict]) -> list[dict]:
    """count rounds of one_round(registry, state, index, floor_first) in a private
    local-cloud state directory, ended and removed afterwards.

    PyPI's speed varies from minute to minute and a warm proxy favours whoever
    goes second: the rounds alternate who goes first, so compare medians.
    """
    state = Path(tempfile.mkdtemp(prefix="spotbox-bench-"))
    os.environ["SPOTBOX_LOCALCLOUD_STATE"] = str(state)
    registry = Registry(state)
    try:
        return [one_round(registry, state, index, index % 2 == 0) for index in range(count)]
    finally:
        cleanup.cleanup(registry)
        subprocess.run(["rm", "-rf", str(state)], check=False)
