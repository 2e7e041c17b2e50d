"""The AWS API emulator: a moto server on 127.0.0.1, on a free port."""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

from . import procs
from .registry import Registry

NAME = "default"
REGION = "us-east-2"
AMIS = Path(__file__).resolve().parent / "data" / "amis.json"


def endpoint(record: dict) -> str:
    return f"http://127.0.0.1:{record['port']}"


def aws_env(record: dict) -> dict[str, str]:
    """Environment that points boto3, amazon.aws and the aws_ec2 inventory at moto."""
    return {
        "AWS_ENDPOINT_URL": endpoint(record),
        "AWS_ACCESS_KEY_ID": "localcloud",
        "AWS_SECRET_ACCESS_KEY": "localcloud",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


def start(registry: Registry, timeout: float = 30.0) -> dict:
    record = registry.get("moto", NAME)
    if record and procs.alive(record["pid"], record.get("pid_start")):
        return record
    port = procs.free_port()
    record = {"port": port, "pid": None, "pid_start": None}
    registry.put("moto", NAME, record)
    server = Path(sys.executable).with_name("moto_server")
    env = {"PATH": "/usr/bin:/bin", "MOTO_AMIS_PATH": str(AMIS)}
    record["pid"] = procs.start_detached(
        [str(server), "-H", "127.0.0.1", "-p", str(port)], registry.root / "moto.log", env=env
    )
    record["pid_start"] = procs.proc_start_time(record["pid"])
    registry.put("moto", NAME, record)
    procs.wait_for_port(port, timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{endpoint(record)}/moto-api/", timeout=2).close()
            return record
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def reset(record: dict) -> None:
    """Empty the emulator (POST /moto-api/reset)."""
    request = urllib.request.Request(f"{endpoint(record)}/moto-api/reset", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def stop(registry: Registry) -> None:
    record = registry.get("moto", NAME)
    if not record:
        return
    if record.get("pid"):
        procs.stop(record["pid"], record.get("pid_start"))
    registry.drop("moto", NAME)
