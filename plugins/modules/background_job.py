#!/usr/bin/python
"""Ansible module: start a shell script in the background, as a given user."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: background_job
short_description: Start a shell script in the background as a user (background_job_wait waits)
description:
  - Creates the job's folder O(path) (owned by O(user), mode 0755) when missing, then
    starts O(script) with C(/bin/sh) as O(user) in that folder, detached from the
    connection, and returns at once. Used where Ansible's C(async) would do, in one
    round trip where C(async) takes several (it cannot use pipelining), and with the
    folder made in the same run.
  - The job takes an exclusive C(flock) on a lock file in O(path) before it runs, so
    a job started while an earlier one with the same O(name) still runs waits for it.
    It writes its result (rc, stdout, stderr, its id) to a file in O(path) when it
    ends, then lets go of the lock; M(background_job_wait) blocks on that lock and
    reads the result.
  - The job is stopped (SIGTERM, then SIGKILL 10 s later) after O(timeout) seconds.
  - In check mode only tells whether the folder would change; no job starts.
options:
  path:
    description: The job's folder, where it runs and keeps its lock and result files.
    type: path
    required: true
  name:
    description: The job's name, part of its files' names.
    type: str
    required: true
  script:
    description: The shell script (C(/bin/sh -c)); its output is kept in the result.
    type: str
    required: true
  user:
    description: The user the script runs as (and who owns O(path)); changing user needs root.
    type: str
    required: true
  timeout:
    description: Seconds after which the job is stopped.
    type: int
    default: 3600
author: spotbox
"""

EXAMPLES = r"""
- name: Start the build
  background_job:
    path: /opt/spotbox/envs
    name: build
    user: ubuntu
    script: ./build.sh
  become: true
  register: build_job

- name: Wait for the build
  background_job_wait:
    job: "{{ build_job }}"
"""

RETURN = r"""
id:
  description: The job's id, written into its result (an earlier job's result is told apart by it).
  returned: unless check mode
  type: str
pid:
  description: The job's process id.
  returned: unless check mode
  type: int
lock:
  description: The lock file the job holds while it runs.
  returned: always
  type: str
result_file:
  description: Where the job writes its result (JSON) when it ends.
  returned: always
  type: str
"""

import contextlib
import fcntl
import json
import os
import pwd
import signal
import subprocess
import sys
import uuid
from typing import IO

from ansible.module_utils.basic import AnsibleModule

KILL_GRACE_SECONDS = 10
FOLDER_MODE = 0o755  # what the job builds there is for others to run too


def job_files(path: str, name: str) -> dict:
    return {"lock": os.path.join(path, f".spotbox-{name}.lock"),
            "result_file": os.path.join(path, f".spotbox-{name}.result.json")}


def ensure_folder(path: str, user: pwd.struct_passwd, check_mode: bool) -> bool:
    """The job's folder, owned by user with mode 0755; whether it changed."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        if not check_mode:
            os.makedirs(path, mode=FOLDER_MODE)
            os.chmod(path, FOLDER_MODE)  # makedirs' mode is masked by the umask
            os.chown(path, user.pw_uid, user.pw_gid)
        return True
    owner = (found.st_uid, found.st_gid)
    changed = owner != (user.pw_uid, user.pw_gid) or found.st_mode & 0o7777 != FOLDER_MODE
    if changed and not check_mode:
        os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(path, FOLDER_MODE)
    return changed


def become(user: pwd.struct_passwd) -> None:
    """Take user's identity and login environment (as sudo -H -u user would)."""
    if os.getuid() != user.pw_uid:
        os.initgroups(user.pw_name, user.pw_gid)
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)


def write_result(result_file: str, result: dict) -> None:
    """Whole or not at all: background_job_wait never reads half a result."""
    partial = f"{result_file}.{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    os.replace(partial, result_file)


def run_job(script: str, lock: IO[str], result_file: str, job_id: str, timeout: float) -> int:
    """Hold the lock, run the script, write its result; the job's own process."""
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # after an earlier job of the same name
        proc = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
            result = {"rc": proc.returncode}
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                stdout, stderr = proc.communicate(timeout=KILL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                stdout, stderr = proc.communicate()
            result = {"rc": None, "timed_out": True,
                      "msg": f"the job was stopped after {timeout:g} s (its timeout)"}
        # Without the last newline, as Ansible's command module returns output.
        write_result(result_file, {**result, "id": job_id, "stdout": stdout.rstrip("\r\n"),
                                   "stderr": stderr.rstrip("\r\n")})
    return 0


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
        os.killpg(pid, sig)


def start(script: str, path: str, user: pwd.struct_passwd, files: dict, timeout: float) -> dict:
    """Start the job detached (its own session, no tie to our stdio); {"id", "pid"}.

    Raises OSError with the job's reason when it could not start as user."""
    job_id = uuid.uuid4().hex
    report_read, report_write = os.pipe()
    first = os.fork()
    if first == 0:  # pragma: no cover - runs in the forked processes
        try:
            os.close(report_read)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)  # the job is nobody's child but init's: it outlives the connection
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.closerange(3, report_write)
            os.closerange(report_write + 1, 65536)
            os.chdir(path)
            become(user)
            lock = open(files["lock"], "a", encoding="utf-8")  # noqa: SIM115 - the job's to close
            os.write(report_write, f"started {os.getpid()}".encode())
            os.close(report_write)
        except BaseException as error:  # told to the parent, whatever it is
            with contextlib.suppress(OSError):
                os.write(report_write, f"error {error}".encode())
            os._exit(1)
        code = 1  # no result written: background_job_wait says the job died
        try:
            code = run_job(script, lock, files["result_file"], job_id, timeout)
        finally:
            os._exit(code)  # never back into the module's code
    os.close(report_write)
    os.waitpid(first, 0)
    with os.fdopen(report_read, encoding="utf-8") as report:
        word, _, rest = report.read().partition(" ")
    if word != "started":
        raise OSError(rest or "the job's process ended before it started")
    return {"id": job_id, "pid": int(rest)}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "name": {"type": "str", "required": True},
            "script": {"type": "str", "required": True},
            "user": {"type": "str", "required": True},
            "timeout": {"type": "int", "default": 3600},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        user = pwd.getpwnam(params["user"])
    except KeyError:
        module.fail_json(msg=f"user {params['user']!r} does not exist on this host")
    files = job_files(params["path"], params["name"])
    try:
        changed = ensure_folder(params["path"], user, module.check_mode)
        if module.check_mode:
            module.exit_json(changed=changed, **files)
        sys.stdout.flush()
        job = start(params["script"], params["path"], user, files, params["timeout"])
    except OSError as error:
        module.fail_json(msg=f"could not start the job {params['name']} as {params['user']} "
                             f"in {params['path']}: {error}", **files)
    module.exit_json(changed=changed, **job, **files)


if __name__ == "__main__":
    main()
