"""The spot watcher (roles/spot_watch/files/spotbox-spot-watch.py), the real script in a
subprocess, against the real IMDSv2 stand-in (localcloud/imds.py) on 127.0.0.1.

Short intervals; systemctl, umount, mount and wall are small scripts that record
their calls (no systemd or real mount here), and the mount table is a file that
lists the fake data volume. Nothing is sent to 169.254.169.254.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from localcloud import imds

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "roles" / "spot_watch" / "files" / "spotbox-spot-watch.py"
RECORDER = """#!/bin/sh
echo "$(date +%s.%N) $(basename "$0") $*" >> "{calls}"
{extra}
"""


class Box:
    """A watcher's world in tmp_path: config, folders, fake commands, its log."""

    def __init__(self, tmp_path: Path, server: imds.IMDSServer) -> None:
        self.tmp, self.server = tmp_path, server
        self.run_dir = tmp_path / "run"
        self.hook_dir = tmp_path / "interruption.d"
        self.hook_dir.mkdir()
        self.volume = tmp_path / "Payload"
        self.volume.mkdir()
        self.calls = tmp_path / "calls.log"
        self.calls.touch()
        self.log = tmp_path / "watch.log"
        mounts = tmp_path / "mounts"
        mounts.write_text(f"/dev/xvdf1 {self.volume} ext4 rw 0 0\n")
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for name in ("systemctl", "umount", "mount", "wall"):
            extra = "cat > /dev/null" if name == "wall" else ""
            self.script(bin_dir / name, RECORDER.format(calls=self.calls, extra=extra))
        self.config = {
            "endpoint": server.endpoint, "interval": 0.2, "timeout": 1, "idle_recheck": 0.5,
            "hook_dir": str(self.hook_dir), "hook_budget": 3, "jupyter_service": "jupyter-x",
            "jupyter_stop_timeout": 2, "mount_point": str(self.volume),
            "run_dir": str(self.run_dir), "mounts": str(mounts),
            **{name: str(bin_dir / name) for name in ("systemctl", "umount", "mount", "wall")},
        }
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def script(path: Path, text: str) -> Path:
        path.write_text(text)
        path.chmod(0o755)
        return path

    def start(self, **changes) -> None:
        config = self.tmp / "spot-watch.json"
        config.write_text(json.dumps({**self.config, **changes}))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(SCRIPT), "--config",
                                          str(config)], stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text()

    def wait_log(self, words: str, seconds: float = 8) -> None:
        wait(lambda: words in self.text(), seconds, f"{words!r} in the log:\n{self.text()}")

    def commands(self) -> list[str]:
        return [line.split(" ", 1)[1].strip() for line in self.calls.read_text().splitlines()]

    def interruption(self) -> dict | None:
        path = self.run_dir / "interruption"
        return json.loads(path.read_text()) if path.exists() else None


def last_interruption():
    """The provisioning's reader of the watcher's record, as a module."""
    path = ROOT / "roles" / "spot_watch" / "files" / "last_interruption.py"
    spec = importlib.util.spec_from_file_location("last_interruption", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds} s for {what}")
        time.sleep(0.05)


@pytest.fixture
def box(tmp_path):
    state = tmp_path / "imds.json"
    imds.write_state(state, instance_id="i-0watch", life_cycle="spot")
    server = imds.serve_in_thread(state)
    world = Box(tmp_path, server)
    yield world
    world.stop()
    server.shutdown()
    server.server_close()
    assert world.proc is None or world.proc.returncode is not None


def test_no_notice_404_means_nothing_to_do(box) -> None:
    box.start()
    box.wait_log("watching i-0watch (spot)")
    time.sleep(1.2)  # about six looks at both items
    assert box.server.stats["GET 404"] >= 8
    assert not box.run_dir.exists() or list(box.run_dir.iterdir()) == []
    assert box.commands() == []
    assert "malformed" not in box.text() and "answered 401" not in box.text()


