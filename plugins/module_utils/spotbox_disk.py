"""Data volume logic for the data_volume role: find the EBS volume's device,
check that it is that volume, name its partition, and decide what may be done
to it without losing data.

The decisions are pure functions (decide, check_identity, check_mount_point,
parse_blkid, nonzero_edges) fed what was probed; the probing (blkid, sysfs,
reading the disk's edges) and the partition + format step are below them,
with their I/O injectable so that tests can feed recorded outputs. The
data_volume_info and data_volume_format modules call inspect() and
format_volume()."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time

EBS_BY_ID = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_"
EBS_MODEL = "Amazon Elastic Block Store"
INSTANCE_STORE_MODEL = "Amazon EC2 NVMe Instance Storage"
MIB = 1024 * 1024
# The filesystems data_volume_fstype offers: the only ones spotbox mounts.
MOUNTABLE = ("ext4", "xfs")
LOCK_PATH = "/run/lock/spotbox-data-volume.lock"

# Mount points refused, with everything below them (the box's own files,
# virtual filesystems, folders cleaned at boot) ...
SYSTEM_TREES = ("/boot", "/dev", "/etc", "/proc", "/run", "/sys", "/tmp", "/usr", "/var/tmp")
# ... and refused as such (a folder of your own below them is fine: /opt/data).
SYSTEM_FOLDERS = ("/", "/bin", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/opt", "/root",
                  "/sbin", "/snap", "/srv", "/var", "/var/lib")


class DiskError(Exception):
    """A problem the user must act on; the message says what to do."""


# --- Which device -------------------------------------------------------------------------

def ebs_by_id_path(volume_id: str) -> str:
    """vol-0abc -> /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc (Nitro NVMe serial)."""
    if not re.fullmatch(r"vol-[0-9a-zA-Z]+", volume_id):
        raise DiskError(f"O(volume_id) must look like vol-0123456789abcdef0, "
                        f"not {volume_id!r}")
    return EBS_BY_ID + ebs_serial(volume_id)


def ebs_serial(volume_id: str) -> str:
    """The NVMe serial of an EBS volume on Nitro: its id without the dash."""
    return volume_id.replace("vol-", "vol", 1)


def attach_name_candidates(device_name: str) -> list[str]:
    """Names a volume attached as /dev/sdf may have in the instance: sdf, xvdf."""
    match = re.fullmatch(r"/dev/(?:sd|xvd)([a-z]+)", device_name)
    if not match:
        return [device_name]
    letter = match.group(1)
    first = device_name
    other = f"/dev/xvd{letter}" if device_name.startswith("/dev/sd") else f"/dev/sd{letter}"
    return [first, other]


def sourced_candidates(volume_id: str, device_name: str, device: str) -> list[tuple[str, str]]:
    """(path, the variable that named it) to try, best first: explicit path, the volume id's
    NVMe by-id link, the attach names."""
    if device:
        return [(device, "O(device)")]
    paths = [(ebs_by_id_path(volume_id), "O(volume_id)")] if volume_id else []
    if device_name:
        paths += [(name, "O(device_name)")
                  for name in attach_name_candidates(device_name)]
    if not paths:
        raise DiskError("set O(volume_id), O(device_name) or O(device)")
    return paths


def candidates(volume_id: str, device_name: str, device: str) -> list[str]:
    """Paths to try, best first: explicit path, NVMe by-id of the volume, attach names."""
    return [path for path, _ in sourced_candidates(volume_id, device_name, device)]


def resolve(paths: list[str], exists=os.path.exists, realpath=os.path.realpath) -> str:
    """The real device path behind the first candidate that exists."""
    for path in paths:
        if exists(path):
            return realpath(path)
    raise DiskError(f"the data volume was not found at {', '.join(paths)}; is it attached? "
                    "(on Nitro instances it is an NVMe device: give O(volume_id))")


def check_identity(volume_id: str, disk: str, by_id_target: str, serial: str | None,
                   model: str | None) -> tuple[str, bool]:
    """Whether disk (a whole disk) may be the data volume: (how it was checked, warn).

    volume_id: the volume_id option ('' when unknown); by_id_target: the real path of the
    volume id's /dev/disk/by-id link ('' when there is none); serial/model: the disk's
    /sys/block/X/device/serial and model (None when it has none: not NVMe).
    Raises DiskError when the disk is provably not the volume. warn is True when the
    volume id is known but could not be checked (no NVMe serial, no by-id link).
    """
    model = (model or "").strip()
    if model == INSTANCE_STORE_MODEL:
        raise DiskError(
            f"it is an instance-store disk (model {model!r}), whose data is lost when the box "
            "stops or is interrupted; nothing was changed. Give the EBS data volume "
            "(O(volume_id), or O(device))")
    if not volume_id:
        return "not checked: O(volume_id) is not set", False
    if by_id_target and by_id_target != disk:
        raise DiskError(
            f"O(volume_id) {volume_id} is {by_id_target} (its /dev/disk/by-id link), "
            f"not this disk; nothing was changed. Leave O(device) empty to use the "
            "volume, or correct O(volume_id)")
    if serial is not None:
        serial = serial.strip()
        if serial != ebs_serial(volume_id) or model != EBS_MODEL:
            raise DiskError(
                f"its NVMe serial is {serial!r} and its model {model!r}, but "
                f"O(volume_id) {volume_id} would read {ebs_serial(volume_id)!r} and "
                f"{EBS_MODEL!r}: it is another disk, so nothing was changed. Correct "
                "O(volume_id) or O(device) (lsblk -o NAME,SERIAL,MODEL "
                "lists the disks)")
        return f"checked: NVMe serial {serial} and model {EBS_MODEL}", False
    if by_id_target == disk:
        return (f"named by the by-id link of {volume_id}; no NVMe serial to compare (a "
                "non-NVMe disk, such as the local cloud's loop devices)"), False
    return (f"NOT checked against O(volume_id) {volume_id}: the disk has no NVMe "
            "serial and no /dev/disk/by-id link names the volume (expected on Xen instances; "
            "on Nitro, compare with lsblk -o NAME,SERIAL,MODEL)"), True


# --- Where it is mounted ------------------------------------------------------------------

def mounted_from(mount_point: str, device: str, stat=os.stat, ismount=os.path.ismount) -> bool:
    """Whether mount_point is, now, a mount of the filesystem on device."""
    if not (mount_point and device):
        return False
    try:
        return ismount(mount_point) and stat(mount_point).st_dev == stat(device).st_rdev
    except OSError:
        return False


def check_mount_point(mount_point: str, home: str, realpath=os.path.realpath) -> str:
    """The mount point to use, or DiskError naming the mount_point option.

    Refused: a relative path; /, /home, the user's home and the folders above it; system
    folders (SYSTEM_FOLDERS) and anything in SYSTEM_TREES. Symlinks are followed.
    """
    if not mount_point.startswith("/"):
        raise DiskError(f"O(mount_point) must be an absolute path, not "
                        f"{mount_point!r}; nothing was changed")
    real = realpath(os.path.normpath(mount_point))
    home = realpath(os.path.normpath(home))
    shown = mount_point if real == mount_point else f"{mount_point} (that is {real})"
    if real == home or home.startswith(real.rstrip("/") + "/"):
        raise DiskError(
            f"O(mount_point) {shown} would hide the user's home {home} (and its "
            "~/.ssh/authorized_keys: the next SSH login fails); nothing was changed. Use a "
            "folder of its own, like the default /home/USER/Payload (O(mount_name))")
    inside = next((tree for tree in SYSTEM_TREES
                   if real == tree or real.startswith(tree + "/")), "")
    if inside or real in SYSTEM_FOLDERS:
        what = (f"in the system folder {inside}" if inside and inside != real
                else "a system folder")
        raise DiskError(
            f"O(mount_point) {shown} is {what}; mounting there hides or endangers "
            "the box's own files, so nothing was changed. Use a folder of its own, like the "
            "default /home/USER/Payload or /mnt/data")
    return real


# --- What the disk holds ------------------------------------------------------------------

def parse_blkid(path: str, rc: int, out: str, err: str) -> dict:
    """`blkid -p -o export PATH`'s answer as {KEY: value}; {} when it recognised nothing.

    rc 2 means "nothing found" only with an empty stderr: blkid also exits 2 when it cannot
    open or read the device (stderr says why), which is a refusal, never "empty".
    """
    if rc == 0:
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    why = err.strip()
    if rc == 2 and not why:
        return {}
    if rc == 2:
        raise DiskError(
            f"blkid could not read {path} ({why}), so what it holds is unknown; nothing was "
            "changed. Check that the volume is attached and healthy (dmesg), then re-run")
    if rc == 8:
        raise DiskError(
            f"blkid found more than one signature on {path} (ambivalent: {why or 'no detail'}), "
            f"so what it holds is unclear; nothing was changed. `wipefs --no-act {path}` lists "
            "them; remove the stale one yourself, or give another volume")
    raise DiskError(f"blkid -p {path} failed (rc {rc}: {why or 'no message'}); nothing was "
                    "changed")


def nonzero_edges(head: bytes, tail: bytes) -> list[str]:
    """Which of a device's first and last MiB (as read) hold anything but zeros."""
    found = []
    for name, chunk in (("first MiB", head), ("last MiB", tail)):
        if chunk.count(0) != len(chunk):
            found.append(name)
    return found


