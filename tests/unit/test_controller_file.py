"""controller_file writes a file on the controller from the action itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = """
- name: Write a controller file
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write it
      controller_file:
        dest: "{dest}"
        content: "{content}"
        mode: "{mode}"
"""


def write(tmp_path: Path, dest: Path, content: str = "Host box\\n", mode: str = "0600",
          *flags: str) -> dict:
    playbook = tmp_path / "write.yml"
    playbook.write_text(PLAYBOOK.format(dest=dest, content=content, mode=mode))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json"}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inventory/localhost.yml",
         str(playbook), *flags], cwd=ROOT, env=env, capture_output=True, text=True,
        check=False).stdout
    return json.loads(out)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_writes_once_with_its_mode_and_a_private_new_folder(tmp_path: Path) -> None:
    dest = tmp_path / "ssh" / "spotbox_config"
    assert write(tmp_path, dest)["changed"] is True
    assert dest.read_text() == "Host box\n"
    assert dest.stat().st_mode & 0o7777 == 0o600
    assert dest.parent.stat().st_mode & 0o7777 == 0o700
    assert write(tmp_path, dest)["changed"] is False
    dest.chmod(0o644)
    assert write(tmp_path, dest)["changed"] is True, "a changed mode is mended"
    assert dest.stat().st_mode & 0o7777 == 0o600
    leftovers = sorted(p.name for p in dest.parent.iterdir())
    assert leftovers == ["spotbox_config"], "no partial file left"


def test_check_mode_writes_nothing_and_diff_shows_the_change(tmp_path: Path) -> None:
    dest = tmp_path / "config"
    dest.write_text("old\n")
    result = write(tmp_path, dest, "new\\n", "0600", "--check", "--diff")
    assert result["changed"] is True
    assert dest.read_text() == "old\n"
    assert (result["diff"]["before"], result["diff"]["after"]) == ("old\n", "new\n")


def test_a_mode_that_is_not_octal_is_refused(tmp_path: Path) -> None:
    result = write(tmp_path, tmp_path / "config", "x", "rw-------")
    assert result["failed"] is True
    assert "mode 'rw-------' is not an octal string" in result["msg"]
    assert not (tmp_path / "config").exists()


def test_a_file_it_cannot_write_is_named(tmp_path: Path) -> None:
    result = write(tmp_path, "/proc/spotbox_config")
    assert result["failed"] is True
    assert result["msg"].startswith("controller_file could not write /proc/spotbox_config:")
