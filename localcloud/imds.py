"""A stand-in for EC2's instance metadata service (IMDSv2), one per box, on 127.0.0.1.

The box's spot watcher (roles/spot_watch) is pointed at it through
spot_watch_endpoint; nothing here ever listens on, or talks to, 169.254.169.254
or any address other than loopback.

What it serves, with the AWS documentation it follows (Amazon EC2 User Guide):

* "Use IMDSv2" (configuring-instance-metadata-service): "Use a PUT request to
  initiate a session to the instance metadata service. The PUT request returns
  a token that must be included in subsequent GET requests"; "The PUT request
  must include a header that specifies the time to live (TTL) for the token, in
  seconds, up to a maximum of six hours (21,600 seconds)" (the header is
  X-aws-ec2-metadata-token-ttl-seconds; the token goes back in
  X-aws-ec2-metadata-token); "When token usage is set to required, requests
  without a valid token or with an expired token receive a 401 - Unauthorized
  HTTP error code" (spotbox's launch template requires IMDSv2, so this stand-in
  always does); "HTTP GET and HEAD methods are allowed in IMDSv2 instance
  metadata requests. PUT requests are rejected if they contain an
  X-Forwarded-For header."
* "Retrieve instance metadata" (instancedata-data-retrieval), responses and
  error messages: "All instance metadata is returned as text (HTTP content type
  text/plain)"; "400 - Missing or Invalid Parameters - The PUT request is not
  valid"; "401 - Unauthorized - The GET request uses an invalid token. The
  recommended action is to generate a new token"; "403 - Forbidden - The request
  is not allowed"; "404 - Not Found - The resource is not available or there is
  no such resource". A path ending in / lists its items, one per line.
* "Spot Instance interruption notices" (spot-instance-termination-notices):
  "If your Spot Instance is marked to be stopped or terminated by Amazon EC2,
  the instance-action item is present in your instance metadata. Otherwise, it
  is not present"; example {"action": "terminate", "time": "2017-09-18T08:22:00Z"};
  "If Amazon EC2 is not preparing to stop or terminate the instance, or if you
  terminated the instance yourself, instance-action is not present in the
  instance metadata and you receive an HTTP 404 error when you try to retrieve
  it." Possible actions: hibernate, stop, terminate.
* "EC2 instance rebalance recommendations" (rebalance-recommendations): the
  category events/recommendations/rebalance "provides the approximate time, in
  UTC, when the rebalance recommendation signal was emitted", example
  {"noticeTime": "2020-10-27T08:22:00Z"}; "If the signal has not been emitted
  for the instance, events/recommendations/rebalance is not present and you
  receive an HTTP 404 error when you try to retrieve it."
* "Instance metadata categories": instance-id ("The ID of this instance") and
  instance-life-cycle ("The purchasing option of this instance": spot or
  on-demand here).

Its notices are set through a JSON state file it reads at every request
(write_state / the CLI below), so a test or `python -m localcloud imds ...`
can publish a notice while it runs. A notice may also be any text (a
malformed notice, for tests). One thing is not AWS's: `token_epoch` in the
state file; raising it makes every token handed out so far invalid (as an
expired one is), so that a client's 401 handling can be tested without waiting.

CLI (through `python -m localcloud imds ...`, state dir of the local cloud):
  start NAME [--life-cycle spot|on-demand] [--instance-id ID] [--port N]
  notice NAME --action terminate|stop|hibernate [--in SECONDS]   (default 120)
  rebalance NAME | clear NAME | expire-tokens NAME | stop NAME | show NAME
`python -m localcloud.imds serve --state FILE [--port N]` runs one in the
foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import secrets
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a path, not a secret
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
MAX_TTL = 21600  # "up to a maximum of six hours (21,600 seconds)"
ACTIONS = ("hibernate", "stop", "terminate")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # as in "2017-09-18T08:22:00Z"
DEFAULT_STATE = {
    "instance_id": "i-0123456789abcdef0",
    "life_cycle": "spot",
    "instance_action": None,  # a dict {"action", "time"}, any text (malformed), or None (404)
    "rebalance": None,  # a dict {"noticeTime"}, any text, or None (404)
    "token_epoch": 0,
}


def utc_in(seconds: float) -> str:
    """The UTC time seconds from now, as IMDS writes it (whole seconds, Z)."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return when.strftime(TIME_FORMAT)


