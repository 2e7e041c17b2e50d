"""async_job_wait: waits on the job's lock, then reads the result Ansible writes."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import async_job_wait as job


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data))


def test_returns_the_final_result_of_an_ended_job(tmp_path: Path) -> None:
    results = tmp_path / "123.456"
    write(results, {"rc": 0, "stdout": "CHANGED environment", "changed": True})
    result = job.wait_for_job(str(results), str(tmp_path / "no.lock"), 5)
    assert result == {"rc": 0, "stdout": "CHANGED environment", "changed": True, "finished": True}


def test_waits_for_the_lock_then_for_the_result(tmp_path: Path) -> None:
    results, lock = tmp_path / "job", tmp_path / "build.lock"
    write(results, {"started": True, "finished": False, "ansible_job_id": "1"})
    # A job in another process: holds the lock 0.5 s, then its result appears.
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, json, sys, time\n"
        f"h = open({str(lock)!r}, 'w'); fcntl.flock(h, fcntl.LOCK_EX)\n"
        "print('held', flush=True); time.sleep(0.5); h.close(); time.sleep(0.1)\n"
        f"open({str(results)!r}, 'w').write(json.dumps({{'rc': 3, 'stderr': 'boom'}}))\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    started = time.monotonic()
    result = job.wait_for_job(str(results), str(lock), 10)
    waited = time.monotonic() - started
    holder.wait()
    assert result == {"rc": 3, "stderr": "boom", "finished": True}
    assert 0.4 < waited < 3


def test_gives_up_after_the_timeout_even_while_the_lock_is_held(tmp_path: Path) -> None:
    results, lock = tmp_path / "job", tmp_path / "build.lock"
    write(results, {"started": True, "finished": False, "ansible_job_id": "1"})
    handle = lock.open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)  # flock locks are per open file: ours blocks too
    try:
        started = time.monotonic()
        result = job.wait_for_job(str(results), str(lock), 0.3)
        assert time.monotonic() - started < 2
    finally:
        handle.close()
    assert result == {"started": True, "finished": False, "ansible_job_id": "1"}


def test_a_half_written_or_missing_result_is_waited_for(tmp_path: Path) -> None:
    results = tmp_path / "job"
    results.write_text('{"rc": ')
    now = [0.0]
    seen = []

    def sleep(seconds: float) -> None:
        now[0] += seconds
        seen.append(seconds)
        if len(seen) == 3:
            write(results, {"rc": 0})

    result = job.wait_for_job(str(results), str(tmp_path / "none"), 60,
                              clock=lambda: now[0], sleep=sleep)
    assert result == {"rc": 0, "finished": True}
    assert seen == [job.POLL_SECONDS] * 3
    assert job.read_result(str(tmp_path / "missing")) == {}


def test_the_alarm_is_cleared_afterwards(tmp_path: Path) -> None:
    job.wait_for_lock(str(tmp_path / "none"), 5)
    lock = tmp_path / "free.lock"
    lock.write_text("")
    job.wait_for_lock(str(lock), 5)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


PLAYBOOK = """
- name: A background job that holds a lock, then its result
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Start the job
      ansible.builtin.shell: |
        exec 9>"{lock}" && flock 9
        sleep 1; echo out; echo "went wrong" >&2; exit {rc}
      async: 60
      poll: 0
      register: job
    - name: Wait for it
      async_job_wait:
        results_file: "{{{{ job.results_file }}}}"
        lock: "{lock}"
        timeout: 30
"""


def run_playbook(tmp_path: Path, rc: int) -> dict:
    """Ansible's own async machinery on the controller: the result format is the contract."""
    root = Path(__file__).resolve().parents[2]
    playbook = tmp_path / "job.yml"
    playbook.write_text(PLAYBOOK.format(lock=tmp_path / "job.lock", rc=rc))
    env = {**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_ASYNC_DIR": str(tmp_path / "async")}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inventory/localhost.yml",
         str(playbook)], cwd=root, env=env, capture_output=True, text=True, check=False).stdout
    return json.loads(out)["plays"][0]["tasks"][1]["hosts"]["localhost"]


def test_a_real_async_job_that_succeeds(tmp_path: Path) -> None:
    result = run_playbook(tmp_path, 0)
    assert not result.get("failed")
    assert result["finished"] is True
    assert (result["rc"], result["stdout"], result["stderr"]) == (0, "out", "went wrong")


def test_a_real_async_job_that_fails(tmp_path: Path) -> None:
    result = run_playbook(tmp_path, 3)
    assert result["failed"] is True
    assert result["finished"] is True
    assert (result["rc"], result["stderr"]) == (3, "went wrong")