def test_a_401_gets_a_new_token_and_watching_goes_on(box) -> None:
    box.start()
    box.wait_log("watching i-0watch")
    imds.expire_tokens(box.server.state_path)  # every token so far is refused from now on
    box.wait_log("answered 401 (the token expired or was refused): getting a new token")
    puts = box.server.stats["PUT 200"]
    assert puts >= 2
    imds.publish_notice(box.server.state_path, "terminate", 60)
    wait(lambda: (box.interruption() or {}).get("state") == "handled", 8, "the handling")
    assert box.text().count("answered 401") == 1  # one new token served every later look
    assert box.server.stats["PUT 200"] == puts


def test_a_token_is_renewed_before_it_expires(box) -> None:
    box.start(token_ttl=1)
    box.wait_log("watching i-0watch")
    time.sleep(2.5)
    assert box.server.stats["PUT 200"] >= 3  # one per TTL (renewed a tenth early)
    assert box.server.stats["GET 401"] == 0
    assert "answered 401" not in box.text()  # the message; a port may hold the digits


def test_a_malformed_notice_is_logged_once_and_ignored(box) -> None:
    box.start()
    box.wait_log("watching i-0watch")
    for malformed in ("{not json", '{"action": "explode", "time": "2030-01-01T00:00:00Z"}',
                      '{"action": "terminate", "time": "tomorrow"}', '["terminate"]'):
        imds.write_state(box.server.state_path, instance_action=malformed)
        box.wait_log(f"malformed interruption notice ignored: {malformed!r}")
        time.sleep(0.5)
        assert box.text().count(malformed) == 1
    imds.write_state(box.server.state_path, rebalance="noticeTime?")
    box.wait_log("malformed rebalance recommendation ignored: 'noticeTime?'")
    assert box.interruption() is None and box.commands() == []
    assert box.proc.poll() is None
    imds.publish_notice(box.server.state_path, "stop", 60)  # a good one is still handled
    wait(lambda: (box.interruption() or {}).get("state") == "handled", 8, "the handling")


def test_a_terminate_notice_is_handled_in_order_within_the_hook_budget(box) -> None:
    out = box.tmp / "hook-env"
    box.script(box.hook_dir / "10-checkpoint", f"""#!/bin/sh
echo "checkpoint saved"
echo "$SPOTBOX_INTERRUPTION_ACTION $SPOTBOX_INTERRUPTION_TIME $SPOTBOX_DATA_VOLUME" > {out}
echo "$(date +%s.%N) hook 10-checkpoint" >> {box.calls}
""")
    box.script(box.hook_dir / "20-slow", f"""#!/bin/sh
echo "$(date +%s.%N) hook 20-slow" >> {box.calls}
exec sleep 30
""")
    box.script(box.hook_dir / "30-late", "#!/bin/sh\necho never\n")
    box.script(box.hook_dir / "40-backup.bak", "#!/bin/sh\necho never\n")  # not a hook name
    (box.hook_dir / "50-not-executable").write_text("#!/bin/sh\necho never\n")
    box.start()
    box.wait_log("watching i-0watch")
    notice = imds.publish_notice(box.server.state_path, "terminate", 60)
    published = time.time()
    wait(lambda: (box.interruption() or {}).get("state") == "handled", 10, "the handling")
    took = time.time() - published
    record = box.interruption()
    assert (record["action"], record["time"]) == ("terminate", notice["time"])
    assert [h["name"] for h in record["hooks"]] == ["10-checkpoint", "20-slow", "30-late"]
    assert [h["result"] for h in record["hooks"]] == ["ok", "stopped: out of time", "skipped"]
    assert record["jupyter"] == "stopped" and record["unmount"] == "unmounted"
    assert 3 <= took < 6, took  # the 3 s budget, then the rest at once
    assert out.read_text().split() == ["terminate", notice["time"], str(box.volume)]
    commands = box.commands()
    assert commands[0].startswith("wall")
    assert commands[1:] == ["hook 10-checkpoint", "hook 20-slow",
                            "systemctl stop jupyter-x.service", f"umount {box.volume}"]
    # The record for the next instance: written after the hooks and Jupyter's stop, before
    # the sync and the unmount, which it says started (it cannot say how they ended).
    on_volume = json.loads((box.volume / ".spotbox" / "last-interruption.json").read_text())
    assert {k: on_volume[k] for k in ("action", "time", "instance_id", "state", "jupyter", "sync",
                                      "unmount")} == {
        "action": "terminate", "time": notice["time"], "instance_id": "i-0watch",
        "state": "unmounting", "jupyter": "stopped", "sync": "started", "unmount": "started"}
    assert on_volume["hooks"] == record["hooks"]
    assert on_volume["noticed_at"] <= on_volume["recorded_at"] <= record["handled_at"]
    assert record["instance_id"] == "i-0watch"
    # What the next instance's provisioning makes of it (files/last_interruption.py).
    line = last_interruption().message(on_volume)
    hhmm, day = notice["time"][11:16], notice["time"][:10]
    assert line.startswith(f"the previous instance (i-0watch) was interrupted at {hhmm} "
                           f"UTC on {day} (terminate); the notice was handled: hooks "
                           "ran, not all well (10-checkpoint ok, 20-slow stopped: out of time, "
                           "30-late skipped), Jupyter stopped, then the disks' sync and the data "
                           "volume's unmount started"), line
    text = box.text()
    for words in ("interruption notice: AWS will terminate i-0watch at", "hook 10-checkpoint: "
                  "checkpoint saved", "hook 20-slow: stopped: out of time", "hook 30-late: skipped",
                  "Jupyter stopped", "disks synced", "data volume unmounted", "idling"):
        assert words in text, words
    assert "never" not in text
    assert oct((box.run_dir / "interruption").stat().st_mode & 0o777) == "0o644"
    # Handled once: the next looks, and a restarted watcher, do nothing more.
    time.sleep(0.6)
    assert box.commands() == commands
    box.stop()
    box.start()
    box.wait_log("was already handled")
    time.sleep(0.6)
    assert box.commands() == commands