def read_edges(path: str, span: int = MIB) -> tuple[bytes, bytes]:
    """The first and last `span` bytes of path; DiskError when they cannot be read."""
    try:
        with open(path, "rb", buffering=0) as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                raise DiskError(f"{path} reads as 0 bytes, so what it holds is unknown; "
                                "nothing was changed. Check that the volume is attached")
            length = min(span, size)
            chunks = []
            for offset in (0, size - length):
                handle.seek(offset)
                chunk = b""
                while len(chunk) < length:
                    more = handle.read(length - len(chunk))
                    if not more:
                        raise OSError(f"short read at byte {offset + len(chunk)}")
                    chunk += more
                chunks.append(chunk)
    except OSError as exc:
        raise DiskError(f"could not read {path} ({exc.strerror or exc}), so what it holds is "
                        "unknown; nothing was changed. Check that the volume is attached and "
                        "healthy (dmesg), then re-run") from None
    return chunks[0], chunks[1]


def partition_path(disk: str, number: int = 1) -> str:
    """/dev/xvdf -> /dev/xvdf1; /dev/nvme1n1 or /dev/loop3 -> ...p1."""
    return f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"


def decide(disk: dict, partitions: list[dict], layout: str, fstype: str) -> dict:
    """What the role may do with the disk, from what was probed.

    disk: {"path", "type", "pttype" (blkid's TYPE/PTTYPE, '' when none), "data_at"
    (nonzero_edges of the disk, None when not read), "partition" (the device is itself a
    partition, named by the device option)}.
    partitions: [{"number", "path", "node" (its /dev node exists), "type", "data_at"}],
    as the kernel (sysfs) lists them.
    Returns {"state": "empty" | "partitioned" | "ready", "target": the device that holds
    (or will hold) the filesystem, "note": what to tell the user ('' mostly)}, or raises
    DiskError when the disk holds anything else or is not provably empty: nothing is touched.
    """
    path, found, pttype = disk["path"], disk["type"], disk["pttype"]
    if disk.get("partition"):
        return _holder(path, found, disk.get("data_at"), fstype, "the partition")
    if found:
        if pttype or partitions:
            raise DiskError(
                f"blkid finds a {found} signature on the whole disk, and also a partition table "
                f"({pttype or 'none that blkid reads'}; the kernel lists {len(partitions)} "
                "partition(s)): which one is in use is unclear, so nothing was changed. "
                f"Look with `lsblk -f {path}` and `wipefs --no-act {path}`, then give "
                "O(device) the device to mount, or another volume")
        if found != fstype:
            raise DiskError(_other_fs(found, fstype, "the whole disk"))
        note = "" if layout == "whole" else (
            f"{path} holds {found} on the whole disk (no partition table: a volume made by "
            "hand?): mounted as it is, not partitioned (O(layout): gpt applies to "
            "empty disks only)")
        return {"state": "ready", "target": path, "note": note}
    if pttype:
        if layout == "whole":
            raise DiskError(
                f"the disk has a partition table ({pttype}, {len(partitions)} partition(s)) "
                "but O(layout) is 'whole'; nothing was changed. Set "
                "O(layout): gpt to use it as it is")
        if not partitions:
            raise DiskError(
                f"the disk has a {pttype} partition table but the kernel lists no partition "
                f"on it: an empty table, or one the kernel has not read (`partx -a {path}` "
                "reads it); nothing was changed. Re-run after partx, or give another volume "
                "(O(volume_id) / O(device))")
        if len(partitions) != 1 or partitions[0]["number"] != 1:
            raise DiskError(
                f"the disk has {len(partitions)} partition(s) ({pttype}); spotbox uses a disk "
                "with exactly one partition; nothing was changed. Give O(device) the "
                "partition to use, or another volume")
        part = partitions[0]
        if not part.get("node"):
            raise DiskError(
                f"the kernel lists partition 1 but its device node {part['path']} does not "
                "exist, so what it holds cannot be read; nothing was changed. Wait for udev "
                f"(O(udev_timeout)) or run `partx -u {path}`, then re-run")
        return _holder(part["path"], part["type"], part.get("data_at"), fstype, part["path"])
    if partitions:
        raise DiskError(
            f"blkid finds no partition table on the disk, but the kernel lists "
            f"{len(partitions)} partition(s) ({', '.join(p['path'] for p in partitions)}): a "
            "damaged table, or one only the kernel knows, so it is not empty and nothing was "
            f"changed. Look with `lsblk -f {path}`; if it holds nothing you need, wipe it "
            "yourself and re-run, or give O(device) another volume")
    if disk.get("data_at") != []:
        raise DiskError(_unknown(path, "the disk", disk.get("data_at")))
    target = path if layout == "whole" else partition_path(path)
    return {"state": "empty", "target": target, "note": ""}


