#!/usr/bin/env python3
"""Benchmark: the conda role's environment step (uv backend) on a fresh box
against the floor, the same installs typed by hand with the same tool on
another fresh box. Prints seconds and the ratio (target: at most 1.3x).

Run as root from the repository root: .venv/bin/python bench/env_step.py
Each box downloads its packages from PyPI, so network speed shows in both.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import playbook, run_rounds, ssh, time_pair, write_inventory

from localcloud import boxes
from localcloud.registry import Registry

WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
ROLE_VARS = {
    "conda_backend": "uv", "conda_wheel_tag": "cpu", "conda_framework_version": "2.13.0+cpu",
    "conda_framework_find_links": "/opt/spotbox/wheels",
}
REQUIREMENTS = (
    "jupyterlab\nmatplotlib\npandas\n--find-links /opt/spotbox/wheels\ntorch==2.13.0+cpu\n")
FLOOR = (
    "set -e; sudo install -d -o ubuntu -g ubuntu /opt/spotbox/envs; cd /opt/spotbox/envs; "
    "python3 -m venv .uv; .uv/bin/pip install --quiet uv==0.13.9; "
    ".uv/bin/uv venv --quiet --system-certs --python python3 course; "
    f"printf '{REQUIREMENTS}' > course.requirements.txt; "
    ".uv/bin/uv pip install --quiet --system-certs --python course/bin/python "
    "-r course.requirements.txt"
)


def give_wheel(record: dict) -> None:
    ssh(record, "sudo install -d -m 0755 /opt/spotbox/wheels")
    subprocess.run(["cp", str(WHEEL), f"{record['root']}/opt/spotbox/wheels/"], check=True)


def run_role(record: dict, inventory: Path) -> float:
    write_inventory(record, inventory)
    play = inventory.with_name("env.yml")
    play.write_text(json.dumps([{"name": "Environment step", "hosts": "stand-in",
                                 "gather_facts": False, "roles": [{"role": "conda"}]}]))
    return playbook(inventory, str(play), "-e", json.dumps(ROLE_VARS))[0]


def one_round(registry: Registry, state: Path, index: int, floor_first: bool) -> dict:
    role_box = boxes.create(registry, f"bench-role-{index}")
    floor_box = boxes.create(registry, f"bench-floor-{index}")
    for record in (role_box, floor_box):
        give_wheel(record)
    times = time_pair(lambda: ssh(floor_box, FLOOR),
                      lambda: run_role(role_box, state / f"inventory-{index}.json"), floor_first)
    for record in (role_box, floor_box):
        boxes.destroy(registry, record["name"])
    return times


def main() -> int:
    if not WHEEL.exists():
        print(f"SKIPPED: {WHEEL} (the CPU build of PyTorch) is not on this machine")
        return 0
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = run_rounds(rounds, one_round)
    floor, first, rerun = (statistics.median(r[k] for r in results)
                           for k in ("floor", "first", "rerun"))
    print(f"environment step (jupyterlab, matplotlib, pandas, torch CPU) on a fresh box, "
          f"median of {rounds} rounds")
    print(f"  floor, by hand with uv     {floor:7.1f} s   1.00x")
    print(f"  conda role (uv backend)    {first:7.1f} s   {first / floor:.2f}x   target <= 1.30x")
    print(f"  conda role, re-run         {rerun:7.1f} s   {rerun / floor:.2f}x")
    print("  rounds (floor/first/re-run s): " + ", ".join(
        f"{r['floor']:.1f}/{r['first']:.1f}/{r['rerun']:.1f}" for r in results))
    return 0 if first / floor <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