def test_the_hooks_budget_leaves_time_for_jupyter_and_the_unmount(box) -> None:
    box.script(box.hook_dir / "10-slow", "#!/bin/sh\nexec sleep 30\n")
    box.start(hook_budget=60)
    box.wait_log("watching i-0watch")
    # 13-14 s left (IMDS's time has whole seconds): 1-2 s for the hooks, then 2 s for
    # Jupyter's stop and 10 s for sync and unmount.
    imds.publish_notice(box.server.state_path, "terminate", 14)
    wait(lambda: (box.interruption() or {}).get("state") == "handled", 10, "the handling")
    record = box.interruption()
    assert record["hooks"][0]["result"] == "stopped: out of time"
    assert 0.5 <= record["hooks"][0]["seconds"] <= 3
    assert record["seconds_left"] >= 9


def test_a_rebalance_recommendation_leaves_a_file_and_tells_the_users(box) -> None:
    box.start()
    box.wait_log("watching i-0watch")
    notice = imds.publish_rebalance(box.server.state_path)
    box.wait_log("rebalance recommendation (emitted")
    time.sleep(0.6)
    found = json.loads((box.run_dir / "rebalance").read_text())
    assert found["noticeTime"] == notice["noticeTime"]
    assert box.commands() == ["wall"]  # once
    assert box.interruption() is None


def test_an_on_demand_instance_idles_without_polling(box) -> None:
    imds.write_state(box.server.state_path, life_cycle="on-demand")
    imds.publish_notice(box.server.state_path, "terminate", 60)
    box.start()
    box.wait_log("i-0watch is on-demand, not spot: no interruption notice will come; idling")
    seen = sum(box.server.stats.values())
    time.sleep(1)
    assert sum(box.server.stats.values()) == seen
    assert box.interruption() is None and box.commands() == []


