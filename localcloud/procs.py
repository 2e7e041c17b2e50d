"""Process helpers: start detached, stop by pid (checking it is still ours)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path


def start_detached(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start argv in its own session, stdin from /dev/null, output to log."""
    with open(log, "ab") as out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            argv, stdin=devnull, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )
    return proc.pid


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:  # gone, also between the open and the read (ProcessLookupError)
        return None
    # The command name (field 2) may hold spaces; fields after ')' are fixed.
    return stat.rsplit(")", 1)[1].split()


def proc_start_time(pid: int) -> str | None:
    """Return the kernel's start time of pid (field 22 of /proc/PID/stat)."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


def alive(pid: int, start_time: str | None) -> bool:
    """True when pid runs and is the same process we started (no pid reuse)."""
    fields = _stat_fields(pid)  # one read: the process may end between two
    if fields is None or fields[0] == "Z":
        return False
    return start_time is None or fields[19] == start_time


def stop(pid: int, start_time: str | None, timeout: float = 15.0) -> None:
    """SIGTERM the process (and its session), then SIGKILL after timeout."""
    if not alive(pid, start_time):
        return
    _signal_session(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, start_time):
            _reap(pid)
            return
        time.sleep(0.1)
    # A box's init runs in a session (and PID namespace) of its own: SIGKILL to
    # systemd-nspawn alone would leave the box running, orphaned, its root gone.
    # Killing a namespace's init ends every process in it.
    orphans = children(pid)
    _signal_session(pid, signal.SIGKILL)
    for child in orphans:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    while alive(pid, start_time):
        time.sleep(0.1)
    _reap(pid)


def children(pid: int) -> list[int]:
    """The direct children of pid, as the kernel lists them now."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _signal_session(pid: int, sig: signal.Signals) -> None:
    # start_detached made pid a session and process-group leader.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def reap(pid: int) -> None:
    """Collect the exit status of a child that ended (no zombie left)."""
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def ephemeral_ports(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> range:
    """The kernel's range for the source ports of outgoing connections."""
    try:
        low, high = (int(field) for field in Path(path).read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_port(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A port that is free now, for a server that binds it later (a box's sshd as it
    boots, a Jupyter minutes later).

    Chosen at random below the kernel's ephemeral range: a port in that range can be
    taken meanwhile as the source port of any outgoing connection (the tests make
    hundreds), and the server then cannot bind it (the likely cause of a test box whose
    sshd never answered while two others launched beside it came up in 1 s).
    """
    ephemeral = ephemeral_ports()
    below, above = range(10000, ephemeral.start), range(ephemeral.stop, 65536)
    pool = below if len(below) >= len(above) else above
    for _ in range(tries if pool else 0):
        port = secrets.choice(pool)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    # No room outside the ephemeral range (an unusual kernel setting): the kernel's pick.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:.0f}s"
                ) from None
            time.sleep(0.1)


def read_exports(text: str) -> dict[str, str]:
    """The variables of `export KEY=VALUE` lines (what `localcloud ansible-env` and
    `localcloud iam-user` print for eval), values unquoted as the shell would."""
    found = {}
    for line in text.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        if key:
            found[key] = shlex.split(value)[0]
    return found
