#!/usr/bin/env python3
"""Run spotbox's test steps, time each, print a breakdown and one closing line.

`all` runs in two lanes at once (lint, the unit tests and the Molecule
scenarios in one; the integration tests in the other): most of a step's time is
spent waiting on boxes, SSH and sleeps, not on the CPU, so two lanes on two
cores take about two thirds of the time of one. Each step's output is printed whole when it
ends. SPOTBOX_TEST_LANES=1 runs everything in one lane.

Usage: tests/run.py all | lint | unit | molecule [SCENARIO...] | integration
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def scenarios() -> list[str]:
    """Molecule scenarios, the local cloud's self-test ("localcloud") first."""
    found = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    return sorted(found, key=lambda name: name != "localcloud")


def lint_steps() -> list[tuple[str, list[str]]]:
    return [
        ("lint: yamllint", [str(BIN / "yamllint"), "--strict", "."]),
        ("lint: ansible-lint", [str(BIN / "ansible-lint"), "--offline", "--profile", "production"]),
        ("lint: ruff", [str(BIN / "ruff"), "check", "."]),
    ]


def unit_steps() -> list[tuple[str, list[str]]]:
    return [("unit: pytest", [sys.executable, "-m", "pytest", "-q", "--durations=12",
                               "tests/unit"])]


def molecule_steps(names: list[str]) -> list[tuple[str, list[str]]]:
    return [(f"molecule: {name}", [str(BIN / "molecule"), "test", "-s", name])
            for name in names or scenarios()]


def integration_steps() -> list[tuple[str, list[str]]]:
    return [("integration: pytest", [sys.executable, "-m", "pytest", "-q", "-rs",
                                     "--durations=25", "tests/integration"])]


# Lines that say why a step failed (Ansible, Molecule, pytest); CI shows only
# the end of the output, so they are printed again there.
REASON = re.compile(r"fatal:|failed:|FAILED|ERROR|CRITICAL|Error:|^E  |AssertionError|timed out")
REASONS_KEPT = 8
REASON_WIDTH = 800
OUTPUT_GRACE_SECONDS = 5


class ErrorLines:
    """The last REASONS_KEPT error lines of a step's output, each with the indented
    lines under it (Ansible's YAML result: "fatal: [box]: FAILED! =>" then "  msg: ...")
    joined on, minus errors Ansible ignored ("...ignoring" after them)."""

    def __init__(self) -> None:
        self.kept: deque[str] = deque(maxlen=REASONS_KEPT)
        self.open = False  # the last kept line takes the indented lines that follow

    def feed(self, line: str) -> None:
        text = line.strip()
        if self.open and text and line[:1].isspace():
            self.kept[-1] = f"{self.kept[-1]} {text}"
        elif text == "...ignoring" and self.kept:
            self.kept.pop()
            self.open = False
        else:
            self.open = bool(REASON.search(line))
            if self.open:
                self.kept.append(text)

    def lines(self) -> list[str]:
        return [shorten(line) for line in self.kept]


def run_step(cmd: list[str], env: dict[str, str],
             out: list[str] | None = None) -> tuple[int, list[str]]:
    """Run cmd, passing its output through (or into out, when given); its exit code
    and its last error lines."""
    errors = ErrorLines()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")

    def pass_through() -> None:
        for line in proc.stdout:
            if out is None:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                out.append(line)
            errors.feed(line)

    reader = threading.Thread(target=pass_through, daemon=True)
    reader.start()
    code = proc.wait()
    # A process the step left behind may hold the pipe open: the step is over
    # when cmd exits, not when its output ends.
    reader.join(timeout=OUTPUT_GRACE_SECONDS)
    return code, errors.lines()


