"""Ansible action: write a small file on the controller, without running a module.

    controller_file:
      dest: ~/.ssh/spotbox_config   # the file on the controller (~ expanded)
      content: "..."                # its whole content
      mode: "0600"                  # an octal string (default 0600)

Writes when the content or the mode differ, atomically (a missing parent
folder is made with mode 0700); check mode and diff mode are supported.

ansible.builtin.copy with content runs two modules (stat, then copy) through a
new Python on the controller: about 1 s of CPU here, taken from the box's
build that runs meanwhile. This writes the file from the action itself.
"""

from __future__ import annotations

import os
import tempfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("dest", "content", "mode"))
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        for name in ("dest", "content"):
            if not isinstance(args.get(name), str):
                raise AnsibleActionFail(f"controller_file needs {name} (a string)")
        dest = os.path.expanduser(args["dest"])
        content = args["content"]
        try:
            mode = int(str(args.get("mode", "0600")), 8)
        except ValueError:
            raise AnsibleActionFail(f"controller_file: mode {args['mode']!r} is not "
                                    "an octal string such as '0600'") from None
        try:
            before = _read(dest)
            changed = before != content or os.stat(dest).st_mode & 0o7777 != mode
            if changed and not self._task.check_mode:
                _write(dest, content, mode)
        except OSError as error:
            raise AnsibleActionFail(f"controller_file could not write {dest}: {error}") from None
        result.update(changed=changed, dest=dest)
        if self._task.diff and before != content:
            result["diff"] = {"before": before or "", "after": content,
                              "before_header": dest, "after_header": dest}
        return result


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write(path: str, content: str, mode: int) -> None:
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, mode=0o700, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(content)
        os.chmod(partial, mode)
        os.replace(partial, path)
    except BaseException:
        os.unlink(partial)
        raise
