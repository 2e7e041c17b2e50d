#!/usr/bin/python
"""Ansible module: wait for a job started by background_job, and return its result."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: background_job_wait
short_description: Wait for a job started by background_job and return its result
description:
  - Blocks on the lock the job holds while it runs, so it returns the moment the job
    ends, without polling; then reads the job's result in the same round trip.
  - Tells the job's result from an earlier job's by its id; while the job waits for an
    earlier one of the same name, or has not taken the lock yet, it waits on.
  - Fails when the job has not ended within O(timeout) seconds, when it ended without
    a result (killed), or when it failed (with its rc, stdout and stderr).
  - Changes nothing; runs in check mode.
options:
  job:
    description: What M(background_job) returned (its C(id), C(pid), C(lock) and C(result_file)).
    type: dict
    required: true
  timeout:
    description: Seconds to wait at most.
    type: int
    default: 3600
author: spotbox
"""

EXAMPLES = r"""
- name: Wait for the build
  background_job_wait:
    job: "{{ build_job }}"
    timeout: 3610
  register: build
"""

RETURN = r"""
finished:
  description: Whether the job has ended.
  returned: always
  type: bool
rc:
  description: The job's return code (null when it was stopped at its timeout).
  returned: when the job ended
  type: int
stdout:
  description: The job's standard output.
  returned: when the job ended
  type: str
stderr:
  description: The job's standard error.
  returned: when the job ended
  type: str
"""

import fcntl
import json
import signal
import time
from collections.abc import Callable

from ansible.module_utils.basic import AnsibleModule

POLL_SECONDS = 0.05


def read_result(result_file: str) -> dict:
    """The job's result file, {} while missing (background_job writes it whole)."""
    try:
        with open(result_file, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie does not: whoever inherits it may be slow to reap it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    # ProcessLookupError: reaped between the open and the read (the job ends
    # the moment it lets go of the lock this module was waiting on).
    except (FileNotFoundError, ProcessLookupError):
        return False


def _time_is_up(*_: object) -> None:
    # Raised, not returned: Python would retry the interrupted flock (PEP 475).
    raise TimeoutError


def wait_for_lock(lock: str, seconds: float) -> None:
    """Block until nobody holds lock (or seconds pass); at once when there is no lock file."""
    try:
        handle = open(lock, encoding="utf-8")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return
    previous = signal.signal(signal.SIGALRM, _time_is_up)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except TimeoutError:
        pass  # the time is up: the result file tells what became of the job
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        handle.close()  # releases the lock


def wait_for_job(job: dict, timeout: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict:
    """The job's result with finished=True, or finished=False once timeout seconds
    have passed without it."""
    deadline = clock() + timeout
    while True:
        wait_for_lock(job["lock"], deadline - clock())
        gone = not alive(job["pid"])  # before reading: a job gone by now wrote all it will
        result = read_result(job["result_file"])
        if result.get("id") == job["id"]:
            return {**result, "finished": True}
        if gone:
            return {"finished": True, "rc": None, "stdout": "", "stderr": "",
                    "msg": f"the job (pid {job['pid']}) ended without writing its result "
                           f"to {job['result_file']}: was it killed?"}
        if clock() >= deadline:
            return {"finished": False}
        sleep(POLL_SECONDS)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "job": {"type": "dict", "required": True},
            "timeout": {"type": "int", "default": 3600},
        },
        supports_check_mode=True,
    )
    job, timeout = module.params["job"], module.params["timeout"]
    missing = [key for key in ("id", "pid", "lock", "result_file") if key not in job]
    if missing:
        module.fail_json(msg=f"job lacks {', '.join(missing)}: pass what background_job returned")
    result = wait_for_job(job, timeout)
    result.pop("id", None)
    if not result["finished"]:
        module.fail_json(msg=f"the job did not end within {timeout} s "
                             f"(its result file: {job['result_file']})", **result)
    if result.get("rc") != 0:
        module.fail_json(**{"msg": f"the job failed (rc {result.get('rc')})", **result})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
