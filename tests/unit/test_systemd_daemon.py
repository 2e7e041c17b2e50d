"""plugins/modules/systemd_daemon.py through Ansible on this machine, with a fake
systemctl that logs its calls and answers is-active and is-enabled from files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$*" >> "{log}"
case "$1" in
  is-active) cat "{state}/active" 2>/dev/null || echo inactive;;
  is-enabled) cat "{state}/enabled" 2>/dev/null || echo disabled;;
  restart) echo active > "{state}/active";;
  enable) echo enabled > "{state}/enabled";;
esac
"""


class Host:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.state = tmp_path / "systemd"
        self.state.mkdir()
        self.log = tmp_path / "systemctl.log"
        fake = self.bin / "systemctl"
        fake.write_text(FAKE_SYSTEMCTL.format(log=self.log, state=self.state))
        fake.chmod(0o755)
        self.units = tmp_path / "units"
        self.units.mkdir()

    def args(self, config: str = '{"a": 1}\n', unit: str = "[Service]\nExecStart=/bin/true\n"):
        return {"name": "watch", "unit": unit, "unit_dir": str(self.units),
                "directories": [{"path": str(self.tmp / "etc" / "hooks")}],
                "files": [{"path": str(self.tmp / "etc" / "hooks" / "prog"),
                           "content": "#!/bin/sh\n", "mode": "0755"},
                          {"path": str(self.tmp / "etc" / "hooks" / "conf.json"),
                           "content": config}]}

    def run(self, args: dict, *flags: str) -> dict:
        """The module's result; the systemctl calls it made are in self.calls()."""
        self.log.write_text("")
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ['PATH']}",
               "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
               "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
        out = subprocess.run(
            [str(Path(sys.executable).with_name("ansible")), "localhost", "-m", "systemd_daemon",
             "-a", json.dumps(args), "-e", f"ansible_python_interpreter={sys.executable}",
             *flags], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        return json.loads(out.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]

    def calls(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines()
                if not line.startswith("is-")]


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def test_installs_enables_and_starts_then_changes_nothing(host: Host) -> None:
    first = host.run(host.args())
    assert first["changed"] and first["restarted"], first
    prog = host.tmp / "etc" / "hooks" / "prog"
    assert prog.read_text() == "#!/bin/sh\n"
    assert oct(prog.stat().st_mode & 0o7777) == "0o755"
    assert oct((host.tmp / "etc" / "hooks").stat().st_mode & 0o7777) == "0o755"
    assert (host.units / "watch.service").read_text() == "[Service]\nExecStart=/bin/true\n"
    assert host.calls() == ["daemon-reload", "enable watch.service", "restart watch.service"]
    again = host.run(host.args())
    assert not again["changed"] and again["changed_paths"] == [], again
    assert host.calls() == []


def test_a_changed_file_restarts_without_reloading_systemd(host: Host) -> None:
    host.run(host.args())
    result = host.run(host.args(config='{"a": 2}\n'), "--diff")
    assert result["changed"] and result["restarted"]
    assert result["changed_paths"] == [str(host.tmp / "etc" / "hooks" / "conf.json")]
    assert host.calls() == ["restart watch.service"]
    [diff] = result["diff"]
    assert (diff["before"], diff["after"]) == ('{"a": 1}\n', '{"a": 2}\n')


def test_a_changed_unit_reloads_systemd(host: Host) -> None:
    host.run(host.args())
    host.run(host.args(unit="[Service]\nExecStart=/bin/false\n"))
    assert host.calls() == ["daemon-reload", "restart watch.service"]


def test_a_stopped_service_is_started_and_a_wrong_mode_fixed(host: Host) -> None:
    host.run(host.args())
    (host.state / "active").write_text("failed\n")
    result = host.run(host.args())
    assert result["changed"] and result["changed_paths"] == []
    assert host.calls() == ["restart watch.service"]
    prog = host.tmp / "etc" / "hooks" / "prog"
    prog.chmod(0o777)
    assert host.run(host.args())["changed_paths"] == [str(prog)]
    assert oct(prog.stat().st_mode & 0o7777) == "0o755"


def test_check_mode_says_what_would_change_and_changes_nothing(host: Host) -> None:
    result = host.run(host.args(), "--check")
    assert result["changed"] and result["restarted"]
    assert len(result["changed_paths"]) == 4  # the folder, two files, the unit
    assert not (host.tmp / "etc").exists() and not (host.units / "watch.service").exists()
    assert host.calls() == []
    host.run(host.args())
    assert not host.run(host.args(), "--check")["changed"]


def test_a_relative_path_or_a_bad_mode_is_refused(host: Host) -> None:
    args = host.args()
    args["files"][0]["path"] = "etc/prog"
    assert host.run(args)["msg"] == "systemd_daemon: path 'etc/prog' must be absolute"
    args = host.args()
    args["files"][1]["mode"] = "rw-r--r--"
    assert "must be octal, such as '0644'" in host.run(args)["msg"]
    assert host.calls() == []
