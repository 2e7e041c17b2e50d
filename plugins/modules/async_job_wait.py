#!/usr/bin/python
"""Ansible module: wait for a background job that holds a lock, and return its result."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: async_job_wait
short_description: Wait for an async job that holds a lock while it runs, and return its result
description:
  - For a job started with C(async) and C(poll) set to 0 whose command takes an exclusive
    C(flock) on O(lock) for its lifetime. Blocks on that lock, so it returns the moment
    the job ends, without polling; then reads the job's result file, as
    M(ansible.builtin.async_status) does, in the same round trip.
  - Should the job not hold the lock yet, or its result not be written yet (Ansible
    writes it an instant after the command ends), polls the result file every 0.05 s.
  - Fails when the job has not ended within O(timeout) seconds, or when it failed
    (with its rc, stdout and stderr).
  - Changes nothing; runs in check mode.
options:
  results_file:
    description: The job's result file (C(results_file) of the async task's result).
    type: path
    required: true
  lock:
    description: The file the job's command holds an exclusive C(flock) on while it runs.
    type: path
    required: true
  timeout:
    description: Seconds to wait at most.
    type: int
    default: 3600
author: spotbox
"""

EXAMPLES = r"""
- name: Wait for the build
  async_job_wait:
    results_file: "{{ build_job.results_file }}"
    lock: /opt/build.lock
  register: build
"""

RETURN = r"""
finished:
  description: Whether the job has ended.
  returned: always
  type: bool
rc:
  description: The job's return code (and the rest of its result, as async_status returns it).
  returned: when the job ended
  type: int
"""

import fcntl
import json
import signal
import time
from collections.abc import Callable

from ansible.module_utils.basic import AnsibleModule

POLL_SECONDS = 0.05


def read_result(results_file: str) -> dict:
    """The job's result file, {} while missing or half-written."""
    try:
        with open(results_file, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


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


def wait_for_job(results_file: str, lock: str, timeout: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> dict:
    """The job's final result with finished=True, or what is known with finished=False
    once timeout seconds have passed. async_wrapper writes {"started": true, ...}
    while the job runs and the command's own result, without "started", at its end."""
    deadline = clock() + timeout
    wait_for_lock(lock, timeout)
    while True:
        result = read_result(results_file)
        if result and "started" not in result:
            return {**result, "finished": True}
        if clock() >= deadline:
            return {**result, "finished": False}
        sleep(POLL_SECONDS)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "results_file": {"type": "path", "required": True},
            "lock": {"type": "path", "required": True},
            "timeout": {"type": "int", "default": 3600},
        },
        supports_check_mode=True,
    )
    params = module.params
    result = wait_for_job(params["results_file"], params["lock"], params["timeout"])
    result.pop("invocation", None)
    if not result["finished"]:
        result.pop("msg", None)
        module.fail_json(msg=f"the job did not end within {params['timeout']} s "
                             f"(its result file: {params['results_file']})", **result)
    if result.pop("failed", False):
        module.fail_json(**{"msg": "the job failed", **result})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
