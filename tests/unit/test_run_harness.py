"""tests/run.py: CI shows only the end of the output, so a failed step's error
lines must be printed again after the timing breakdown."""

from __future__ import annotations

import subprocess
import sys

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
