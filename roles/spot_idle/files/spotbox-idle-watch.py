#!/usr/bin/python3
"""spotbox idle watch: power the box off when nobody has used it for a while.

Installed by the spot_idle role as a systemd service running as root; Python's
standard library only. Every `interval` seconds it looks for use:

* Jupyter (its REST API on 127.0.0.1, with the token read from the token file
  on the box): a kernel whose execution_state is "busy", or a kernel's or a
  terminal's last_activity newer than the last look (GET /api/kernels,
  /api/terminals; listing them does not change their last_activity);
* a logged-in session (`who`: SSH logins with a terminal; a tunnel alone,
  `ssh -N -L`, has none and is not counted);
* the GPUs' utilisation at or above `gpu_percent` (nvidia-smi, where it exists);
* the CPUs busy at or above `cpu_percent` since the last look (/proc/stat).

A threshold of 100 turns its look off (a container's /proc/stat is its host's).

After `idle_seconds` without use it stops Jupyter, syncs and unmounts the data
volume and runs `systemctl poweroff`. `warn_seconds` before, it tells the
logged-in users (wall) and writes RUN_DIR/idle-shutdown (JSON: the power-off
time, the idle time); use before the time cancels it (the file is removed and
the users are told). The launch template's instance-initiated shutdown
behaviour decides what AWS does then: terminate (one-time requests: the data
volume is kept) or stop (persistent ones).

Usage: spotbox-idle-watch [--config /etc/spotbox/idle-watch.json]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import subprocess
import sys
import time

CONFIG = "/etc/spotbox/idle-watch.json"
DEFAULTS = {
    "idle_seconds": 3600.0,
    "warn_seconds": 300.0,
    "interval": 30.0,
    "jupyter_port": 8888,
    "jupyter_token_file": "/home/ubuntu/.jupyter/spotbox-token",
    "jupyter_service": "spotbox-jupyter",
    "jupyter_stop_timeout": 20.0,
    "gpu_percent": 10.0,
    "cpu_percent": 20.0,
    "mount_point": "/home/ubuntu/Payload",
    "run_dir": "/run/spotbox",
    # Commands and files, replaceable for tests.
    "systemctl": "systemctl",
    "umount": "umount",
    "wall": "wall",
    "who": "who",
    "nvidia_smi": "nvidia-smi",
    "proc_stat": "/proc/stat",
    "mounts": "/proc/self/mounts",
}
NOTICE = "idle-shutdown"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def log(message: str) -> None:
    print(f"idle-watch: {message}", flush=True)  # journald adds the time


def parse_time(text: object) -> float | None:
    """Jupyter's ISO 8601 time ("2026-11-29T18:03:12.345678Z") as a timestamp."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def jupyter_use(kernels: list[dict], terminals: list[dict]) -> tuple[bool, float | None]:
    """(a kernel is busy, the newest kernel or terminal last_activity)."""
    busy = any(k.get("execution_state") == "busy" for k in kernels)
    stamps = [parse_time(item.get("last_activity")) for item in kernels + terminals]
    stamps = [s for s in stamps if s is not None]
    return busy, (max(stamps) if stamps else None)


def logged_in(who_output: str) -> list[str]:
    """The login sessions `who` lists (user and line)."""
    return [" ".join(line.split()[:2]) for line in who_output.splitlines() if line.strip()]


