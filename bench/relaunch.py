#!/usr/bin/env python3
"""Benchmark: how fast the work comes back after AWS takes a spot box back.

In one run, in a private local cloud: the first launch (`scripts/demo`: launch
the instance, provision it, build the environment, start Jupyter) to the printed
Jupyter URL; then `localcloud interrupt spotbox-demo --action terminate`; then
`scripts/demo` again (a new instance, the same data volume, the environment and
caches found on it) to the URL. Prints both times and their ratio (target:
relaunch at most 0.35x the first launch; on AWS the environment's build is a
larger share of the first launch, so the ratio is lower there still).

The stand-in AMI and the root filesystem are built before the clock starts (on
AWS the AMI exists). Run as root from the repository root:
    .venv/bin/python bench/relaunch.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, run

TARGET = 0.35
NOTICE_SECONDS = "10"


def timed_demo(env: dict) -> tuple[float, str]:
    started = time.monotonic()
    out = run(["scripts/demo"], env)
    seconds = time.monotonic() - started
    url = re.search(r"http://127\.0\.0\.1:\d+/lab\?token=\S+", out)
    if not url:
        sys.exit(f"bench/relaunch.py: the demo printed no Jupyter URL:\n{out[-3000:]}")
    return seconds, out


def main() -> int:
    state = Path(tempfile.mkdtemp(prefix="spotbox-bench-relaunch-"))
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state),
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    lc = [str(ROOT / ".venv/bin/python"), "-m", "localcloud"]
    try:
        run([*lc, "image", "dlami"], env)  # the stand-in DLAMI, cached: not part of either launch
        first, _ = timed_demo(env)
        run([*lc, "interrupt", "spotbox-demo", "--action", "terminate",
             "--notice-seconds", NOTICE_SECONDS], env)
        second, out = timed_demo(env)
        rebuilt = "not rebuilt" not in " ".join(out.split())
    finally:
        subprocess.run(["scripts/demo", "down"], cwd=ROOT, env=env, capture_output=True,
                       check=False)
        subprocess.run(["rm", "-rf", str(state)], check=False)
    ratio = second / first
    print(f"first launch to Jupyter URL     {first:6.1f} s")
    print(f"relaunch after a terminate      {second:6.1f} s"
          f"{'  (the environment was REBUILT)' if rebuilt else ''}")
    print(f"ratio relaunch/first            {ratio:6.2f}x  (target <= {TARGET}x: "
          f"{'met' if ratio <= TARGET else 'NOT met'})")
    return 0 if ratio <= TARGET and not rebuilt else 1


if __name__ == "__main__":
    sys.exit(main())