def test_without_a_metadata_service_it_idles_and_looks_again(box) -> None:
    from localcloud.procs import free_port

    port = free_port()
    box.start(endpoint=f"http://127.0.0.1:{port}")
    box.wait_log("no instance metadata service answers")
    time.sleep(1.2)  # looks again every interval (0.2 s) for a minute, says it once
    assert box.text().count("no instance metadata service answers") == 1
    # A metadata service that comes up late (the network at boot) is found.
    late = imds.IMDSServer(box.server.state_path, port=port)
    threading.Thread(target=late.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    try:
        box.wait_log("watching i-0watch (spot)", 5)
    finally:
        late.shutdown()
        late.server_close()
    assert box.proc.poll() is None
    assert box.interruption() is None and box.commands() == []
    assert not box.run_dir.exists()


def test_the_default_endpoint_is_aws_and_is_never_used_here() -> None:
    """The tests point the watcher at the stand-in's 127.0.0.1 endpoint (Box.config)."""
    assert '"endpoint": "http://169.254.169.254"' in SCRIPT.read_text()
    assert os.access(SCRIPT, os.R_OK)


def test_without_the_data_volume_mounted_no_record_is_left_on_it(box) -> None:
    (box.tmp / "mounts").write_text("/dev/root / ext4 rw 0 0\n")
    box.start()
    box.wait_log("watching i-0watch")
    imds.publish_notice(box.server.state_path, "stop", 60)
    wait(lambda: (box.interruption() or {}).get("state") == "handled", 10, "the handling")
    assert box.interruption()["unmount"] == "not mounted"
    assert not (box.volume / ".spotbox").exists()
    assert f"umount {box.volume}" not in box.commands()


def test_the_next_provisioning_moves_the_record_to_the_root_disk_and_tells_it(tmp_path) -> None:
    """files/last_interruption.py as the task runs it (python3 -c SOURCE MOUNT STATE MODE):
    check mode only reads; the first real run moves the record to this instance's root disk,
    later runs tell it from there, and an unreadable record is set aside, never told."""
    source = (ROOT / "roles" / "spot_watch" / "files" / "last_interruption.py").read_text()
    volume, state = tmp_path / "Payload", tmp_path / "var-lib-spotbox"
    (volume / ".spotbox").mkdir(parents=True)
    left = volume / ".spotbox" / "last-interruption.json"
    record = {"action": "stop", "time": "2026-11-29T14:02:00Z", "instance_id": "i-0abc",
              "state": "unmounting", "hooks": [{"name": "10-save", "result": "ok"}],
              "jupyter": "stopped", "sync": "started", "unmount": "started"}
    left.write_text(json.dumps(record))

    def run(mode: str) -> dict:
        done = subprocess.run([sys.executable, "-c", source, str(volume), str(state), mode],
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    message = ("the previous instance (i-0abc) was interrupted at 14:02 UTC on 2026-11-29 (stop); "
               "the notice was handled: hooks ran (10-save ok), Jupyter stopped, then the disks' "
               "sync and the data volume's unmount started (their end cannot be recorded on the "
               "volume they end)")
    assert run("check") == {"changed": True, "record": record, "message": message}
    assert left.exists() and not state.exists()
    assert run("apply") == {"changed": True, "record": record, "message": message}
    assert not left.exists()
    assert json.loads((state / "previous-interruption.json").read_text()) == record
    assert run("apply") == {"changed": False, "record": record, "message": message}
    # A watcher that could not finish: said so, not dressed up as handled.
    left.write_text(json.dumps({**record, "state": "handling", "hooks": None}))
    assert run("apply")["message"] == ("the previous instance (i-0abc) was interrupted at 14:02 "
                                       "UTC on 2026-11-29 (stop); its notice handling was not "
                                       "finished (state 'handling')")
    left.write_text("{not json")
    assert run("apply")["changed"] is True
    assert not left.exists()
    assert (volume / ".spotbox" / "last-interruption.json.unreadable").exists()
    # No record on a fresh volume, none kept: nothing to tell.
    fresh = tmp_path / "fresh"
    (fresh / ".spotbox").mkdir(parents=True)
    done = subprocess.run([sys.executable, "-c", source, str(fresh), str(tmp_path / "none"),
                           "apply"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"changed": False, "record": None, "message": ""}
