"""Shared helpers for spotbox's tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localcloud.procs import read_exports

ROOT = Path(__file__).resolve().parent.parent


def local_cloud_missing() -> str | None:
    """Why the local cloud cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the local cloud needs root (systemd-nspawn, losetup)"
    for tool in ("systemd-nspawn", "debootstrap", "losetup"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run scripts/install-system-deps)"
    return None


needs_local_cloud = pytest.mark.skipif(
    local_cloud_missing() is not None, reason=str(local_cloud_missing())
)


def ansible_env(env: dict) -> dict:
    """env plus the exports of `python -m localcloud ansible-env` for its state dir."""
    exports = subprocess.run([sys.executable, "-m", "localcloud", "ansible-env"], cwd=ROOT,
                             env=env, capture_output=True, text=True, check=True).stdout
    return {**env, **read_exports(exports)}


def box_ssh_argv(known_hosts: str, key: str, target: str, *command: str,
                 tty: bool = False) -> list[str]:
    """ssh to a local-cloud instance as its user would: by its address, through
    `localcloud ssh-proxy`, with its key and the known_hosts launch wrote."""
    return ["ssh", "-o", f"ProxyCommand={sys.executable} -m localcloud ssh-proxy %h %p",
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
            "-o", "ConnectTimeout=5", *(["-tt"] if tty else []), "-i", key, target, *command]


def leftovers(marker: str) -> list[str]:
    """Processes, loop devices and mounts whose names contain marker."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"process {proc.name} ({state}): {cmdline.strip()}")
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    found += [f"loop {line}" for line in loops.splitlines() if marker in line]
    mounts = Path("/proc/self/mounts").read_text()
    found += [f"mount {line}" for line in mounts.splitlines() if marker in line]
    return found
