#!/usr/bin/env python3
"""Run spotbox's test steps, time each, print a breakdown and one closing line.

Usage: tests/run.py all | lint | unit | molecule [SCENARIO...] | integration
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def scenarios() -> list[str]:
    """Molecule scenarios, the harness's own ("default") first."""
    found = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    return sorted(found, key=lambda name: name != "default")


def lint_steps() -> list[tuple[str, list[str]]]:
    return [
        ("lint: yamllint", [str(BIN / "yamllint"), "--strict", "."]),
        ("lint: ansible-lint", [str(BIN / "ansible-lint"), "--offline", "--profile", "production"]),
        ("lint: ruff", [str(BIN / "ruff"), "check", "."]),
    ]


def unit_steps() -> list[tuple[str, list[str]]]:
    return [("unit: pytest", [sys.executable, "-m", "pytest", "-q", "tests/unit"])]


def molecule_steps(names: list[str]) -> list[tuple[str, list[str]]]:
    return [(f"molecule: {name}", [str(BIN / "molecule"), "test", "-s", name])
            for name in names or scenarios()]


def integration_steps() -> list[tuple[str, list[str]]]:
    return [("integration: pytest", [sys.executable, "-m", "pytest", "-q", "-rs",
                                     "tests/integration"])]


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "all"
    steps = {
        "lint": lint_steps,
        "unit": unit_steps,
        "integration": integration_steps,
        "molecule": lambda: molecule_steps(argv[1:]),
        "all": lambda: lint_steps() + unit_steps() + integration_steps() + molecule_steps([]),
    }[what]()
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0", "NO_COLOR": "1"}
    results = []
    started = time.monotonic()
    for name, cmd in steps:
        print(f"\n===== {name}: {' '.join(cmd)}", flush=True)
        step_start = time.monotonic()
        code = subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode
        results.append((name, code, time.monotonic() - step_start))
    total = time.monotonic() - started
    print("\n===== timing breakdown")
    for name, code, seconds in results:
        share = seconds / total if total else 0
        print(f"  {'ok  ' if code == 0 else 'FAIL'} {name:<34} {seconds:7.1f}s  {share:6.1%}")
    print(f"  total {total:.1f}s")
    failed = sum(1 for _, code, _ in results if code)
    print(f"suite: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
