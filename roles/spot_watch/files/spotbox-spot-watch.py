#!/usr/bin/python3
"""spotbox spot watch: act on EC2's spot interruption notice and rebalance recommendation.

Installed by the spot_watch role as a systemd service running as root; Python's
standard library only. It polls the instance metadata service with IMDSv2 (a
session token from PUT /latest/api/token, then GETs with it) every `interval`
seconds ("We recommend that you check for these interruption notices every 5
seconds": Amazon EC2 User Guide, Spot Instance interruption notices):

* /latest/meta-data/events/recommendations/rebalance ({"noticeTime": ...}, 404
  while there is none): logged, told to the logged-in users (wall) and left in
  RUN_DIR/rebalance (JSON) for the user's code to poll.
* /latest/meta-data/spot/instance-action ({"action": "terminate"|"stop"|
  "hibernate", "time": "2017-09-18T08:22:00Z"}, 404 while there is none):
  logged, told to the users, written to RUN_DIR/interruption (JSON: action,
  time), then the hooks in HOOK_DIR run (executable files whose names are
  letters, digits, '_' and '-', in name order, as root, sharing a time budget),
  Jupyter's service is stopped (its kernels shut down), a record is left on the
  data volume (.spotbox/last-interruption.json: the notice, the instance, what
  the hooks and Jupyter's stop did, and that the sync and the unmount started:
  their end cannot be written on the volume they end), the disks are synced and
  the data volume is unmounted (what still holds it is stopped first), all before
  the notice's time. Once per notice: RUN_DIR/interruption says "handled", and
  a restarted watcher does not act again.

A 401 (no valid token: expired, or refused) gets a new token and one retry; a
notice that is not the documented JSON is logged once and ignored. On an
on-demand instance (instance-life-cycle) it idles without polling; where no
metadata service answers (not EC2) it looks again every `interval` seconds for a
minute (the network may come up late), then every `idle_recheck` seconds.

Usage: spotbox-spot-watch [--config /etc/spotbox/spot-watch.json]
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse

CONFIG = "/etc/spotbox/spot-watch.json"
DEFAULTS = {
    "endpoint": "http://169.254.169.254",
    "interval": 5.0,
    "token_ttl": 21600,  # IMDSv2's maximum: six hours
    "timeout": 2.0,  # seconds for one request to the metadata service
    "idle_recheck": 600.0,
    "hook_dir": "/etc/spotbox/interruption.d",
    "hook_budget": 60.0,
    "jupyter_service": "spotbox-jupyter",
    "jupyter_stop_timeout": 20.0,
    "mount_point": "/home/ubuntu/Payload",
    "run_dir": "/run/spotbox",
    # Commands and files, replaceable for tests.
    "systemctl": "systemctl",
    "umount": "umount",
    "mount": "mount",
    "wall": "wall",
    "mounts": "/proc/self/mounts",
}
ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
ACTIONS = ("terminate", "stop", "hibernate")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
HOOK_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # run-parts' rule: no backups, no .dpkg-old
RECORD = ".spotbox/last-interruption.json"  # on the data volume, for the next instance
RESERVE = 10.0  # seconds kept after the hooks and Jupyter's stop for sync and unmount
STARTUP = 60.0  # seconds after start in which a missing metadata service is looked for often


def log(message: str) -> None:
    print(f"spot-watch: {message}", flush=True)  # journald adds the time


class Unavailable(Exception):
    """The metadata service did not answer, or refused a token."""


class IMDS:
    """IMDSv2 client: one session token, renewed before it expires and after a 401."""

    def __init__(self, endpoint: str, ttl: int, timeout: float) -> None:
        url = urllib.parse.urlsplit(endpoint)
        self.host, self.port = url.hostname or "169.254.169.254", url.port or 80
        self.endpoint = endpoint
        self.ttl, self.timeout = int(ttl), timeout
        self.token: str | None = None
        self.renew_at = 0.0

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"{method} {self.endpoint}{path}: {exc}") from None
        finally:
            conn.close()

    def new_token(self) -> None:
        status, body = self._request(
            "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(self.ttl)})
        if status != 200 or not body.strip():
            raise Unavailable(f"PUT {self.endpoint}/latest/api/token answered {status}")
        self.token = body.strip()
        # Renew before it expires: a tenth of its life early (at most a minute).
        self.renew_at = time.monotonic() + self.ttl - min(60.0, self.ttl / 10)

    def get(self, path: str) -> tuple[int, str]:
        if self.token is None or time.monotonic() >= self.renew_at:
            self.new_token()
        status, body = self._request("GET", path, {"X-aws-ec2-metadata-token": self.token})
        if status == 401:
            log(f"GET {path} answered 401 (the token expired or was refused): "
                "getting a new token")
            self.new_token()
            status, body = self._request("GET", path, {"X-aws-ec2-metadata-token": self.token})
        return status, body


def parse_time(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return dt.datetime.strptime(text, TIME_FORMAT).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def parse_notice(body: str) -> dict | None:
    """{"action", "time", "deadline"} from an instance-action body, None if malformed."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("action") not in ACTIONS:
        return None
    deadline = parse_time(data.get("time"))
    if deadline is None:
        return None
    return {"action": data["action"], "time": data["time"], "deadline": deadline}


