"""tests/run.py: CI shows only the end of the output, so a failed step's error
lines must be printed again after the timing breakdown."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests import run

PRINT_AND_FAIL = ("import sys; print('TASK [conda : Wait]'); "
                  "print('fatal: [box]: FAILED! => {\"msg\": \"uv could not build\"}'); "
                  "print('PLAY RECAP'); sys.exit(2)")


def test_a_step_passes_its_output_through_and_keeps_its_error_lines(capfd) -> None:
    code, reasons = run.run_step([sys.executable, "-c", PRINT_AND_FAIL], {})
    assert code == 2
    assert reasons == ['fatal: [box]: FAILED! => {"msg": "uv could not build"}']
    assert "PLAY RECAP" in capfd.readouterr().out


def test_only_the_last_error_lines_are_kept_each_shortened() -> None:
    many = f"for i in range(20): print('ERROR', i, 'x' * {run.REASON_WIDTH})"
    code, reasons = run.run_step([sys.executable, "-c", many], {})
    assert code == 0
    assert len(reasons) == run.REASONS_KEPT
    assert reasons[-1].startswith("ERROR 19 ") and reasons[-1].endswith(" [...]")


def test_the_error_lines_come_after_the_breakdown(monkeypatch, capsys) -> None:
    monkeypatch.setattr(run, "unit_steps", lambda: [
        ("unit: fails", [sys.executable, "-c", PRINT_AND_FAIL]),
        ("unit: passes", [sys.executable, "-c", "print('fine')"]),
    ])
    assert run.main(["unit"]) == 1
    end = capsys.readouterr().out.split("===== timing breakdown", 1)[1]
    assert "===== unit: fails failed (exit 2); its last error lines:" in end
    assert 'fatal: [box]: FAILED! => {"msg": "uv could not build"}' in end
    assert "unit: passes failed" not in end
    assert end.rstrip().endswith("suite: 1 passed, 1 failed")


def test_an_unknown_step_is_named_with_the_usage() -> None:
    done = subprocess.run([sys.executable, "tests/run.py", "nonsense"], capture_output=True,
                          text=True, check=False, cwd=run.ROOT)
    assert done.returncode == 2
    assert "no such step 'nonsense'; Usage: tests/run.py all | lint" in done.stderr


FAIL_ON_THE_NETWORK_ONCE = (
    "import pathlib, sys; mark = pathlib.Path(sys.argv[1]); first = not mark.exists(); "
    "mark.touch(); print('fatal: [box]: FAILED! => uv could not build: error sending request "
    "for url (https://pypi.org/simple/jupyterlab/)' if first else 'ok'); "
    "sys.exit(2 if first else 0)")


def test_a_scenario_that_failed_on_the_network_runs_once_more(monkeypatch, capsys,
                                                              tmp_path) -> None:
    monkeypatch.setattr(run, "molecule_steps", lambda names: [
        ("molecule: flaky", [sys.executable, "-c", FAIL_ON_THE_NETWORK_ONCE, str(tmp_path / "m")]),
    ])
    assert run.main(["molecule"]) == 0
    out = capsys.readouterr().out
    assert "===== molecule: flaky again: it failed on the network: fatal: [box]" in out
    assert "ok   molecule: flaky (2nd try)" in out


def test_other_failures_and_other_steps_are_not_run_again(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(run, "molecule_steps", lambda names: [
        ("molecule: broken", [sys.executable, "-c", PRINT_AND_FAIL]),
    ])
    monkeypatch.setattr(run, "unit_steps", lambda: [
        ("unit: flaky", [sys.executable, "-c", FAIL_ON_THE_NETWORK_ONCE, str(tmp_path / "u")]),
    ])
    assert run.main(["molecule"]) == 1
    assert run.main(["unit"]) == 1
    out = capsys.readouterr().out
    assert " again: " not in out
    assert "FAIL molecule: broken " in out and "FAIL unit: flaky " in out


# The conda role's failure message ends with the build's last three stderr lines;
# these were recorded from uv 0.13.9 and pip with an unreachable index.
UV_REFUSED = ("uv could not build the environment course from /opt/spotbox/envs/course."
              "requirements.txt: cause: client error (Connect) cause: tcp connect error "
              "cause: Connection refused (os error 111)")
UV_NO_DNS = ("uv could not build the environment course from /opt/spotbox/envs/course."
             "requirements.txt: cause: dns error cause: error resolving DNS cause: failed to "
             "lookup address information: Name or service not known")
PIP_REFUSED = ("WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, "
               "status=None)) after connection broken by 'NewConnectionError('<pip._vendor."
               "urllib3.connection.HTTPConnection object at 0x7f9e40039010>: Failed to establish "
               "a new connection: [Errno 111] Connection refused')': /simple/uv/ ERROR: Could not "
               "find a version that satisfies the requirement uv==0.13.8 (from versions: none)")
UV_MISSPELT = ("uv could not build the environment course from /opt/spotbox/envs/course."
               "requirements.txt: Because jupyterlabb was not found in the package registry and "
               "you require jupyterlabb, we can conclude that your requirements are unsatisfiable.")


@pytest.mark.parametrize("message", [UV_REFUSED, UV_NO_DNS, PIP_REFUSED])
def test_network_errors_are_told_apart(message: str) -> None:
    line = f"fatal: [spotbox-env]: FAILED! => msg: {message}"
    assert run.network_error(["TASK [x]", line]) == line


UNREACHABLE = ("fatal: [spotbox-env]: UNREACHABLE! => changed: false msg: 'Failed to connect to "
               "the host via ssh: ssh: connect to host 127.0.0.1 port 40022: Connection refused'")


@pytest.mark.parametrize("line", [f"fatal: [spotbox-env]: FAILED! => msg: {UV_MISSPELT}",
                                  UNREACHABLE])
def test_a_missing_package_or_a_box_that_does_not_answer_is_not_the_network(line: str) -> None:
    assert run.network_error([line]) is None


FIXTURES = run.ROOT / "tests" / "unit" / "fixtures"


def test_an_ansible_failure_keeps_the_lines_under_it() -> None:
    # Recorded from ansible-core 2.19 with callback_result_format=yaml (Molecule conda).
    errors = run.ErrorLines()
    for line in (FIXTURES / "ansible_failed_task.txt").read_text().splitlines(keepends=True):
        errors.feed(line)
    first, last = errors.lines()
    assert first.startswith("[ERROR]: Task failed: Action failed: uv could not build")
    assert last == ("fatal: [spotbox-env]: FAILED! => changed: false msg: 'uv could not build "
                    "the environment broken from /opt/spotbox/envs/broken.requirements.txt: "
                    "error: No solution found when resolving dependencies   cause: Because "
                    "jupyterlab-no-such-package-spotbox was not found in the package registry "
                    "and you require jupyterlab-no-such-package-spotbox, we can conclude that "
                    "your requirements are unsatisfiable.'")


def test_an_ignored_failure_is_not_kept() -> None:
    errors = run.ErrorLines()
    for line in ["fatal: [box]: FAILED! =>\n", "    msg: expected\n", "...ignoring\n",
                 "\n", "TASK [next] ****\n", "ok: [box]\n"]:
        errors.feed(line)
    assert errors.lines() == []


def test_a_step_ends_when_its_command_does_not_when_a_leftover_holds_the_pipe() -> None:
    leaves_a_sleeper = ("import subprocess, sys; subprocess.Popen(['sleep', '30']); "
                        "print('ERROR: left a sleeper'); sys.exit(3)")
    started = time.monotonic()
    code, reasons = run.run_step([sys.executable, "-c", leaves_a_sleeper], {})
    assert (code, reasons) == (3, ["ERROR: left a sleeper"])
    assert time.monotonic() - started < run.OUTPUT_GRACE_SECONDS + 5


def test_all_runs_two_lanes_at_once_and_prints_each_steps_output_whole(
        monkeypatch, capsys, tmp_path) -> None:
    mark = tmp_path / "lane-1-ran"
    # The integration step ends only once the unit step, in the other lane, has run.
    waits = (f"import pathlib, time\nfor _ in range(100):\n    print('waiting', flush=True)\n"
             f"    if pathlib.Path({str(mark)!r}).exists(): break\n    time.sleep(0.05)\n"
             "else:\n    raise SystemExit('ERROR: the other lane never ran')")
    monkeypatch.delenv("SPOTBOX_TEST_LANES", raising=False)
    monkeypatch.setattr(run, "lint_steps", lambda: [])
    monkeypatch.setattr(run, "molecule_steps", lambda names: [])
    monkeypatch.setattr(run, "integration_steps", lambda: [
        ("integration: waits", [sys.executable, "-c", waits])])
    monkeypatch.setattr(run, "unit_steps", lambda: [
        ("unit: marks", [sys.executable, "-c",
                         f"import pathlib, time; time.sleep(0.5); pathlib.Path({str(mark)!r})"
                         ".touch(); print('marked'); print('ERROR: unit fails'); exit(1)"])])
    assert run.main(["all"]) == 1
    out = capsys.readouterr().out
    # Each step's output comes in one piece under its header.
    waiting = out.split("===== integration: waits:", 1)[1].split("=====", 1)[0]
    assert "waiting" in waiting and "marked" not in waiting
    assert "(2 lanes at once" in out
    end = out.split("===== timing breakdown", 1)[1]
    assert "FAIL unit: marks" in end and "ok   integration: waits" in end
    assert "ERROR: unit fails" in end
    assert end.rstrip().endswith("suite: 1 passed, 1 failed")


def test_one_lane_when_asked(monkeypatch) -> None:
    monkeypatch.setenv("SPOTBOX_TEST_LANES", "1")
    monkeypatch.setattr(run, "integration_steps", lambda: [("integration: x", ["true"])])
    assert [len(lane) for lane in run.lanes("all", ["all"])] == [
        len(run.unit_steps() + run.molecule_steps([]) + run.lint_steps()) + 1]
    monkeypatch.delenv("SPOTBOX_TEST_LANES")
    assert len(run.lanes("all", ["all"])) == 2
    assert run.lanes("nonsense", []) is None
