"""SSH ProxyCommand that maps an emulated EC2 instance to the box standing in for it.

ssh -o ProxyCommand='python -m localcloud ssh-proxy %h %p' ubuntu@10.0.0.5

The instance whose public or private IP is %h is looked up in the emulator;
the box whose instance id is the instance's stands in for it (the AWS layer
boots one for every instance). A box still booting (the instance is pending,
or running but its sshd not up yet) is waited for, up to BOOT_WAIT seconds,
so that Ansible's wait_for_connection sees a connection as on EC2. As cloud-init
does on EC2 from instance metadata, the instance's key pair's public key is
authorised for the login user before the connection is relayed. Only
loopback addresses are ever connected to.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys
import time
from pathlib import Path

from . import boxes, moto, procs, rootfs
from .registry import Registry

BOOT_WAIT = 60.0


def _ec2(registry: Registry):
    import boto3

    server = registry.snapshot().get("moto", {}).get(moto.NAME)
    if not server:
        raise LookupError("the AWS emulator is not running in this local cloud")
    env = moto.aws_env(server)
    return boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=moto.REGION,
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def instance_at(registry: Registry, address: str, ec2=None) -> dict:
    """The pending or running emulated instance whose public or private IP is address."""
    ec2 = ec2 or _ec2(registry)
    for field in ("ip-address", "private-ip-address"):
        reservations = ec2.describe_instances(Filters=[
            {"Name": field, "Values": [address]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ])["Reservations"]
        instances = [i for r in reservations for i in r["Instances"]]
        if instances:
            return instances[0]
    raise LookupError(f"no running emulated instance has the address {address}")


def find_box(registry: Registry, address: str) -> tuple[dict, str | None]:
    """The box standing in for the instance at address, and its key pair's public key."""
    ec2 = _ec2(registry)
    instance = instance_at(registry, address, ec2)
    box = wait_for_box(registry, instance["InstanceId"])
    pubkey = None
    if instance.get("KeyName"):
        pairs = ec2.describe_key_pairs(KeyNames=[instance["KeyName"]], IncludePublicKey=True)
        pubkey = pairs["KeyPairs"][0].get("PublicKey")
    return box, pubkey


def wait_for_box(registry: Registry, instance_id: str, timeout: float = BOOT_WAIT) -> dict:
    """The box of instance_id once its sshd accepts connections (it may still be booting)."""
    deadline = time.monotonic() + timeout
    while True:
        box = boxes.by_instance(registry, instance_id)
        if box and box.get("pid") and boxes.running(box):
            try:
                procs.wait_for_port(box["port"], min(1.0, max(0.1, deadline - time.monotonic())))
                return box
            except TimeoutError:
                pass
        if time.monotonic() > deadline:
            state = box.get("state") if box else "no box yet"
            raise LookupError(f"the box of instance {instance_id} is not up after "
                              f"{timeout:.0f} s ({state})")
        time.sleep(0.2)


def authorise(box: dict, pubkey: str) -> None:
    """Add pubkey to the box's login user's authorized_keys (once)."""
    keys = Path(box["root"]) / "home" / rootfs.LOGIN_USER / ".ssh" / "authorized_keys"
    current = keys.read_text(encoding="utf-8")
    if pubkey.strip() not in current:
        keys.write_text(current + pubkey.strip() + "\n", encoding="utf-8")


def relay(port: int) -> None:
    """Relay stdin/stdout to 127.0.0.1:port until either side closes."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        selector = selectors.DefaultSelector()
        selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "in")
        selector.register(conn, selectors.EVENT_READ, "sock")
        while True:
            for key, _ in selector.select():
                if key.data == "in":
                    data = os.read(sys.stdin.fileno(), 65536)
                    if not data:
                        conn.shutdown(socket.SHUT_WR)
                        selector.unregister(sys.stdin.fileno())
                        continue
                    conn.sendall(data)
                else:
                    data = conn.recv(65536)
                    if not data:
                        return
                    os.write(sys.stdout.fileno(), data)


def main(address: str) -> None:
    try:
        box, pubkey = find_box(Registry(), address)
    except LookupError as exc:
        sys.exit(f"localcloud ssh-proxy: {exc}")
    if pubkey:
        authorise(box, pubkey)
    relay(box["port"])
