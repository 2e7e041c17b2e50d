"""background_job starts a detached job that holds a lock and writes its result;
background_job_wait blocks on that lock and reads the result."""

from __future__ import annotations

import fcntl
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import background_job as starter
import background_job_wait as waiter
import pytest

ME = pwd.getpwuid(os.getuid())


def start(folder: Path, script: str, user: pwd.struct_passwd = ME, timeout: float = 60,
          name: str = "build") -> dict:
    files = starter.job_files(str(folder), name)
    starter.ensure_folder(str(folder), user, check_mode=False)
    return {**starter.start(script, str(folder), user, files, timeout), **files}


def test_a_job_runs_detached_in_its_folder_and_its_result_is_waited_for(tmp_path: Path) -> None:
    folder = tmp_path / "envs"
    started = time.monotonic()
    job = start(folder, "sleep 1; pwd; echo went wrong >&2; exit 3")
    assert time.monotonic() - started < 0.9, "start must not wait for the job"
    result = waiter.wait_for_job(job, 30)
    assert time.monotonic() - started >= 1
    assert result == {"id": job["id"], "rc": 3, "stdout": str(folder),
                      "stderr": "went wrong", "finished": True}
    assert (folder.stat().st_mode & 0o7777, folder.stat().st_uid) == (0o755, ME.pw_uid)


def test_a_second_job_of_the_same_name_waits_for_the_first(tmp_path: Path) -> None:
    order = tmp_path / "order"
    first = start(tmp_path, f"sleep 1; echo first >> {order}")
    second = start(tmp_path, f"echo second >> {order}")
    result = waiter.wait_for_job(second, 30)
    assert result["rc"] == 0 and result["id"] == second["id"]
    assert order.read_text() == "first\nsecond\n"
    assert first["result_file"] == second["result_file"], "one result file per name"


def test_a_job_past_its_timeout_is_stopped_with_its_children(tmp_path: Path) -> None:
    job = start(tmp_path, "sleep 30 & echo $! > child; wait", timeout=0.5)
    result = waiter.wait_for_job(job, 30)
    assert (result["rc"], result["timed_out"]) == (None, True)
    assert result["msg"] == "the job was stopped after 0.5 s (its timeout)"
    child = int((tmp_path / "child").read_text())
    time.sleep(0.2)
    assert not waiter.alive(child), "the job's children must be stopped with it"


def test_a_job_killed_before_its_result_is_reported(tmp_path: Path) -> None:
    job = start(tmp_path, "sleep 30")
    time.sleep(0.3)  # it holds the lock now
    os.kill(job["pid"], signal.SIGKILL)
    result = waiter.wait_for_job(job, 30)
    assert result["finished"] is True and result["rc"] is None
    assert f"pid {job['pid']}" in result["msg"] and "without writing its result" in result["msg"]


def test_a_job_reaped_while_its_state_is_read_is_gone(monkeypatch) -> None:
    # The wait wakes when the job lets go of its lock, just before the job
    # exits: /proc/PID/stat can vanish between the open and the read (ESRCH).
    job = subprocess.Popen(["sleep", "30"])
    real_open = open

    def open_then_reap(path, *args, **kwargs):
        handle = real_open(path, *args, **kwargs)
        job.kill()
        job.wait()
        return handle

    monkeypatch.setattr(waiter, "open", open_then_reap, raising=False)
    assert waiter.alive(job.pid) is False


def test_gives_up_after_the_timeout_while_the_lock_is_held(tmp_path: Path) -> None:
    lock = tmp_path / "build.lock"
    handle = lock.open("w")
    fcntl.flock(handle, fcntl.LOCK_EX)  # flock locks are per open file: ours blocks too
    job = {"id": "x", "pid": os.getpid(), "lock": str(lock), "result_file": str(tmp_path / "r")}
    try:
        started = time.monotonic()
        assert waiter.wait_for_job(job, 0.3) == {"finished": False}
        assert time.monotonic() - started < 2
    finally:
        handle.close()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0), "the alarm must be cleared"


def test_an_earlier_result_is_not_taken_for_this_job(tmp_path: Path) -> None:
    """The lock free, the file holding another job's result: wait for ours."""
    result_file = tmp_path / "result.json"
    result_file.write_text(json.dumps({"id": "earlier", "rc": 0}))
    job = {"id": "ours", "pid": os.getpid(), "lock": str(tmp_path / "none"),
           "result_file": str(result_file)}
    now, seen = [0.0], []

    def sleep(seconds: float) -> None:
        now[0] += seconds
        seen.append(seconds)
        if len(seen) == 3:
            result_file.write_text(json.dumps({"id": "ours", "rc": 0}))

    result = waiter.wait_for_job(job, 60, clock=lambda: now[0], sleep=sleep)
    assert result == {"id": "ours", "rc": 0, "finished": True}
    assert seen == [waiter.POLL_SECONDS] * 3


