#!/usr/bin/python
"""Ansible module: install a small daemon (its folders, files and systemd unit) and run it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: systemd_daemon
short_description: Install a small daemon's folders, files and systemd unit, and run it
description:
  - What a role would do with file, copy, template, a restart handler and
    systemd_service, in one round trip to the host. A role's re-run costs one
    module run instead of five (each is about half a second over SSH).
  - Creates the folders, writes the files and the unit
    (C(UNIT_DIR/NAME.service)) owned by root, each only when its content or mode
    differs; reloads systemd when the unit changed; restarts the service when
    anything changed, starts it when it is not running, and enables it at boot.
  - In check mode, says what would change and changes nothing. With diff, shows
    each changed file's old and new content.
options:
  name:
    description: The systemd unit's name, without C(.service).
    type: str
    required: true
  unit:
    description: The unit file's content.
    type: str
    required: true
  files:
    description: Files the service reads (its program, its configuration).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: str
        required: true
      content:
        description: The file's content.
        type: str
        required: true
      mode:
        description: Its mode, in octal.
        type: str
        default: "0644"
  directories:
    description: Folders to create first (never removed, their files left alone).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: str
        required: true
      mode:
        description: Its mode, in octal.
        type: str
        default: "0755"
  unit_dir:
    description: Where systemd reads administrators' units.
    type: str
    default: /etc/systemd/system
author: spotbox
"""

EXAMPLES = r"""
- name: Install the watcher, its configuration and its service, and run it
  systemd_daemon:
    name: spotbox-spot-watch
    unit: "{{ lookup('ansible.builtin.template', 'spot-watch.service.j2') }}"
    directories:
      - path: /etc/spotbox
    files:
      - path: /usr/local/sbin/spotbox-spot-watch
        content: "{{ lookup('ansible.builtin.file', 'spotbox-spot-watch.py') }}\n"
        mode: "0755"
      - path: /etc/spotbox/spot-watch.json
        content: "{{ config | to_nice_json }}\n"
  become: true
"""

RETURN = r"""
changed_paths:
  description: The folders and files written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
restarted:
  description: Whether the service was (or would be) restarted or started.
  returned: always
  type: bool
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


def file_state(path: str) -> tuple[bytes | None, int | None, tuple[int, int] | None]:
    """(content, mode, (uid, gid)) of a file; Nones when it is missing."""
    try:
        with open(path, "rb") as handle:
            content = handle.read()
        stat = os.stat(path)
    except FileNotFoundError:
        return None, None, None
    return content, stat.st_mode & 0o7777, (stat.st_uid, stat.st_gid)


def write_file(path: str, content: bytes, mode: int) -> None:
    """Write atomically (a temporary file in the same folder, renamed over), root's."""
    folder = os.path.dirname(path)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
        os.chmod(tmp, mode)
        os.chown(tmp, 0, 0)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plan_files(wanted: list[dict]) -> list[dict]:
    """The files whose content, mode or owner differ from what is wanted."""
    out = []
    for item in wanted:
        content = item["content"].encode("utf-8")
        mode = int(item["mode"], 8)
        before, before_mode, owner = file_state(item["path"])
        if before != content or before_mode != mode or owner != (0, 0):
            out.append({"path": item["path"], "content": content, "mode": mode,
                        "before": before})
    return out


def plan_directories(wanted: list[dict]) -> list[dict]:
    out = []
    for item in wanted:
        mode = int(item["mode"], 8)
        try:
            stat = os.stat(item["path"])
        except FileNotFoundError:
            out.append({"path": item["path"], "mode": mode, "exists": False})
            continue
        if stat.st_mode & 0o7777 != mode or (stat.st_uid, stat.st_gid) != (0, 0):
            out.append({"path": item["path"], "mode": mode, "exists": True})
    return out


def diff_of(change: dict) -> dict:
    before = change["before"]
    return {"before_header": change["path"], "after_header": change["path"],
            "before": before.decode("utf-8", "replace") if before is not None else "",
            "after": change["content"].decode("utf-8", "replace")}


def run_module() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "unit": {"type": "str", "required": True},
            "files": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "str", "required": True},
                "content": {"type": "str", "required": True},
                "mode": {"type": "str", "default": "0644"}}},
            "directories": {"type": "list", "elements": "dict", "default": [], "options": {
                "path": {"type": "str", "required": True},
                "mode": {"type": "str", "default": "0755"}}},
            "unit_dir": {"type": "str", "default": "/etc/systemd/system"},
        },
        supports_check_mode=True,
    )
    p = module.params
    for item in p["files"] + p["directories"]:
        if not os.path.isabs(item["path"]):
            module.fail_json(msg=f"systemd_daemon: path {item['path']!r} must be absolute")
        try:
            int(item["mode"], 8)
        except ValueError:
            module.fail_json(msg=f"systemd_daemon: mode {item['mode']!r} of {item['path']} "
                                 "must be octal, such as '0644'")
    unit_path = os.path.join(p["unit_dir"], f"{p['name']}.service")
    directories = plan_directories(p["directories"])
    files = plan_files(p["files"])
    unit = plan_files([{"path": unit_path, "content": p["unit"], "mode": "0644"}])
    changed_paths = [d["path"] for d in directories] + [f["path"] for f in files + unit]
    result = {"changed_paths": changed_paths, "restarted": False}
    if module._diff:  # AnsibleModule's own flag for --diff
        result["diff"] = [diff_of(f) for f in files + unit]

    systemctl = module.get_bin_path("systemctl", required=True)

    def systemctl_says(*args: str) -> str:
        _, out, _ = module.run_command([systemctl, *args])
        return out.strip()

    def systemctl_must(*args: str) -> None:
        rc, out, err = module.run_command([systemctl, *args])
        if rc != 0:
            module.fail_json(msg=f"systemctl {' '.join(args)} failed: {(err or out).strip()}",
                             **result)

    service = f"{p['name']}.service"
    if unit and unit[0]["before"] is None:  # a new unit: systemd does not know it yet
        active = enabled = False
    else:
        active = systemctl_says("is-active", service) == "active"
        enabled = systemctl_says("is-enabled", service) == "enabled"
    restart = bool(files or unit) or not active
    result["restarted"] = restart
    result["changed"] = bool(changed_paths) or restart or not enabled
    if module.check_mode or not result["changed"]:
        module.exit_json(**result)

    for folder in directories:
        if not folder["exists"]:
            os.makedirs(folder["path"], mode=folder["mode"], exist_ok=True)
        os.chmod(folder["path"], folder["mode"])
        os.chown(folder["path"], 0, 0)
    for change in files + unit:
        write_file(change["path"], change["content"], change["mode"])
    if unit:
        systemctl_must("daemon-reload")
    if not enabled:
        systemctl_must("enable", service)
    if restart:
        systemctl_must("restart", service)
    module.exit_json(**result)


def main() -> None:
    run_module()


if __name__ == "__main__":
    main()