def cpu_times(stat_text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line."""
    fields = [int(x) for x in stat_text.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already in user and nice
    return total - idle, total


def cpu_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    busy, total = after[0] - before[0], after[1] - before[1]
    return 100.0 * busy / total if total > 0 else 0.0


def gpu_percent(nvidia_smi_output: str) -> float | None:
    """The busiest GPU's utilisation from `nvidia-smi --query-gpu=utilization.gpu
    --format=csv,noheader,nounits`; None without a number."""
    values = []
    for line in nvidia_smi_output.splitlines():
        with contextlib.suppress(ValueError):
            values.append(float(line.strip()))
    return max(values) if values else None


def decide(now: float, last_use: float, idle_seconds: float, warn_seconds: float,
           warned: bool) -> str:
    """What to do now: "wait", "warn" (once), "cancel" (use after a warning) or "poweroff".

    last_use: when the box was last used (its start, at first).
    """
    idle_for = now - last_use
    if idle_for >= idle_seconds:
        return "poweroff"
    if idle_for >= idle_seconds - warn_seconds:
        return "wait" if warned else "warn"
    return "cancel" if warned else "wait"


class Watcher:
    def __init__(self, config: dict) -> None:
        self.c = config
        self.last_use = time.time()  # a box just started (or restarted) gets the whole time
        self.jupyter_seen: float | None = None
        self.cpu_before: tuple[int, int] | None = None
        self.warned = False
        self.complained: set[str] = set()

    def once(self, what: str, message: str) -> None:
        """Log a recurring problem once."""
        if what not in self.complained:
            self.complained.add(what)
            log(message)

    def run(self, command: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(command, capture_output=True, text=True, check=False,
                                  timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.once(command[0], f"{command[0]}: {exc}")
            return None

    def jupyter(self) -> tuple[bool, float | None]:
        try:
            with open(self.c["jupyter_token_file"], encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError:
            token = ""
        found: dict[str, list] = {}
        for path in ("/api/kernels", "/api/terminals"):
            conn = http.client.HTTPConnection("127.0.0.1", int(self.c["jupyter_port"]), timeout=5)
            try:
                conn.request("GET", path, headers={"Authorization": f"token {token}"})
                response = conn.getresponse()
                body = response.read().decode("utf-8", "replace")
                found[path] = json.loads(body) if response.status == 200 else []
                if response.status != 200:
                    self.once(f"jupyter{response.status}",
                              f"Jupyter answered {response.status} for {path}: not counted")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self.once("jupyter", f"Jupyter does not answer on port "
                          f"{self.c['jupyter_port']} ({exc}): its use is not counted")
                found[path] = []
            finally:
                conn.close()
        kernels, terminals = found["/api/kernels"], found["/api/terminals"]
        return jupyter_use(kernels if isinstance(kernels, list) else [],
                           terminals if isinstance(terminals, list) else [])

    def uses(self) -> list[str]:
        """What uses the box now (empty when nothing does)."""
        reasons = []
        busy, newest = self.jupyter()
        if busy:
            reasons.append("a Jupyter kernel is busy")
        if newest is not None:
            if self.jupyter_seen is not None and newest > self.jupyter_seen:
                reasons.append("Jupyter kernel or terminal activity")
            self.jupyter_seen = max(newest, self.jupyter_seen or newest)
        who = self.run([self.c["who"]])
        if who is not None and who.returncode == 0 and logged_in(who.stdout):
            reasons.append("logged in: " + ", ".join(logged_in(who.stdout)))
        smi = self.run([self.c["nvidia_smi"], "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits"])
        if smi is not None and smi.returncode == 0:
            gpu = gpu_percent(smi.stdout)
            if gpu is not None and gpu >= float(self.c["gpu_percent"]) < 100:
                reasons.append(f"GPU {gpu:.0f}% busy")
        try:
            with open(self.c["proc_stat"], encoding="utf-8") as handle:
                now = cpu_times(handle.read())
        except (OSError, ValueError, IndexError):
            now = None
        if now is not None and self.cpu_before is not None:
            cpu = cpu_percent(self.cpu_before, now)
            if cpu >= float(self.c["cpu_percent"]) < 100:  # 100: not looked at
                reasons.append(f"CPU {cpu:.0f}% busy")
        self.cpu_before = now
        return reasons

    def step(self) -> bool:
        """One look; True when the box is being powered off."""
        now = time.time()
        reasons = self.uses()
        if reasons:
            self.last_use = now
        action = decide(now, self.last_use, float(self.c["idle_seconds"]),
                        float(self.c["warn_seconds"]), self.warned)
        notice = os.path.join(self.c["run_dir"], NOTICE)
        if action == "warn":
            at = self.last_use + float(self.c["idle_seconds"])
            when = time.strftime(TIME_FORMAT, time.gmtime(at))
            os.makedirs(self.c["run_dir"], exist_ok=True)
            write_json(notice, {"poweroff_at": when, "idle_since": time.strftime(
                TIME_FORMAT, time.gmtime(self.last_use))})
            message = (f"spotbox: this box is idle and powers off at {when} (in "
                       f"{at - now:.0f} s). Use it (a notebook cell, a terminal, a login) "
                       "to keep it")
            log(message)
            self.wall(message)
            self.warned = True
        elif action == "cancel":
            with contextlib.suppress(FileNotFoundError):
                os.remove(notice)
            message = f"spotbox: idle power-off cancelled ({'; '.join(reasons)})"
            log(message)
            self.wall(message)
            self.warned = False
        elif action == "poweroff":
            self.power_off(now - self.last_use)
            return True
        return False

    def power_off(self, idle_for: float) -> None:
        log(f"idle for {idle_for:.0f} s: stopping Jupyter, unmounting the data volume, "
            "powering off")
        self.wall("spotbox: this box was idle: powering off now")
        service = self.c["jupyter_service"]
        done = self.run([self.c["systemctl"], "stop", f"{service}.service"],
                        timeout=float(self.c["jupyter_stop_timeout"]))
        if done is None:
            self.run([self.c["systemctl"], "kill", "--signal=SIGKILL", f"{service}.service"])
        os.sync()
        if self.is_mounted():
            done = self.run([self.c["umount"], self.c["mount_point"]], timeout=20)
            if done is None or done.returncode != 0:
                log(f"unmounting {self.c['mount_point']} failed "
                    f"({done.stderr.strip() if done else 'no answer'}): poweroff unmounts it")
        self.run([self.c["systemctl"], "poweroff"], timeout=30)

    def is_mounted(self) -> bool:
        point = os.path.normpath(self.c["mount_point"])
        try:
            with open(self.c["mounts"], encoding="utf-8") as mounts:
                return any(len(f) > 1 and f[1] == point for f in map(str.split, mounts))
        except OSError:
            return False

    def wall(self, message: str) -> None:
        try:
            subprocess.run([self.c["wall"]], input=message + "\n", text=True, check=False,
                           capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.once("wall", f"could not tell the users (wall): {exc}")


def write_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
        handle.write("\n")
    os.replace(tmp, path)


def load_config(argv: list[str]) -> dict:
    path = argv[argv.index("--config") + 1] if "--config" in argv else CONFIG
    config = dict(DEFAULTS)
    try:
        with open(path, encoding="utf-8") as handle:
            config.update(json.load(handle))
    except FileNotFoundError:
        log(f"no configuration at {path}: using the defaults")
    return config


def main() -> None:
    config = load_config(sys.argv[1:])
    if float(config["idle_seconds"]) <= 0:
        log("idle power-off is off (spot_idle_minutes 0)")
        while True:
            time.sleep(3600)
    log(f"powering off after {float(config['idle_seconds']):.0f} s without use, warning "
        f"{float(config['warn_seconds']):.0f} s before")
    watcher = Watcher(config)
    with contextlib.suppress(FileNotFoundError):  # a notice from before a restart
        os.remove(os.path.join(config["run_dir"], NOTICE))
    while not watcher.step():
        time.sleep(float(config["interval"]))
    while True:  # systemd ends this process on the way down
        time.sleep(60)


if __name__ == "__main__":
    main()
