"""The AWS API emulator: moto on 127.0.0.1 behind the AWS layer.

moto runs unmodified on an internal free port; the AWS layer
(localcloud/awslayer, an HTTP proxy) listens on the public port and applies
the rules of AWS that moto does not (localcloud/README.md). The registry's
moto record keeps ``port`` = the layer's port, so every client goes through
it, and ``moto_port`` for moto itself.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from pathlib import Path

from . import procs
from .registry import Registry

NAME = "default"
REGION = "us-east-2"
AMIS = Path(__file__).resolve().parent / "data" / "amis.json"
REPO = Path(__file__).resolve().parent.parent
PASSED_ENV = {"HOME", "XDG_CACHE_HOME", "SPOTBOX_CACHE", "SPOTBOX_DEBIAN_MIRROR", "http_proxy",
              "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
              "PIP_INDEX_URL", "PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}


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


def _running(record: dict | None) -> bool:
    return bool(record and record.get("pid") and procs.alive(record["pid"], record.get("pid_start"))
                and record.get("layer_pid")
                and procs.alive(record["layer_pid"], record.get("layer_pid_start")))


def start(registry: Registry, timeout: float = 30.0) -> dict:
    record = registry.get("moto", NAME)
    if _running(record):
        return record
    if record:
        stop(registry)  # half of it died: start both afresh
    port, moto_port = procs.free_port(), procs.free_port()
    while moto_port == port:
        moto_port = procs.free_port()
    record = {"port": port, "moto_port": moto_port, "pid": None, "pid_start": None,
              "layer_pid": None, "layer_pid_start": None}
    registry.put("moto", NAME, record)
    server = Path(sys.executable).with_name("moto_server")
    env = {"PATH": "/usr/bin:/bin", "MOTO_AMIS_PATH": str(AMIS)}
    record["pid"] = procs.start_detached(
        [str(server), "-H", "127.0.0.1", "-p", str(moto_port)], registry.root / "moto.log",
        env=env,
    )
    record["pid_start"] = procs.proc_start_time(record["pid"])
    registry.put("moto", NAME, record)
    # The layer boots the instances' boxes: it finds the image cache as the caller
    # does (HOME, SPOTBOX_CACHE), and a proxy if a wheel must be fetched.
    layer_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO),
                 **{k: v for k, v in os.environ.items() if k in PASSED_ENV}}
    record["layer_pid"] = procs.start_detached(
        [sys.executable, "-m", "localcloud.awslayer", "--port", str(port),
         "--moto-port", str(moto_port), "--state", str(registry.root), "--boxes"],
        registry.root / "awslayer.log", env=layer_env,
    )
    record["layer_pid_start"] = procs.proc_start_time(record["layer_pid"])
    registry.put("moto", NAME, record)
    procs.wait_for_port(moto_port, timeout)
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
    if record.get("layer_pid"):
        procs.stop(record["layer_pid"], record.get("layer_pid_start"))
    if record.get("pid"):
        procs.stop(record["pid"], record.get("pid_start"))
    registry.drop("moto", NAME)
