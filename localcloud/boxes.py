"""Boxes: copies of the cached root filesystem booted with systemd-nspawn."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from . import procs, rootfs, volumes
from .registry import Registry

SSH_OPTIONS = [
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=5",
]
# Inside a box, the host's /dev appears here so that partitions made on a
# loop device (the box has no udev) show up as /run/hostdev/loopNpM.
HOSTDEV = "/run/hostdev"
# The box has no udev (no device events in a container). This stand-in makes
# the names udev would for the local cloud's volumes only: a /dev link per
# partition and /dev/disk/by-uuid links, so that fstab's UUID= entries mount.
DEVLINKS_SCRIPT = """#!/bin/sh
set -u
while :; do
  for disk in $(cat /etc/localcloud/volumes); do
    for dev in "/run/hostdev/$disk" /run/hostdev/"$disk"p*; do
      [ -b "$dev" ] || continue
      name=${dev##*/}
      [ -e "/dev/$name" ] || ln -sf "$dev" "/dev/$name"
      uuid=$(blkid -p -o value -s UUID "$dev" 2>/dev/null) || uuid=
      if [ -n "$uuid" ] && [ "$(readlink "/dev/disk/by-uuid/$uuid")" != "$dev" ]; then
        mkdir -p /dev/disk/by-uuid && ln -sfn "$dev" "/dev/disk/by-uuid/$uuid"
      fi
    done
  done
  for link in /dev/disk/by-uuid/*; do
    [ -L "$link" ] || continue
    target=$(readlink "$link")
    [ "$(blkid -p -o value -s UUID "$target" 2>/dev/null)" = "${link##*/}" ] || rm -f "$link"
  done
  sleep 0.5
done
"""
DEVLINKS_UNIT = """[Unit]
Description=localcloud: device links udev would make for attached volumes
DefaultDependencies=no
Before=local-fs-pre.target

[Service]
ExecStart=/usr/local/sbin/localcloud-devlinks

[Install]
WantedBy=sysinit.target
"""


def ssh_key(registry: Registry) -> Path:
    """The harness's SSH key (the EC2 key pair's stand-in), made once per state dir."""
    key = registry.root / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "spotbox-localcloud",
             "-f", str(key)],
            check=True,
        )
    return key


def ssh_argv(record: dict, *command: str) -> list[str]:
    return [
        "ssh", *SSH_OPTIONS, "-i", record["key"], "-p", str(record["port"]),
        f"{record['user']}@{record['host']}", *command,
    ]


def ansible_inventory(record: dict, host: str) -> dict:
    """An Ansible inventory that reaches the box directly (not through the emulator's route)."""
    return {"all": {"hosts": {host: {
        "ansible_host": record["host"], "ansible_port": record["port"],
        "ansible_user": record["user"], "ansible_ssh_private_key_file": record["key"],
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
    }}}}


def _volume_links(attached: list[dict]) -> str:
    """tmpfiles.d lines naming each volume as EC2 would (xvd*, NVMe by-id)."""
    lines = []
    for vol in attached:
        target = f"{HOSTDEV}/{Path(vol['loop']).name}"
        lines.append(f"L+ {vol['device']} - - - - {target}")
        serial = vol["volume_id"].replace("vol-", "vol", 1)  # as EBS NVMe serials read
        lines.append(
            f"L+ /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial} - - - - {target}"
        )
    return "\n".join(lines) + "\n"


def create(
    registry: Registry,
    name: str,
    attach: list[dict] | None = None,
    pubkey: str | None = None,
    timeout: float = 60.0,
    port: int | None = None,
) -> dict:
    """Boot a box called name and wait until sshd answers and systemd is up.

    attach: [{"volume": NAME, "device": "/dev/xvdf"}]; the volumes must exist.
    """
    existing = registry.get("box", name)
    if existing and procs.alive(existing["pid"], existing.get("pid_start")):
        return existing
    if existing:
        destroy(registry, name)
    started = time.monotonic()
    base = rootfs.ensure_rootfs()
    key = ssh_key(registry)
    root = registry.root / "boxes" / name
    record = {
        "name": name, "root": str(root), "pid": None, "pid_start": None,
        "port": port or procs.free_port(), "host": "127.0.0.1", "user": rootfs.LOGIN_USER,
        "key": str(key), "volumes": [],
    }
    registry.put("box", name, record)  # recorded before anything exists
    try:
        return _boot(registry, record, base, key, attach or [], pubkey, timeout, started)
    except BaseException:
        destroy(registry, name)
        raise


def _boot(registry: Registry, record: dict, base: Path, key: Path, attach: list[dict],
          pubkey: str | None, timeout: float, started: float) -> dict:
    name, root = record["name"], Path(record["root"])
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)

    attached = []
    for item in attach:
        vol = registry.get("volume", item["volume"])
        if not vol or not vol.get("loop"):
            raise RuntimeError(f"volume {item['volume']} is not attached to a loop device")
        attached.append({**vol, "device": item.get("device", "/dev/xvdf")})
    record["volumes"] = [{"volume": v["name"], "device": v["device"], "loop": v["loop"],
                          "volume_id": v["volume_id"]} for v in attached]
    _personalise(root, name, record["port"], key, pubkey, attached)

    argv = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet",
            "-D", str(root), "-M", name, "--boot", "--console=passive"]
    if attached:
        # root on an EC2 instance may resize a mounted ext4 (EXT4_IOC_RESIZE_FS
        # needs CAP_SYS_RESOURCE, which nspawn drops by default).
        argv += [f"--bind=/dev:{HOSTDEV}", "--capability=CAP_SYS_RESOURCE"]
    record["pid"] = procs.start_detached(argv, registry.root / "boxes" / f"{name}.log")
    record["pid_start"] = procs.proc_start_time(record["pid"])
    registry.put("box", name, record)
    wait_ready(record, timeout)
    record["boot_seconds"] = round(time.monotonic() - started, 2)
    registry.put("box", name, record)
    return record