def _holder(path: str, found: str, data_at: list[str] | None, fstype: str, where: str) -> dict:
    """A device that holds the filesystem itself (a partition): ready, formattable, or not."""
    if found == fstype:
        return {"state": "ready", "target": path, "note": ""}
    if found:
        raise DiskError(_other_fs(found, fstype, where))
    if data_at != []:
        raise DiskError(_unknown(path, where, data_at))
    return {"state": "partitioned", "target": path, "note": ""}


def _unknown(path: str, where: str, data_at: list[str] | None) -> str:
    seen = (f"non-zero bytes in its {' and '.join(data_at)}" if data_at
            else "its first and last MiB were not read")
    return (f"{where} has no partition table or filesystem that blkid recognises, but it is "
            f"not provably empty ({seen}): a damaged filesystem or raw data, so it is never "
            "formatted and nothing was changed. If you are sure it holds nothing you need, "
            f"zero it yourself (`wipefs -a {path}`, then `dd if=/dev/zero of={path} bs=1M "
            "count=1` and the same over its last MiB) and re-run; or give another volume "
            "(O(volume_id) / O(device))")


def _other_fs(found: str, wanted: str, where: str) -> str:
    if found in MOUNTABLE:
        return (f"{where} holds a {found} filesystem, not {wanted} (O(fstype)); it "
                f"is never reformatted, so nothing was changed. Set O(fstype): "
                f"{found} to mount it as it is, or give another volume")
    if found == "swap":
        return (f"{where} holds swap space (a swap signature), not a {wanted} filesystem; "
                "swap is never mounted as the data volume and never reformatted, so nothing "
                "was changed. If this is not your data volume, give the right one "
                "(O(volume_id) or O(device)); if it is and it holds nothing "
                "you need, swapoff it and wipe the signature yourself (wipefs -a DEVICE), "
                "then re-run")
    return (f"{where} holds {found}, not a {wanted} filesystem (spotbox mounts only "
            f"{' or '.join(MOUNTABLE)}, O(fstype)); it is never reformatted, so "
            "nothing was changed. Give another volume (O(volume_id) or "
            "O(device)), or move its data off and wipe it yourself")


