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
# the names udev would for the local cloud's volumes only, as they are attached
# and detached (the box is not rebooted): the name asked for at attach time
# (/dev/sdf, and /dev/xvdf as Xen showed it), the NVMe by-id link whose serial
# is the volume id (/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_volXXXX,
# "-partN" for partitions), a /dev link per partition and /dev/disk/by-uuid
# links, so that fstab's UUID= entries mount. /etc/localcloud/volumes holds one
# line per attached volume: LOOP DEVICE SERIAL. A link into /run/hostdev that
# no listed volume accounts for any more (a detached volume) is removed.
DEVLINKS_SCRIPT = """#!/bin/sh
set -u
link() {  # link NAME TARGET: make it, and remember it is wanted
  [ "$(readlink "$1")" = "$2" ] || { mkdir -p "${1%/*}" && ln -sfn "$2" "$1"; }
  wanted="$wanted $1 "
}
while :; do
  wanted=" "
  if [ -f /etc/localcloud/volumes ]; then
    while read -r disk device serial; do
      [ -n "$disk" ] && [ -b "/run/hostdev/$disk" ] || continue
      byid="/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$serial"
      [ -n "$device" ] && link "$device" "/run/hostdev/$disk"
      case "$device" in /dev/sd*) link "/dev/xvd${device#/dev/sd}" "/run/hostdev/$disk";; esac
      [ -n "$serial" ] && link "$byid" "/run/hostdev/$disk"
      for dev in "/run/hostdev/$disk" /run/hostdev/"$disk"p*; do
        [ -b "$dev" ] || continue
        name=${dev##*/}
        link "/dev/$name" "$dev"
        part=${name#"$disk"p}
        [ "$part" != "$name" ] && [ -n "$serial" ] && link "$byid-part$part" "$dev"
        uuid=$(blkid -p -o value -s UUID "$dev" 2>/dev/null) || uuid=
        [ -n "$uuid" ] && link "/dev/disk/by-uuid/$uuid" "$dev"
      done
    done < /etc/localcloud/volumes
  fi
  for old in /dev/* /dev/disk/by-id/* /dev/disk/by-uuid/*; do
    [ -L "$old" ] || continue
    case "$(readlink "$old")" in /run/hostdev/*) ;; *) continue;; esac
    case "$wanted" in *" $old "*) ;; *) rm -f "$old";; esac
  done
  sleep 0.5
done
"""
DEVLINKS_UNIT = """[Unit]
Description=localcloud: device links udev would make for attached volumes
DefaultDependencies=no
Before=local-fs-pre.target shutdown.target
# Without the default dependencies it must be told to stop at shutdown, else the
# box's poweroff waits for its final kill of remaining processes.
Conflicts=shutdown.target

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


def volumes_file(attached: list[dict]) -> str:
    """/etc/localcloud/volumes for the devlinks service: LOOP DEVICE SERIAL per volume."""
    lines = []
    for vol in attached:
        serial = vol["volume_id"].replace("vol-", "vol", 1)  # as EBS NVMe serials read
        lines.append(f"{Path(vol['loop']).name} {vol['device']} {serial}\n")
    return "".join(lines)


def by_instance(registry: Registry, instance_id: str) -> dict | None:
    """The box standing in for an EC2 instance, None when there is none."""
    for record in registry.snapshot().get("box", {}).values():
        if record.get("instance_id") == instance_id:
            return record
    return None


def create(
    registry: Registry,
    name: str,
    attach: list[dict] | None = None,
    pubkey: str | None = None,
    timeout: float = 60.0,
    port: int | None = None,
) -> dict:
    """Boot a box called name (an overlay on the root filesystem) and wait until sshd
    answers and systemd is up.

    attach: [{"volume": NAME, "device": "/dev/xvdf"}]; the volumes must exist.
    """
    existing = registry.get("box", name)
    if existing and existing.get("pid") and procs.alive(existing["pid"],
                                                         existing.get("pid_start")):
        return existing
    if existing:
        destroy(registry, name)
    started = time.monotonic()
    attached = []
    for item in attach or []:
        vol = registry.get("volume", item["volume"])
        if not vol or not vol.get("loop"):
            raise RuntimeError(f"volume {item['volume']} is not attached to a loop device")
        attached.append({"volume": vol["name"], "device": item.get("device", "/dev/xvdf"),
                         "loop": vol["loop"], "volume_id": vol["volume_id"]})
    try:
        prepare(registry, name, rootfs.ensure_rootfs(), pubkey=pubkey, port=port,
                volumes=attached, overlay=True)
        return power_on(registry, name, timeout=timeout, started=started)
    except BaseException:
        destroy(registry, name)
        raise


def prepare(registry: Registry, name: str, image: Path, *, pubkey: str | None = None,
            port: int | None = None, volumes: list[dict] | None = None,
            overlay: bool = False, hostname: str | None = None, **extra) -> dict:
    """Make box name's root from image and record it (powered off).

    overlay: the root is an overlay on the image (the box's changes in NAME.upper),
    so that a box starts without copying the image; else a copy of it.
    extra: more fields for the record (an instance id, say).
    """
    key = ssh_key(registry)
    root = registry.root / "boxes" / name
    record = {
        "name": name, "root": str(root), "pid": None, "pid_start": None,
        "port": port or procs.free_port(), "host": "127.0.0.1", "user": rootfs.LOGIN_USER,
        "key": str(key), "volumes": volumes or [], "image": str(image),
        "layout": "overlay" if overlay else "copy", "state": "preparing", **extra,
    }
    registry.put("box", name, record)  # recorded before anything exists
    root.parent.mkdir(parents=True, exist_ok=True)
    if overlay:
        upper, work = Path(f"{root}.upper"), Path(f"{root}.work")
        for path in (root, upper, work):
            path.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={image},upperdir={upper},workdir={work}", str(root)],
                       check=True)
    else:
        subprocess.run(["cp", "-a", "--reflink=auto", str(image), str(root)], check=True)
    _personalise(root, hostname or name, record["port"], key, pubkey)
    write_volumes(record)
    record["state"] = "stopped"
    registry.put("box", name, record)
    return record


def power_on(registry: Registry, name: str, timeout: float = 60.0, wait: bool = True,
             started: float | None = None) -> dict:
    """Boot box name from its root (a fresh one, or one powered off before)."""
    record = registry.get("box", name)
    if record is None:
        raise KeyError(f"no box named {name}")
    if record.get("pid") and procs.alive(record["pid"], record.get("pid_start")):
        return record
    started = time.monotonic() if started is None else started
    # The host's /dev is always bound: a volume attached later appears in
    # /run/hostdev without a reboot. root on an EC2 instance may resize a mounted
    # ext4 (EXT4_IOC_RESIZE_FS needs CAP_SYS_RESOURCE, which nspawn drops by default).
    argv = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet",
            "-D", record["root"], "-M", name, "--boot", "--console=passive",
            f"--bind=/dev:{HOSTDEV}", "--capability=CAP_SYS_RESOURCE"]
    record["state"] = "booting"
    record["pid"] = procs.start_detached(argv, registry.root / "boxes" / f"{name}.log")
    record["pid_start"] = procs.proc_start_time(record["pid"])
    registry.put("box", name, record)
    if not wait:
        return record
    wait_ready(record, timeout)
    record["boot_seconds"] = round(time.monotonic() - started, 2)
    record["state"] = "running"
    registry.update("box", name, boot_seconds=record["boot_seconds"], state="running")
    return record


def power_off(registry: Registry, name: str, timeout: float = 30.0) -> None:
    """Shut box name down (SIGTERM to its nspawn: an orderly poweroff); its root stays."""
    record = registry.get("box", name)
    if not record:
        return
    if record.get("pid"):
        procs.stop(record["pid"], record.get("pid_start"), timeout=timeout)
    registry.update("box", name, pid=None, pid_start=None, state="stopped")


def running(record: dict) -> bool:
    return bool(record.get("pid")) and procs.alive(record["pid"], record.get("pid_start"))


def write_volumes(record: dict) -> None:
    """Tell the box's devlinks service which volumes are attached (it acts within a second)."""
    conf = Path(record["root"]) / "etc/localcloud"
    conf.mkdir(exist_ok=True)
    tmp = conf / ".volumes.tmp"
    tmp.write_text(volumes_file(record.get("volumes", [])), encoding="utf-8")
    tmp.replace(conf / "volumes")


def attach(registry: Registry, name: str, volume: dict, device: str) -> dict:
    """Attach a loop volume (its registry record) to box name, hot."""
    entry = {"volume": volume["name"], "device": device, "loop": volume["loop"],
             "volume_id": volume["volume_id"]}
    with registry.edit() as data:
        record = data["box"][name]
        record["volumes"] = [v for v in record.get("volumes", [])
                             if v["volume"] != volume["name"]] + [entry]
    write_volumes(record)
    return record


def detach(registry: Registry, name: str, volume_name: str) -> dict:
    """Detach a volume from box name, hot (its links go within a second)."""
    with registry.edit() as data:
        record = data["box"][name]
        record["volumes"] = [v for v in record.get("volumes", []) if v["volume"] != volume_name]
    write_volumes(record)
    return record


def _personalise(root: Path, name: str, port: int, key: Path, pubkey: str | None) -> None:
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
    (root / "etc/localcloud").mkdir(exist_ok=True)
    script = root / "usr/local/sbin/localcloud-devlinks"
    script.write_text(DEVLINKS_SCRIPT, encoding="utf-8")
    script.chmod(0o755)
    unit = root / "etc/systemd/system/localcloud-devlinks.service"
    unit.write_text(DEVLINKS_UNIT, encoding="utf-8")
    wants = root / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(exist_ok=True)
    link = wants / unit.name
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{unit.name}")


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
    for path in (root, Path(f"{root}.upper"), Path(f"{root}.work")):
        if path.exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    Path(f"{root}.log").unlink(missing_ok=True)
    registry.drop("box", name)


def attached_volumes(record: dict) -> list[str]:
    return [v["volume"] for v in record.get("volumes", [])]


__all__ = ["attached_volumes", "create", "destroy", "ssh_argv", "volumes"]