def _personalise(root: Path, name: str, port: int, key: Path, pubkey: str | None,
                 attached: list[dict]) -> None:
    (root / "etc/hostname").write_text(f"{name}\n", encoding="utf-8")
    (root / "etc/hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t{name}\n",
        encoding="utf-8",
    )
    # The box shares the host's network: its sshd gets its own port, on loopback only.
    (root / "etc/ssh/sshd_config.d/20-localcloud.conf").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\n", encoding="utf-8"
    )
    ssh_dir = root / "home" / rootfs.LOGIN_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = Path(f"{key}.pub").read_text(encoding="utf-8")
    if pubkey:
        keys += pubkey.strip() + "\n"
    (ssh_dir / "authorized_keys").write_text(keys, encoding="utf-8")
    (ssh_dir / "authorized_keys").chmod(0o600)
    owner = (root / "home" / rootfs.LOGIN_USER).stat()
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        shutil.chown(path, owner.st_uid, owner.st_gid)
    if attached:
        (root / "etc/tmpfiles.d/spotbox-volumes.conf").write_text(
            _volume_links(attached), encoding="utf-8"
        )
        (root / "etc/localcloud").mkdir(exist_ok=True)
        (root / "etc/localcloud/volumes").write_text(
            "".join(f"{Path(v['loop']).name}\n" for v in attached), encoding="utf-8"
        )
        script = root / "usr/local/sbin/localcloud-devlinks"
        script.write_text(DEVLINKS_SCRIPT, encoding="utf-8")
        script.chmod(0o755)
        unit = root / "etc/systemd/system/localcloud-devlinks.service"
        unit.write_text(DEVLINKS_UNIT, encoding="utf-8")
        wants = root / "etc/systemd/system/sysinit.target.wants"
        wants.mkdir(exist_ok=True)
        (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")


def wait_ready(record: dict, timeout: float) -> None:
    procs.wait_for_port(record["port"], timeout)
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(
            ssh_argv(record, "systemctl", "is-system-running", "--wait"),
            capture_output=True, text=True, check=False,
        )
        state = result.stdout.strip()
        if state in ("running", "degraded"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"box {record['name']}: ssh/systemd not ready: {result.stderr}{state}"
            )
        time.sleep(0.2)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            mountpoint = line.split()[1].encode().decode("unicode_escape")
            if mountpoint == prefix or mountpoint.startswith(prefix + "/"):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


def destroy(registry: Registry, name: str) -> None:
    """Power the box off (SIGTERM to its nspawn), remove its tree, keep its volumes."""
    record = registry.get("box", name)
    if not record:
        return
    if record.get("pid"):
        procs.stop(record["pid"], record.get("pid_start"), timeout=20)
    root = Path(record["root"])
    for mountpoint in _mounts_below(root):
        subprocess.run(["umount", "--lazy", mountpoint], check=False)
    if root.exists():
        shutil.rmtree(root)
    Path(f"{root}.log").unlink(missing_ok=True)
    registry.drop("box", name)


def attached_volumes(record: dict) -> list[str]:
    return [v["volume"] for v in record.get("volumes", [])]


__all__ = ["attached_volumes", "create", "destroy", "ssh_argv", "volumes"]