def can_grow(disk_sectors: int, start: int, size: int, slack: int = 2048 * 2) -> bool:
    """True when the partition ends well before the disk does (the volume was enlarged).

    GPT keeps 33 sectors at the end; anything over `slack` sectors (2 MiB) is growth.
    """
    return disk_sectors - (start + size) > slack


def wait_for_path(path: str, seconds: float) -> bool:
    """Whether path exists, waiting up to seconds for it (0: look once)."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


# --- Probing (I/O) ------------------------------------------------------------------------

def _sysfs_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _sysfs_int(path: str) -> int:
    with open(path, encoding="ascii") as handle:
        return int(handle.read().strip())


def read_identity(disk: str, sys_block: str = "/sys/class/block") -> dict:
    """The whole disk behind disk (itself, or a partition's parent) and its NVMe serial and
    model from sysfs (None when there is none: loop, xvd, virtio disks)."""
    sysdir = os.path.realpath(os.path.join(sys_block, os.path.basename(disk)))
    whole = disk
    if os.path.exists(os.path.join(sysdir, "partition")):
        sysdir = os.path.dirname(sysdir)
        whole = os.path.join(os.path.dirname(disk), os.path.basename(sysdir))
    return {"whole": whole,
            "serial": _sysfs_text(os.path.join(sysdir, "device", "serial")),
            "model": _sysfs_text(os.path.join(sysdir, "device", "model"))}


def survey(disk: str, run, sys_block: str = "/sys/class/block") -> tuple[dict, list[dict]]:
    """Probe disk and the partitions the kernel lists: (disk, partitions) for decide().

    run(argv) -> (rc, stdout, stderr). blkid -p reads the devices itself (no udev cache);
    the first and last MiB are read where blkid recognised nothing.
    """
    name = os.path.basename(disk)
    sysdir = os.path.join(sys_block, name)

    def blkid(path: str) -> dict:
        return parse_blkid(path, *run(["blkid", "-p", "-o", "export", path]))

    found = blkid(disk)
    info = {"path": disk, "type": found.get("TYPE", ""), "pttype": found.get("PTTYPE", ""),
            "uuid": found.get("UUID", ""), "partition": os.path.exists(
                os.path.join(sysdir, "partition")), "data_at": None}
    if not info["type"] and not info["pttype"]:
        info["data_at"] = nonzero_edges(*read_edges(disk))
    partitions = []
    entries = sorted(os.listdir(sysdir)) if os.path.isdir(sysdir) else []
    for entry in entries:
        if not entry.startswith(name) or not os.path.exists(
                os.path.join(sysdir, entry, "partition")):
            continue
        number = _sysfs_int(os.path.join(sysdir, entry, "partition"))
        path = partition_path(disk, number)
        part = {"number": number, "path": path, "node": os.path.exists(path), "type": "",
                "uuid": "", "label": "", "data_at": None,
                "start": _sysfs_int(os.path.join(sysdir, entry, "start")),
                "sectors": _sysfs_int(os.path.join(sysdir, entry, "size"))}
        if part["node"]:
            probed = blkid(path)
            part.update(type=probed.get("TYPE", ""), uuid=probed.get("UUID", ""),
                        label=probed.get("LABEL", ""))
            if not part["type"]:
                part["data_at"] = nonzero_edges(*read_edges(path))
        partitions.append(part)
    partitions.sort(key=lambda part: part["number"])
    return info, partitions


def inspect(volume_id: str, device_name: str, device: str, layout: str, fstype: str, run,
            sys_block: str = "/sys/class/block", wait: float = 0) -> dict:
    """Find the data volume, check it is the volume, probe it and decide: the modules' result
    (disk, target, state, uuid, grow_partition, partitions, note, identity, warnings).
    wait: seconds to wait for the device to appear (an attachment made a moment ago).
    Raises DiskError with a message that starts with the device and the variable naming it."""
    sources = sourced_candidates(volume_id, device_name, device)
    deadline = time.monotonic() + wait
    while True:
        chosen = next(((path, var) for path, var in sources if os.path.exists(path)), None)
        if chosen is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if chosen is None:
        resolve([path for path, _ in sources])  # raises: not found
    path, variable = chosen
    disk = os.path.realpath(path)
    where = f"data volume {disk} ({variable} {path})" if disk != path else (
        f"data volume {disk} ({variable})")
    by_id = ebs_by_id_path(volume_id) if volume_id else ""
    by_id_target = os.path.realpath(by_id) if by_id and os.path.exists(by_id) else ""
    try:
        ident = read_identity(disk, sys_block)
        checked, warn = check_identity(volume_id, ident["whole"], by_id_target,
                                       ident["serial"], ident["model"])
        probed, partitions = survey(disk, run, sys_block)
        decision = decide(probed, partitions, layout, fstype)
    except DiskError as exc:
        raise DiskError(f"{where}: {exc}") from None
    target = decision["target"]
    uuid = probed["uuid"] if target == disk else next(
        (p["uuid"] for p in partitions if p["path"] == target), "")
    grow = (decision["state"] == "ready" and target != disk and bool(partitions)
            and can_grow(_sysfs_int(os.path.join(sys_block, os.path.basename(disk), "size")),
                         partitions[0]["start"], partitions[0]["sectors"]))
    return {"disk": disk, "target": target, "state": decision["state"], "uuid": uuid,
            "grow_partition": grow, "partitions": partitions, "note": decision["note"],
            "identity": checked, "warnings": [f"{where}: {checked}"] if warn else []}


# --- Partition and format (under a lock) -------------------------------------------------

@contextlib.contextmanager
def volume_lock(path: str = LOCK_PATH, seconds: float = 300, shared: bool = False):
    """flock on path for the block, waiting up to seconds for a holder of the other kind.

    Exclusive (the partition + format step) creates the file and its folder; shared (a
    probe: it waits while a format runs, so it never sees a half-made filesystem) uses
    the file only where it exists, and changes nothing on a box never formatted by us.
    """
    if shared and not os.path.exists(path):
        yield
        return
    try:
        if not shared:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        handle = os.open(path, (os.O_RDONLY if shared else os.O_RDWR | os.O_CREAT)
                         | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise DiskError(f"could not open the data volume's lock {path} ({exc.strerror}); "
                        "nothing was changed") from None
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise DiskError(
                        f"another run has held {path} (the data volume's lock) for over "
                        f"{seconds:g} s; nothing was changed. Wait for it to end, then "
                        "re-run") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(handle)


def mkfs_argv(fstype: str, label: str, target: str) -> list[str]:
    """mkfs without its force flag: it refuses a device where it finds a signature."""
    if fstype not in MOUNTABLE:
        raise DiskError(f"O(fstype) must be one of {', '.join(MOUNTABLE)}, "
                        f"not {fstype!r}")
    return [f"mkfs.{fstype}", "-q", "-L", label, target]


def parted_argv(disk: str, label: str, fstype: str) -> list[str]:
    """A GPT with one partition from 1 MiB to the end, named label."""
    return ["parted", "--script", "--align", "optimal", disk,
            "mklabel", "gpt", "mkpart", label, fstype, "1MiB", "100%"]


def format_volume(params: dict, run, check_mode: bool = False,
                  sys_block: str = "/sys/class/block", lock_path: str = LOCK_PATH,
                  lock_seconds: float = 300) -> dict:
    """Under the lock, probe again and partition/format only an empty disk or partition.

    params: volume_id, device_name, device, layout, fstype, label, udev_timeout.
    Returns inspect()'s result after the change, with changed and done (what was done).
    A disk another run formatted meanwhile is found ready and left alone.
    """
    def inspect_now() -> dict:
        return inspect(params["volume_id"], params["device_name"], params["device"],
                       params["layout"], params["fstype"], run, sys_block)

    def must(argv: list[str]) -> None:
        rc, out, err = run(argv)
        if rc != 0:
            raise DiskError(f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")

    timeout = params.get("udev_timeout", 30)
    lock = volume_lock(lock_path, lock_seconds, shared=check_mode)
    with lock:
        before = inspect_now()
        if before["state"] == "ready":
            return {**before, "changed": False, "done": []}
        done = []
        if before["state"] == "empty" and before["target"] != before["disk"]:
            done.append(f"made a GPT on {before['disk']} with partition {before['target']}")
            if not check_mode:
                must(parted_argv(before["disk"], params["label"], params["fstype"]))
                if not wait_for_path(before["target"], timeout):
                    raise DiskError(
                        f"the new partition's node {before['target']} did not appear within "
                        f"{timeout} s (O(udev_timeout)); the disk has a GPT and an "
                        "empty partition now, which the next run formats")
        done.append(f"made {params['fstype']} labelled {params['label']} on {before['target']}")
        if check_mode:
            return {**before, "changed": True, "done": done}
        after = inspect_now() if len(done) > 1 else before
        if after["state"] not in ("empty", "partitioned") or after["target"] != before["target"]:
            raise DiskError(f"after partitioning, {before['target']} was expected empty, "
                            f"but the probe says {after['state']} ({after['target']}); "
                            "nothing was formatted")
        must(mkfs_argv(params["fstype"], params["label"], after["target"]))
        result = inspect_now()
    link = f"/dev/disk/by-uuid/{result['uuid']}"
    if result["uuid"] and timeout > 0 and not wait_for_path(link, timeout):
        raise DiskError(f"{link} (the link to {result['target']}) did not appear within "
                        f"{timeout} s (O(udev_timeout)): is udev running?")
    return {**result, "changed": True, "done": done}