@contextlib.contextmanager
def edit_state(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the state for changes; written back atomically under a lock."""
    path = Path(path)
    with open(f"{path}.lock", "a+", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state(path)
        yield state
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)


def read_state(path: Path) -> dict[str, Any]:
    try:
        return {**DEFAULT_STATE, **json.loads(Path(path).read_text(encoding="utf-8"))}
    except FileNotFoundError:
        return dict(DEFAULT_STATE)


def write_state(path: Path, **changes: Any) -> dict[str, Any]:
    with edit_state(path) as state:
        state.update(changes)
        return dict(state)


def publish_notice(path: Path, action: str, seconds: float = 120) -> dict[str, str]:
    """Mark the instance to be stopped/terminated/hibernated seconds from now."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    notice = {"action": action, "time": utc_in(seconds)}
    write_state(path, instance_action=notice)
    return notice


def publish_rebalance(path: Path) -> dict[str, str]:
    notice = {"noticeTime": utc_in(0)}
    write_state(path, rebalance=notice)
    return notice


def expire_tokens(path: Path) -> None:
    with edit_state(path) as state:
        state["token_epoch"] = int(state.get("token_epoch", 0)) + 1


class IMDSServer(ThreadingHTTPServer):
    """ThreadingHTTPServer holding the state file, the tokens and request counts."""

    daemon_threads = True

    def __init__(self, state_path: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the IMDS stand-in listens on loopback only, not {host}")
        self.state_path = Path(state_path)
        self.tokens: dict[str, tuple[float, int]] = {}  # token: (expiry, epoch)
        self.stats: Counter[str] = Counter()  # "PUT 200", "GET 401", ...
        self.lock = threading.Lock()
        super().__init__((host, port), Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def state(self) -> dict[str, Any]:
        """The state file, read at every request (a few hundred bytes: a change made by
        a test or the CLI counts at once, whatever the file system's clock resolution)."""
        return read_state(self.state_path)

    def new_token(self, ttl: int) -> str:
        token = secrets.token_urlsafe(40)
        epoch = int(self.state().get("token_epoch", 0))
        with self.lock:
            now = time.monotonic()
            self.tokens = {t: v for t, v in self.tokens.items() if v[0] > now}
            self.tokens[token] = (now + ttl, epoch)
        return token

    def token_valid(self, token: str | None) -> bool:
        epoch = int(self.state().get("token_epoch", 0))
        with self.lock:
            found = self.tokens.get(token or "")
        return bool(found and found[0] > time.monotonic() and found[1] == epoch)

    def count(self, method: str, status: int) -> None:
        with self.lock:
            self.stats[f"{method} {status}"] += 1


class Handler(BaseHTTPRequestHandler):
    server: IMDSServer
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"  # what IMDS names itself in its Server header
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("LOCALCLOUD_IMDS_LOG"):
            super().log_message(format, *args)

    def _answer(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.server.count(self.command, status)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path != TOKEN_PATH:
            self._answer(404, "Not Found")
            return
        if self.headers.get("X-Forwarded-For") is not None:
            self._answer(403, "Forbidden")
            return
        ttl = (self.headers.get(TTL_HEADER) or "").strip()
        if not ttl.isdigit() or not 1 <= int(ttl) <= MAX_TTL:
            self._answer(400, "Missing or Invalid Parameters")
            return
        token = self.server.new_token(int(ttl))
        self._answer(200, token, {TTL_HEADER: ttl})

    def do_GET(self) -> None:
        if self.path == TOKEN_PATH:  # the token is PUT only
            self._answer(405, "Method Not Allowed", {"Allow": "OPTIONS, PUT"})
            return
        if not self.server.token_valid(self.headers.get(TOKEN_HEADER)):
            self._answer(401, "Unauthorized")
            return
        status, body = self._lookup(self.path.split("?", 1)[0])
        self._answer(status, body)

    do_HEAD = do_GET

    def _refuse(self) -> None:
        self._answer(405, "Method Not Allowed", {"Allow": "OPTIONS, GET, HEAD, PUT"})

    do_POST = do_DELETE = do_PATCH = _refuse

    def _lookup(self, path: str) -> tuple[int, str]:
        state = self.server.state()
        items: dict[str, Any] = {
            "instance-id": state["instance_id"],
            "instance-life-cycle": state["life_cycle"],
            "spot/instance-action": _text(state["instance_action"]),
            "events/recommendations/rebalance": _text(state["rebalance"]),
        }
        items = {k: v for k, v in items.items() if v is not None}
        if path in ("/latest", "/latest/"):
            return 200, "dynamic\nmeta-data\n"
        prefix = "/latest/meta-data/"
        if not (path + "/").startswith(prefix):
            return 404, "Not Found"
        key = path[len(prefix):]
        if key in items:
            return 200, items[key]
        if key == "" or key.endswith("/"):  # a listing: the next level's names
            below = set()
            for item in items:
                if item.startswith(key):
                    head, slash, _ = item[len(key):].partition("/")
                    below.add(head + slash)
            if below:
                return 200, "\n".join(sorted(below))
        return 404, "Not Found"


def _text(value: Any) -> str | None:
    """A notice as IMDS sends it: compact JSON as in the documentation's examples."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(", ", ": "))


def serve_in_thread(state_path: Path, port: int = 0) -> IMDSServer:
    """Start a stand-in on 127.0.0.1 (a free port by default) in a daemon thread."""
    server = IMDSServer(state_path, port=port)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="imds",
                     daemon=True).start()
    return server


# --- the local cloud's CLI: one detached stand-in per box, in the registry ---------------

KIND = "imds"


def state_file(registry, name: str) -> Path:
    return registry.root / f"imds-{name}.json"


def start(registry, name: str, life_cycle: str = "spot", instance_id: str | None = None,
          port: int | None = None, timeout: float = 15.0) -> dict:
    from . import procs

    record = registry.get(KIND, name)
    if record and procs.alive(record["pid"], record.get("pid_start")):
        return record
    state = state_file(registry, name)
    write_state(state, life_cycle=life_cycle,
                instance_id=instance_id or f"i-{secrets.token_hex(8)}",
                instance_action=None, rebalance=None)
    record = {"name": name, "port": port or procs.free_port(), "state": str(state),
              "pid": None, "pid_start": None}
    record["endpoint"] = f"http://127.0.0.1:{record['port']}"
    registry.put(KIND, name, record)  # recorded before it starts
    repo = Path(__file__).resolve().parent.parent
    record["pid"] = procs.start_detached(
        [sys.executable, "-m", "localcloud.imds", "serve", "--state", str(state),
         "--port", str(record["port"])],
        registry.root / f"imds-{name}.log", env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(repo)})
    record["pid_start"] = procs.proc_start_time(record["pid"])
    registry.put(KIND, name, record)
    procs.wait_for_port(record["port"], timeout)
    return record


def stop(registry, name: str) -> None:
    from . import procs

    record = registry.get(KIND, name)
    if not record:
        return
    if record.get("pid"):
        procs.stop(record["pid"], record.get("pid_start"))
    for path in (Path(record["state"]), Path(f"{record['state']}.lock")):
        path.unlink(missing_ok=True)
    registry.drop(KIND, name)


def main(argv: list[str], registry=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localcloud imds",
                                     description="the IMDSv2 stand-in of a box")
    sub = parser.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("serve", help="run a stand-in in the foreground")
    p.add_argument("--state", required=True)
    p.add_argument("--port", type=int, default=0)
    p = sub.add_parser("start", help="start the box's stand-in (detached) and print it")
    p.add_argument("name")
    p.add_argument("--life-cycle", choices=["spot", "on-demand"], default="spot")
    p.add_argument("--instance-id")
    p.add_argument("--port", type=int)
    p = sub.add_parser("notice", help="publish a spot interruption notice")
    p.add_argument("name")
    p.add_argument("--action", choices=ACTIONS, required=True)
    p.add_argument("--in", dest="seconds", type=float, default=120,
                   help="seconds until the action (AWS gives two minutes)")
    for verb, text in (("rebalance", "publish a rebalance recommendation"),
                       ("clear", "withdraw notice and recommendation (404 again)"),
                       ("expire-tokens", "make every token handed out so far invalid"),
                       ("show", "print the stand-in's record and state"),
                       ("stop", "end the stand-in")):
        sub.add_parser(verb, help=text).add_argument("name")
    args = parser.parse_args(argv)

    if args.verb == "serve":
        server = IMDSServer(Path(args.state), port=args.port)
        print(f"localcloud imds: {server.endpoint} ({args.state})", flush=True)
        server.serve_forever()
        return
    if registry is None:
        from .registry import Registry

        registry = Registry()
    if args.verb == "start":
        record = start(registry, args.name, args.life_cycle, args.instance_id, args.port)
        print(json.dumps(record, indent=2, sort_keys=True))
        return
    record = registry.get(KIND, args.name)
    if record is None:
        sys.exit(f"no IMDS stand-in for {args.name}: python -m localcloud imds start {args.name}")
    state = Path(record["state"])
    if args.verb == "notice":
        print(json.dumps(publish_notice(state, args.action, args.seconds)))
    elif args.verb == "rebalance":
        print(json.dumps(publish_rebalance(state)))
    elif args.verb == "clear":
        write_state(state, instance_action=None, rebalance=None)
    elif args.verb == "expire-tokens":
        expire_tokens(state)
    elif args.verb == "show":
        print(json.dumps({**record, "state": read_state(state)}, indent=2, sort_keys=True))
    elif args.verb == "stop":
        stop(registry, args.name)


if __name__ == "__main__":
    main(sys.argv[1:])