def test_the_folder_is_made_or_mended_once(tmp_path: Path) -> None:
    folder = tmp_path / "envs"
    assert starter.ensure_folder(str(folder), ME, check_mode=True) is True
    assert not folder.exists(), "check mode makes nothing"
    assert starter.ensure_folder(str(folder), ME, check_mode=False) is True
    assert starter.ensure_folder(str(folder), ME, check_mode=False) is False
    folder.chmod(0o777)
    assert starter.ensure_folder(str(folder), ME, check_mode=False) is True
    assert folder.stat().st_mode & 0o7777 == 0o755


needs_root = pytest.mark.skipif(os.getuid() != 0, reason="running a job as another user needs root")


@pytest.fixture
def open_folder():
    """A folder another user can reach (pytest's tmp_path is root's alone)."""
    top = Path(tempfile.mkdtemp(prefix="spotbox-job-"))
    top.chmod(0o755)
    yield top
    subprocess.run(["rm", "-rf", str(top)], check=True)


@needs_root
def test_a_job_runs_as_its_user_with_their_home(open_folder: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    job = start(open_folder / "envs", 'id -un; echo "$HOME"; touch made', user=nobody)
    result = waiter.wait_for_job(job, 30)
    assert (result["rc"], result["stdout"]) == (0, f"nobody\n{nobody.pw_dir}")
    assert (open_folder / "envs" / "made").stat().st_uid == nobody.pw_uid


@needs_root
def test_a_job_that_cannot_start_says_why(open_folder: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    folder = open_folder / "envs"
    folder.mkdir(mode=0o700)  # root's: nobody cannot enter it
    files = starter.job_files(str(folder), "build")
    with pytest.raises(OSError, match="Permission denied"):
        starter.start("true", str(folder), nobody, files, 60)


PLAYBOOK = """
- name: A background job, then its result
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Start the job
      background_job:
        path: "{folder}"
        name: build
        user: "{user}"
        script: |
          sleep 2; date +%s.%N; echo "went wrong" >&2; exit {rc}
      register: job
    - name: Wait for it
      background_job_wait:
        job: "{{{{ job }}}}"
        timeout: 30
"""


def run_playbook(tmp_path: Path, rc: int) -> tuple[dict, dict]:
    """Both modules through Ansible (AnsiballZ, pipelining) on the controller."""
    root = Path(__file__).resolve().parents[2]
    playbook = tmp_path / "job.yml"
    playbook.write_text(PLAYBOOK.format(folder=tmp_path / "envs", user=ME.pw_name, rc=rc))
    env = {**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json"}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inventory/localhost.yml",
         str(playbook)], cwd=root, env=env, capture_output=True, text=True, check=False).stdout
    started, waited = json.loads(out)["plays"][0]["tasks"]
    return started, waited["hosts"]["localhost"]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_through_ansible_a_job_that_succeeds(tmp_path: Path) -> None:
    started, result = run_playbook(tmp_path, 0)
    assert not result.get("failed")
    assert (result["finished"], result["rc"], result["stderr"]) == (True, 0, "went wrong")
    job_ended = float(result["stdout"])
    assert _epoch(started["task"]["duration"]["end"]) < job_ended - 1, \
        "the start task must return while the job runs"


def test_through_ansible_a_job_that_fails(tmp_path: Path) -> None:
    _, result = run_playbook(tmp_path, 3)
    assert result["failed"] is True
    assert (result["rc"], result["stderr"]) == (3, "went wrong")
    assert result["msg"] == "the job failed (rc 3)"


WAIT_THROUGH_THE_ROLE = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Wait for a job through the conda role
      ansible.builtin.include_role:
        name: conda
        tasks_from: finish
      vars:
        conda_backend: uv
        conda_user: {user}
        __conda_build_job: {{id: x, pid: 1, lock: "{lock}", result_file: "{lock}/r.json"}}
"""


def test_through_the_role_an_error_of_the_wait_itself_is_told(tmp_path: Path) -> None:
    # A folder where the lock should be: the wait raises (IsADirectoryError).
    # Ansible drops a failed module's message when failed_when hides the
    # failure; the role must still say what went wrong.
    root = Path(__file__).resolve().parents[2]
    playbook = tmp_path / "wait.yml"
    playbook.write_text(WAIT_THROUGH_THE_ROLE.format(user=ME.pw_name, lock=tmp_path))
    env = {**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inventory/localhost.yml",
         str(playbook)], cwd=root, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    tasks = json.loads(done.stdout)["plays"][0]["tasks"]
    failed = [task for task in tasks if task["hosts"]["localhost"].get("failed")]
    assert [task["task"]["name"] for task in failed] == [
        "conda : Wait for the environment's build to end and read its result"]
    assert "Is a directory" in failed[0]["hosts"]["localhost"]["msg"]