def parse_rebalance(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if isinstance(data, dict) and parse_time(data.get("noticeTime")) is not None:
        return data["noticeTime"]
    return None


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")
    os.chmod(tmp, 0o644)  # the user's code reads it
    os.replace(tmp, path)


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


class Watcher:
    def __init__(self, config: dict) -> None:
        self.c = config
        self.imds = IMDS(config["endpoint"], config["token_ttl"], config["timeout"])
        self.interruption_file = os.path.join(config["run_dir"], "interruption")
        self.rebalance_file = os.path.join(config["run_dir"], "rebalance")
        self.said: dict[str, str] = {}  # what was last logged, per topic (no repeats)
        self.instance = "this instance"

    def say_once(self, topic: str, message: str) -> None:
        if self.said.get(topic) != message:
            self.said[topic] = message
            log(message)

    # --- what kind of host this is ---------------------------------------------------

    def life_cycle(self) -> str | None:
        """'spot', 'on-demand', ... ; '' when IMDS does not say; None when no IMDS answers."""
        try:
            status, body = self.imds.get("/latest/meta-data/instance-life-cycle")
            id_status, instance = self.imds.get("/latest/meta-data/instance-id")
        except Unavailable as exc:
            self.say_once("imds", f"no instance metadata service answers ({exc}): not an EC2 "
                                  "instance, or its metadata service is off (or not up yet); "
                                  f"looking again every {self.c['interval']:g} s for "
                                  f"{STARTUP:g} s, then every {self.c['idle_recheck']:g} s")
            return None
        if id_status == 200:
            self.instance = instance.strip()
        return body.strip() if status == 200 else ""

    def run(self) -> None:
        log(f"metadata service {self.c['endpoint']}, every {self.c['interval']:g} s; hooks "
            f"{self.c['hook_dir']} (budget {self.c['hook_budget']:g} s); Jupyter service "
            f"{self.c['jupyter_service']}; data volume {self.c['mount_point']}")
        started = time.monotonic()
        while (kind := self.life_cycle()) is None:
            early = time.monotonic() - started < STARTUP  # the network may come up late
            time.sleep(self.c["interval"] if early else self.c["idle_recheck"])
        if kind not in ("spot", ""):
            log(f"{self.instance} is {kind}, not spot: no interruption notice will come; "
                "idling")
            idle()
        done = read_json(self.interruption_file)
        if done and done.get("state") == "handled":
            log(f"the interruption notice ({done.get('action')} at {done.get('time')}) was "
                f"already handled ({self.interruption_file}); idling")
            idle()
        log(f"watching {self.instance} ({kind or 'life cycle not reported'}) for spot "
            "interruption notices and rebalance recommendations")
        while True:
            started = time.monotonic()
            if self.poll():
                log("idling: the box is going")
                idle()
            time.sleep(max(0.0, self.c["interval"] - (time.monotonic() - started)))

    def poll(self) -> bool:
        """One look at both items; True once an interruption was handled."""
        try:
            status, body = self.imds.get(ACTION_PATH)
            if status == 200:
                notice = parse_notice(body)
                if notice is None:
                    self.say_once("action", "malformed interruption notice ignored: "
                                            f"{body[:200]!r}")
                else:
                    self.handle_interruption(notice)
                    return True
            elif status == 404:
                self.said.pop("action", None)
            else:
                self.say_once("action", f"GET {ACTION_PATH} answered {status}; looking again")
            status, body = self.imds.get(REBALANCE_PATH)
            if status == 200:
                self.handle_rebalance(body)
            elif status != 404:
                self.say_once("rebalance", f"GET {REBALANCE_PATH} answered {status}")
            self.said.pop("imds", None)
        except Unavailable as exc:
            self.say_once("imds", f"metadata service did not answer: {exc}; looking again")
        return False

    # --- rebalance recommendation --------------------------------------------------------

    def handle_rebalance(self, body: str) -> None:
        notice_time = parse_rebalance(body)
        if notice_time is None:
            self.say_once("rebalance", f"malformed rebalance recommendation ignored: "
                                       f"{body[:200]!r}")
            return
        known = read_json(self.rebalance_file)
        if known and known.get("noticeTime") == notice_time:
            return
        write_json(self.rebalance_file, {"noticeTime": notice_time, "noticed_at": now_utc()})
        message = (f"rebalance recommendation (emitted {notice_time}): this spot instance is at "
                   "elevated risk of interruption; save your work")
        log(f"{message} ({self.rebalance_file})")
        self.wall(f"spotbox: {message}.")

    # --- interruption notice ---------------------------------------------------------

    def handle_interruption(self, notice: dict) -> None:
        action, when, deadline = notice["action"], notice["time"], notice["deadline"]
        left = deadline - time.time()
        log(f"interruption notice: AWS will {action} {self.instance} at {when} "
            f"({left:.0f} s from now)")
        self.wall(f"spotbox: AWS will {action} this spot instance at {when} (in {left:.0f} s). "
                  f"Saving work and unmounting {self.c['mount_point']} now.")
        record = {"action": action, "time": when, "noticed_at": now_utc(),
                  "instance_id": self.instance, "state": "handling"}
        write_json(self.interruption_file, record)
        record["hooks"] = self.run_hooks(notice)
        record["jupyter"] = self.stop_jupyter()
        mounted = self.is_mounted()
        if mounted:
            self.leave_record(record)
        os.sync()
        log("disks synced")
        record["unmount"] = self.unmount() if mounted else "not mounted"
        record["state"] = "handled"
        record["handled_at"] = now_utc()
        record["seconds_left"] = round(deadline - time.time(), 1)
        write_json(self.interruption_file, record)
        log(f"interruption handled: hooks {[h['result'] for h in record['hooks']]}, Jupyter "
            f"{record['jupyter']}, data volume {record['unmount']}; "
            f"{record['seconds_left']:.0f} s before the {action}")

    def leave_record(self, record: dict) -> None:
        """What was done, on the data volume, for the next instance's provisioning
        (roles/spot_watch/files/last_interruption.py reads it): written after the hooks
        and Jupyter's stop, just before the sync and the unmount, whose end it cannot
        record (the volume is gone by then), so it says that they started."""
        path = os.path.join(self.c["mount_point"], RECORD)
        try:
            write_json(path, {**record, "state": "unmounting", "recorded_at": now_utc(),
                              "sync": "started", "unmount": "started"})
            log(f"record left on the data volume ({path})")
        except OSError as exc:
            log(f"could not leave the record on the data volume: {exc}")

    def run_hooks(self, notice: dict) -> list[dict]:
        folder = self.c["hook_dir"]
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            names = []
        hooks = [n for n in names if HOOK_NAME.match(n)
                 and os.path.isfile(os.path.join(folder, n))
                 and os.access(os.path.join(folder, n), os.X_OK)]
        left = notice["deadline"] - time.time()
        budget = max(0.0, min(self.c["hook_budget"],
                              left - self.c["jupyter_stop_timeout"] - RESERVE))
        if not hooks:
            log(f"no hooks in {folder}")
            return []
        log(f"running {len(hooks)} hook(s) from {folder} within {budget:.0f} s")
        env = {**os.environ, "SPOTBOX_INTERRUPTION_ACTION": notice["action"],
               "SPOTBOX_INTERRUPTION_TIME": notice["time"],
               "SPOTBOX_DATA_VOLUME": self.c["mount_point"]}
        end = time.monotonic() + budget
        results = []
        for name in hooks:
            remaining = end - time.monotonic()
            if remaining <= 0:
                log(f"hook {name}: skipped, the budget of {budget:.0f} s is spent")
                results.append({"name": name, "result": "skipped"})
                continue
            env["SPOTBOX_HOOK_SECONDS"] = str(int(remaining))
            results.append(run_hook(os.path.join(folder, name), name, remaining, env))
        return results

    def stop_jupyter(self) -> str:
        service, timeout = self.c["jupyter_service"], self.c["jupyter_stop_timeout"]
        command = [self.c["systemctl"], "stop", f"{service}.service"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            log(f"Jupyter ({service}) did not stop within {timeout:g} s: killing it")
            subprocess.run([self.c["systemctl"], "kill", "--signal=SIGKILL", f"{service}.service"],
                           capture_output=True, check=False, timeout=10)
            return "killed"
        except OSError as exc:
            log(f"could not stop Jupyter ({service}): {exc}")
            return "not stopped"
        if done.returncode == 5:  # systemctl: unit not loaded
            log(f"no Jupyter service {service} on this box")
            return "absent"
        if done.returncode != 0:
            log(f"stopping Jupyter ({service}) failed: {done.stderr.strip()}")
            return "not stopped"
        log(f"Jupyter stopped ({service}: its kernels were shut down)")
        return "stopped"

    def is_mounted(self) -> bool:
        point = os.path.normpath(self.c["mount_point"])
        try:
            with open(self.c["mounts"], encoding="utf-8") as mounts:
                for line in mounts:
                    fields = line.split()
                    if len(fields) > 1 and unescape(fields[1]) == point:
                        return True
        except OSError:
            pass
        return False

    def unmount(self) -> str:
        point = self.c["mount_point"]
        done = self._umount()
        if done.returncode == 0:
            log(f"data volume unmounted ({point})")
            return "unmounted"
        holders = holding(point)
        log(f"unmounting {point} failed ({done.stderr.strip()}); stopping what holds it: "
            + ", ".join(f"{pid} ({comm})" for pid, comm in holders))
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 1.0)):
            for pid, _ in holders:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            end = time.monotonic() + wait
            while time.monotonic() < end and holding(point):
                time.sleep(0.1)
            done = self._umount()
            if done.returncode == 0:
                log(f"data volume unmounted ({point})")
                return "unmounted"
            holders = holding(point)
        remount = subprocess.run([self.c["mount"], "-o", "remount,ro", point],
                                 capture_output=True, text=True, check=False, timeout=20)
        if remount.returncode == 0:
            log(f"data volume still busy: remounted read-only ({point})")
            return "read-only"
        log(f"data volume could not be unmounted nor made read-only: {remount.stderr.strip()}")
        return "still mounted"

    def _umount(self) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([self.c["umount"], self.c["mount_point"]], capture_output=True,
                                  text=True, check=False, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess([], 1, "", str(exc))

    def wall(self, message: str) -> None:
        try:
            subprocess.run([self.c["wall"]], input=message + "\n", text=True, check=False,
                           capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"could not tell the users (wall): {exc}")


def run_hook(path: str, name: str, seconds: float, env: dict) -> dict:
    started = time.monotonic()
    try:
        proc = subprocess.Popen([path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    except OSError as exc:
        log(f"hook {name}: could not start: {exc}")
        return {"name": name, "result": "not started"}
    try:
        output, _ = proc.communicate(timeout=seconds)
        result = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, sig)
            try:
                output, _ = proc.communicate(timeout=2)
                break
            except subprocess.TimeoutExpired:
                output = b""
        result = "stopped: out of time"
    took = time.monotonic() - started
    for line in output.decode("utf-8", "replace").splitlines()[-20:]:
        log(f"hook {name}: {line}")
    log(f"hook {name}: {result} ({took:.1f} s)")
    return {"name": name, "result": result, "seconds": round(took, 1)}


def holding(point: str) -> list[tuple[int, str]]:
    """Processes whose working folder, root, program or open files are under point."""
    point = os.path.normpath(point)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        base = f"/proc/{entry}"
        links = [f"{base}/cwd", f"{base}/root", f"{base}/exe"]
        with contextlib.suppress(OSError):
            links += [f"{base}/fd/{fd}" for fd in os.listdir(f"{base}/fd")]
        for link in links:
            try:
                target = os.readlink(link)
            except OSError:
                continue
            if target == point or target.startswith(point + "/"):
                try:
                    with open(f"{base}/comm", encoding="utf-8") as comm:
                        name = comm.read().strip()
                except OSError:
                    name = "?"
                found.append((int(entry), name))
                break
    return found


def unescape(field: str) -> str:
    """A /proc/mounts path: spaces and the like are octal escapes (\\040)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def idle() -> None:
    while True:
        signal.pause()


def load_config(argv: list[str]) -> dict:
    path = CONFIG
    if len(argv) == 2 and argv[0] == "--config":
        path = argv[1]
    elif argv:
        sys.exit(__doc__.strip().splitlines()[-1])
    config = dict(DEFAULTS)
    try:
        with open(path, encoding="utf-8") as file:
            config.update(json.load(file))
    except FileNotFoundError:
        log(f"no {path}: using the defaults")
    for key in ("interval", "timeout", "idle_recheck", "hook_budget", "jupyter_stop_timeout"):
        config[key] = float(config[key])
    return config


def main() -> None:
    Watcher(load_config(sys.argv[1:])).run()


if __name__ == "__main__":
    main()
