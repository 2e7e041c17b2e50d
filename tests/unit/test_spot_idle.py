"""The idle watcher (roles/spot_idle/files/spotbox-idle-watch.py): its decision as
pure functions, and the real script in a subprocess with a stand-in Jupyter
(HTTP on 127.0.0.1 checking the token) and small scripts for systemctl, umount,
wall, who and nvidia-smi that record their calls. Short idle times."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "spot_idle" / "files" / "spotbox-idle-watch.py"
spec = importlib.util.spec_from_file_location("idle_watch", SCRIPT)
idle = importlib.util.module_from_spec(spec)
spec.loader.exec_module(idle)


# --- the decision ------------------------------------------------------------------------

@pytest.mark.parametrize(("idle_for", "warned", "action"), [
    (0, False, "wait"), (54, False, "wait"), (55, False, "warn"), (58, True, "wait"),
    (60, True, "poweroff"), (60, False, "poweroff"), (10, True, "cancel")])
def test_decide(idle_for, warned, action) -> None:
    assert idle.decide(1000 + idle_for, 1000, 60, 5, warned) == action


def test_jupyter_use_reads_busy_kernels_and_the_newest_activity() -> None:
    kernels = [{"execution_state": "idle", "last_activity": "2026-11-29T18:00:00.000000Z"},
               {"execution_state": "busy", "last_activity": "2026-11-29T18:05:00Z"}]
    terminals = [{"name": "1", "last_activity": "2026-11-29T18:07:30.5+00:00"}]
    busy, newest = idle.jupyter_use(kernels, terminals)
    assert busy is True
    assert newest == datetime(2026, 11, 29, 18, 7, 30, 500000, tzinfo=UTC).timestamp()
    assert idle.jupyter_use([{"execution_state": "idle", "last_activity": None}], []) == (
        False, None)


def test_logins_cpu_and_gpu_readings() -> None:
    who = "ubuntu   pts/0        2026-11-29 18:01 (203.0.113.7)\n"
    assert idle.logged_in(who) == ["ubuntu pts/0"]
    assert idle.logged_in("") == []
    before = idle.cpu_times("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = idle.cpu_times("cpu  150 0 150 900 0 0 0 0 0 0\n")
    assert idle.cpu_percent(before, after) == pytest.approx(50.0)
    assert idle.gpu_percent("3\n87\n") == 87.0
    assert idle.gpu_percent("[N/A]\n") is None


# --- the script ------------------------------------------------------------------------

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "{calls}"
{extra}
"""


