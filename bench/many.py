#!/usr/bin/env python3
"""Benchmark: launch and provision of three boxes against one, in the same run.

In one private local cloud, as an IAM user holding docs/iam-policy.json:
`ansible-playbook launch.yml` for one box, then for three boxes given as
spot_instance_names, each to its printed Jupyter URLs. Prints both times and their
ratio (target: three boxes at most 1.8x the time of one on this 2-core machine,
where the three boxes, the controller and the builds share the cores; on AWS each
box has its own).

The stand-in AMI and the root filesystem are built before the clock starts (on
AWS the AMI exists). Run as root from the repository root:
    .venv/bin/python bench/many.py [--profile]
(--profile: the slowest tasks of each run, from ansible.posix.profile_tasks).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from common import ROOT, run

from localcloud.procs import free_port, read_exports

TARGET = 1.8
PROFILE = "--profile" in sys.argv
LC = [str(ROOT / ".venv/bin/python"), "-m", "localcloud"]


def inventory(state: Path, label: str, names: list[str]) -> Path:
    """An inventory folder for a class of boxes, with the local cloud's settings."""
    folder = state / f"inventory-{label}"
    (folder / "group_vars").mkdir(parents=True)
    (folder / "host_vars").mkdir()
    (folder / "localhost.yml").write_text((ROOT / "inventory/localhost.yml").read_text())
    settings = {
        "spot_instance_names": names, "spot_instance_ssh_cidr": "127.0.0.1/32",
        "spot_instance_inventory_file":
            f"{folder}/spotbox-{{{{ spot_instance_name }}}}.aws_ec2.yml",
        "spot_instance_known_hosts_file": f"{state}/known_hosts",
        "access_ssh_config_file": f"{state}/ssh_config-{label}",
        "conda_backend": "uv", "conda_framework": "none"}
    (folder / "group_vars" / "all.yml").write_text(yaml.safe_dump(settings))
    for name in names:  # the boxes share this machine's network: a Jupyter port each
        (folder / "host_vars" / f"spotbox-{name}.yml").write_text(
            f"jupyter_port: {free_port()}\n")
    return folder


def cpu_seconds() -> float:
    """CPU seconds of this machine so far (all processes: the controller and the boxes)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system = (int(value) for value in fields[:3])
    return (user + nice + system) / os.sysconf("SC_CLK_TCK")


def timed_launch(folder: Path, env: dict, count: int) -> tuple[float, float]:
    """Wall seconds of launch.yml for the boxes of folder, and the machine's CPU seconds."""
    started, cpu = time.monotonic(), cpu_seconds()
    out = run([str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(folder), "launch.yml"], env)
    seconds, cpu = time.monotonic() - started, cpu_seconds() - cpu
    if PROFILE:
        print(f"--- {count} box(es), the slowest tasks:\n" + "\n".join(
            out.split("=" * 20)[-1].strip().splitlines()[:25]))
    urls = re.findall(r"http://127\.0\.0\.1:\d+/lab\?token=[0-9a-f]+", out)
    if len(urls) != count:
        sys.exit(f"bench/many.py: {len(urls)} Jupyter URLs printed, not {count}:\n{out[-3000:]}")
    return seconds, cpu


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="spotbox-bench-many-"))
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state), "HOME": str(state / "home"),
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1", "PYTHONPATH": str(ROOT)}
    (state / "home" / ".ssh").mkdir(parents=True, mode=0o700)
    try:
        run([*LC, "moto-start"], env)
        run([*LC, "quota", "set", "L-3819A6DF", "16"], env)  # 4 boxes of 4 vCPUs
        run([*LC, "image", "dlami"], env)  # the stand-in DLAMI, cached: not part of either
        env.update(read_exports(run([*LC, "ansible-env"], env)))
        env.update(read_exports(run([*LC, "iam-user", "spotbox-bench", "--policy",
                                str(ROOT / "docs/iam-policy.json")], env)))
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        if PROFILE:
            env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.profile_tasks"
        one = timed_launch(inventory(state, "one", ["solo"]), env, 1)
        three = timed_launch(inventory(state, "three", ["ana", "ben", "cal"]), env, 3)
    finally:
        subprocess.run([*LC, "cleanup"], cwd=ROOT, env=env, capture_output=True, check=False)
        subprocess.run(["rm", "-rf", str(state)], check=False)
    (one, one_cpu), (three, three_cpu) = one, three
    ratio = three / one
    cores = os.cpu_count() or 1
    print(f"one box: launch and provision to its URL       {one:6.1f} s  "
          f"({one_cpu:.0f} s of CPU)")
    print(f"three boxes in parallel, to their three URLs   {three:6.1f} s  "
          f"({three_cpu:.0f} s of CPU; on {cores} cores at least {three_cpu / cores:.0f} s)")
    print(f"ratio three/one                                {ratio:6.2f}x  (target <= {TARGET}x: "
          f"{'met' if ratio <= TARGET else 'NOT met'})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
