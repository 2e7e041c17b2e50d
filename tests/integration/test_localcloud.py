"""The local cloud on real parts: nspawn boxes, loop devices, a moto server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, leftovers, needs_local_cloud

pytestmark = needs_local_cloud


def localcloud(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state)}
    return subprocess.run([sys.executable, "-m", "localcloud", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=check)


def ssh(record: dict, command: str) -> str:
    from localcloud.boxes import ssh_argv

    return subprocess.run(ssh_argv(record, command), capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def state(tmp_path: Path):
    yield tmp_path
    localcloud(tmp_path, "cleanup", check=False)
    assert leftovers(str(tmp_path)) == []


def test_rootfs_is_cached_and_reused(state: Path) -> None:
    first = localcloud(state, "rootfs").stdout.strip().splitlines()[-1]
    started = time.monotonic()
    again = localcloud(state, "rootfs").stdout.strip().splitlines()[-1]
    assert first == again
    assert time.monotonic() - started < 5, "a cached root filesystem must not be rebuilt"
    recipe = json.loads((Path(again) / ".spotbox-recipe.json").read_text())
    assert recipe["login_user"] == "ubuntu"


def test_two_boxes_at_once_with_a_volume(state: Path) -> None:
    localcloud(state, "rootfs")
    volume = json.loads(localcloud(state, "volume-create", "data", "--size", "64M").stdout)
    assert volume["loop"].startswith("/dev/loop")
    first = json.loads(
        localcloud(state, "box-create", "lc-one", "--attach", "data:/dev/xvdf").stdout
    )
    second = json.loads(localcloud(state, "box-create", "lc-two").stdout)
    for box in (first, second):
        assert box["boot_seconds"] < 10, f"{box['name']} took {box['boot_seconds']}s to answer SSH"
    assert first["port"] != second["port"]
    assert ssh(first, "hostname") == "lc-one"
    assert ssh(second, "hostname") == "lc-two"
    assert ssh(first, "systemctl is-system-running") == "running"
    assert ssh(first, "sudo -n id -un") == "root"
    assert ssh(first, "sudo -n blockdev --getsize64 /dev/xvdf") == str(64 * 1024 * 1024)

    localcloud(state, "box-destroy", "lc-one")
    assert leftovers(f"{state}/boxes/lc-one") == []
    assert not (state / "boxes" / "lc-one").exists()
    assert ssh(second, "hostname") == "lc-two", "destroying one box must not touch another"


def test_moto_server_answers_and_stops(state: Path) -> None:
    exports = localcloud(state, "moto-start", "--env").stdout
    assert "AWS_ENDPOINT_URL=http://127.0.0.1:" in exports
    record = json.loads(localcloud(state, "status").stdout)["moto"]["default"]
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{record['port']}/moto-api/", timeout=5) as r:
        assert r.status == 200
    localcloud(state, "moto-stop")
    assert leftovers(str(record["pid"])) == [] or not Path(f"/proc/{record['pid']}").exists()


def _as_from_a_terminal() -> None:
    # A test run started in the background (`cmd &` without job control)
    # inherits SIGINT ignored, and so would the session's command: Ctrl-C
    # comes from a terminal, where it is not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _session(state_marker_dir: Path, script: str) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(state_marker_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "localcloud", "session", "--", "bash", "-c", script],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_as_from_a_terminal,
    )


def _ended(proc: subprocess.Popen, timeout: float) -> str:
    """The session's output once it ended; ended by SIGTERM (and failed) if it did not."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.terminate()
        output = proc.communicate(timeout=120)[0]
        pytest.fail(f"the session did not end within {timeout:.0f} s:\n{output}")


START_EVERYTHING = (
    f"{sys.executable} -m localcloud moto-start >/dev/null && "
    f"{sys.executable} -m localcloud volume-create v --size 32M >/dev/null && "
    f"{sys.executable} -m localcloud box-create lc-session --attach v >/dev/null && "
    "echo READY"
)


def test_session_ends_everything_after_a_failing_command(tmp_path: Path) -> None:
    proc = _session(tmp_path, START_EVERYTHING + " && exit 3")
    output = _ended(proc, 120)
    assert "READY" in output, output
    assert proc.returncode == 3, "the session must pass the command's failure on"
    assert "session cleanup ended box lc-session" in output
    assert leftovers(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == [], "the session's state dir must be removed"


def test_session_ends_everything_after_ctrl_c(tmp_path: Path) -> None:
    proc = _session(tmp_path, START_EVERYTHING + " && sleep 300")
    assert proc.stdout is not None
    for line in proc.stdout:
        if "READY" in line:
            break
    proc.send_signal(signal.SIGINT)
    output = _ended(proc, 60)
    assert proc.returncode != 0
    assert "session cleanup ended box lc-session" in output
    assert leftovers(str(tmp_path)) == []