# What uv and pip say when PyPI or the network let them down (recorded examples
# in tests/unit/test_run_harness.py): the boxes download from PyPI, so a
# Molecule scenario that failed with one of these is run once more (said in the
# output), and fails the suite only if it fails again. Not ssh's "Connection
# refused" or "reset": a box that does not answer is a failure of its own.
NETWORK_ERROR = re.compile(
    r"error sending request|tcp connect error|dns error|Temporary failure in name resolution"
    r"|connection broken|ConnectionError|ReadTimeout|failed to lookup address"
    r"|operation timed out|HTTP status server error|Could not fetch URL",
    re.IGNORECASE)


def network_error(reasons: list[str]) -> str | None:
    """The first error line that blames the network, or None."""
    return next((line for line in reasons if NETWORK_ERROR.search(line)), None)


def shorten(line: str) -> str:
    return line if len(line) <= REASON_WIDTH else f"{line[:REASON_WIDTH]} [...]"


Step = tuple[str, list[str]]
Result = tuple[str, int, float, list[str]]
PRINT_LOCK = threading.Lock()


def run_lane(steps: list[Step], env: dict[str, str], results: list[Result],
             buffered: bool) -> None:
    """Run steps one after the other; buffered: print each one's output when it ends."""
    for name, cmd in steps:
        header = f"\n===== {name}: {' '.join(cmd)}"
        out: list[str] | None = [] if buffered else None
        with PRINT_LOCK:
            print(f"\n===== started {name}" if buffered else header, flush=True)
        step_start = time.monotonic()
        code, reasons = run_step(cmd, env, out)
        blamed = network_error(reasons) if code and name.startswith("molecule:") else None
        if blamed:
            again = f"\n===== {name} again: it failed on the network: {blamed}"
            if buffered:
                out.append(again + "\n")
            else:
                print(again, flush=True)
            code, reasons = run_step(cmd, env, out)
            name = f"{name} (2nd try)"
        seconds = time.monotonic() - step_start
        with PRINT_LOCK:
            if buffered:
                sys.stdout.write(header + f" ({seconds:.0f} s)\n" + "".join(out))
                sys.stdout.flush()
            results.append((name, code, seconds, reasons))


def lanes(what: str, argv: list[str]) -> list[list[Step]] | None:
    kinds = {
        "lint": lambda: [lint_steps()],
        "unit": lambda: [unit_steps()],
        "integration": lambda: [integration_steps()],
        "molecule": lambda: [molecule_steps(argv[1:])],
        # Balanced by their seconds on CI's machine (2026-12-07): lint 76 + unit 438 +
        # Molecule 900; the integration tests 1294, and about 200 more for test_many.
        "all": lambda: [lint_steps() + unit_steps() + molecule_steps([]), integration_steps()],
    }
    if what not in kinds:
        return None
    found = kinds[what]()
    if os.environ.get("SPOTBOX_TEST_LANES") == "1":
        found = [[step for lane in found for step in lane]]
    return found


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "all"
    found = lanes(what, argv)
    if found is None:
        print(f"tests/run.py: no such step {what!r}; {__doc__.strip().splitlines()[-1]}",
              file=sys.stderr)
        return 2
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "NO_COLOR": "1"}
    results: list[Result] = []
    started = time.monotonic()
    buffered = len(found) > 1
    threads = [threading.Thread(target=run_lane, args=(lane, env, results, buffered))
               for lane in found]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = time.monotonic() - started
    print("\n===== timing breakdown" + (f" ({len(found)} lanes at once: the steps' "
                                        "seconds add up to more than the total)"
                                        if buffered else ""))
    for name, code, seconds, _ in results:
        share = seconds / total if total else 0
        print(f"  {'ok  ' if code == 0 else 'FAIL'} {name:<34} {seconds:7.1f}s  {share:6.1%}")
    print(f"  total {total:.1f}s")
    for name, code, _, reasons in results:
        if code:
            print(f"===== {name} failed (exit {code}); its last error lines:")
            print("\n".join(f"  {line}" for line in reasons) or "  (none found: see above)")
    failed = sum(1 for _, code, _, _ in results if code)
    print(f"suite: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