class Jupyter(ThreadingHTTPServer):
    """Answers /api/kernels and /api/terminals with what the test sets, with the token only."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.kernels: list[dict] = []
        self.terminals: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                if handler.headers.get("Authorization") != f"token {self.token}":
                    handler.send_response(403)
                    handler.end_headers()
                    return
                body = {"/api/kernels": self.kernels,
                        "/api/terminals": self.terminals}.get(handler.path)
                handler.send_response(200 if body is not None else 404)
                handler.end_headers()
                handler.wfile.write(json.dumps(body or []).encode())

            def log_message(handler, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


class Box:
    def __init__(self, tmp: Path, jupyter: Jupyter, who: str = "", gpu: str = "0") -> None:
        self.tmp, self.jupyter = tmp, jupyter
        self.calls = tmp / "calls"
        self.calls.touch()
        self.run_dir = tmp / "run"
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        outputs = {"who": f"printf '{who}'", "nvidia-smi": f"echo {gpu}",
                   "wall": "cat >> " + str(tmp / "wall")}
        for name in ("systemctl", "umount", "wall", "who", "nvidia-smi"):
            path = bin_dir / name
            path.write_text(RECORDER.format(calls=self.calls, extra=outputs.get(name, "")))
            path.chmod(0o755)
        (tmp / "token").write_text(jupyter.token + "\n")
        (tmp / "mounts").write_text(f"/dev/xvdf {tmp / 'Payload'} ext4 rw 0 0\n")
        (tmp / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")  # never busy
        self.config = tmp / "idle.json"
        self.config.write_text(json.dumps({
            "idle_seconds": 5, "warn_seconds": 3.5, "interval": 0.1,
            "jupyter_port": jupyter.server_address[1], "jupyter_token_file": str(tmp / "token"),
            "run_dir": str(self.run_dir), "mount_point": str(tmp / "Payload"),
            "mounts": str(tmp / "mounts"), "proc_stat": str(tmp / "stat"),
            **{key: str(bin_dir / name) for key, name in (
                ("systemctl", "systemctl"), ("umount", "umount"), ("wall", "wall"),
                ("who", "who"), ("nvidia_smi", "nvidia-smi"))}}))
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-u", str(SCRIPT), "--config",
                                      str(self.config)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def called(self) -> list[str]:
        return [line for line in self.calls.read_text().splitlines()
                if not line.startswith(("who", "nvidia-smi"))]

    def notice(self) -> Path:
        return self.run_dir / "idle-shutdown"

    def stop(self) -> str:
        self.proc.kill()
        return self.proc.communicate()[0]


@pytest.fixture
def jupyter():
    server = Jupyter("s3cret")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def wait_for(check, seconds: float = 12.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_an_idle_box_is_warned_then_stops_jupyter_unmounts_and_powers_off(tmp_path,
                                                                           jupyter) -> None:
    jupyter.kernels = [{"execution_state": "idle", "last_activity": "2026-11-29T10:00:00Z"}]
    box = Box(tmp_path, jupyter)
    try:
        assert wait_for(box.notice().exists), box.stop()
        notice = json.loads(box.notice().read_text())
        assert datetime.fromisoformat(notice["poweroff_at"].replace("Z", "+00:00")) > datetime.now(
            UTC)
        # The notice is written before wall runs: wait for wall too (a loaded machine).
        wall = tmp_path / "wall"
        assert wait_for(lambda: wall.exists() and "powers off at" in wall.read_text()), (
            box.stop())
        assert box.called() == ["wall "], "nothing is stopped at the warning"
        assert wait_for(lambda: "systemctl poweroff" in box.called()), box.stop()
    finally:
        log = box.stop()
    assert box.called() == ["wall ", "wall ", "systemctl stop spotbox-jupyter.service",
                            f"umount {tmp_path / 'Payload'}", "systemctl poweroff"], log


@pytest.mark.parametrize("use", ["busy kernel", "login", "gpu"])
def test_use_keeps_the_box(tmp_path, jupyter, use) -> None:
    jupyter.kernels = [{"execution_state": "busy" if use == "busy kernel" else "idle",
                        "last_activity": "2026-11-29T10:00:00Z"}]
    box = Box(tmp_path, jupyter,
              who="ubuntu   pts/0        2026-11-29 18:01 (203.0.113.7)\\n" if use == "login"
              else "", gpu="93" if use == "gpu" else "0")
    try:
        time.sleep(6)  # longer than idle_seconds
        assert not box.notice().exists()
        assert box.called() == []
    finally:
        box.stop()


def test_activity_after_the_warning_cancels_it(tmp_path, jupyter) -> None:
    jupyter.kernels = [{"execution_state": "idle", "last_activity": "2026-11-29T10:00:00Z"}]
    box = Box(tmp_path, jupyter)
    try:
        assert wait_for(box.notice().exists), box.stop()
        jupyter.terminals = [{"name": "1", "last_activity": datetime.now(UTC).isoformat()}]
        assert wait_for(lambda: not box.notice().exists(), 3.0), box.stop()
        assert wait_for(lambda: "idle power-off cancelled (Jupyter kernel or terminal activity)"
                        in (tmp_path / "wall").read_text(), 3.0), box.stop()
        assert "systemctl poweroff" not in box.called()
    finally:
        box.stop()


def test_a_wrong_token_is_not_activity_and_is_said(tmp_path, jupyter) -> None:
    jupyter.kernels = [{"execution_state": "busy", "last_activity": "2026-11-29T10:00:00Z"}]
    box = Box(tmp_path, jupyter)
    (tmp_path / "token").write_text("wrong\n")
    try:
        assert wait_for(lambda: "systemctl poweroff" in box.called()), box.stop()
    finally:
        log = box.stop()
    assert "Jupyter answered 403 for /api/kernels: not counted" in log
