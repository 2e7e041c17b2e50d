"""Data volume logic for the data_volume role: find the EBS volume's device,
name its partition, and decide what may be done to it without losing data.
Pure functions; the data_volume_info module feeds them what it probed."""

from __future__ import annotations

import os
import re
import time

EBS_BY_ID = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_"


class DiskError(Exception):
    """A problem the user must act on; the message says what to do."""


def ebs_by_id_path(volume_id: str) -> str:
    """vol-0abc -> /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc (Nitro NVMe serial)."""
    if not re.fullmatch(r"vol-[0-9a-zA-Z]+", volume_id):
        raise DiskError(f"data_volume_volume_id must look like vol-0123456789abcdef0, "
                        f"not {volume_id!r}")
    return EBS_BY_ID + volume_id.replace("vol-", "vol", 1)


def attach_name_candidates(device_name: str) -> list[str]:
    """Names a volume attached as /dev/sdf may have in the instance: sdf, xvdf."""
    match = re.fullmatch(r"/dev/(?:sd|xvd)([a-z]+)", device_name)
    if not match:
        return [device_name]
    letter = match.group(1)
    first = device_name
    other = f"/dev/xvd{letter}" if device_name.startswith("/dev/sd") else f"/dev/sd{letter}"
    return [first, other]


def candidates(volume_id: str, device_name: str, device: str) -> list[str]:
    """Paths to try, best first: explicit path, NVMe by-id of the volume, attach names."""
    if device:
        return [device]
    paths = [ebs_by_id_path(volume_id)] if volume_id else []
    if device_name:
        paths += attach_name_candidates(device_name)
    if not paths:
        raise DiskError("set data_volume_volume_id, data_volume_device_name or data_volume_device")
    return paths


def resolve(paths: list[str], exists=os.path.exists, realpath=os.path.realpath) -> str:
    """The real device path behind the first candidate that exists."""
    for path in paths:
        if exists(path):
            return realpath(path)
    raise DiskError(f"the data volume was not found at {', '.join(paths)}; is it attached? "
                    "(on Nitro instances it is an NVMe device: give data_volume_volume_id)")


def partition_path(disk: str, number: int = 1) -> str:
    """/dev/xvdf -> /dev/xvdf1; /dev/nvme1n1 or /dev/loop3 -> ...p1."""
    return f"{disk}{'p' if disk[-1].isdigit() else ''}{number}"


def decide(disk_type: str, disk_pttype: str, partitions: list[dict], layout: str,
           fstype: str) -> dict:
    """What the role may do with the disk.

    disk_type/disk_pttype: blkid's TYPE/PTTYPE of the whole disk ('' when none).
    partitions: [{"number", "path", "fstype"}] from the partition table.
    Returns {"state": "empty" | "partitioned" | "ready", "target": path or None},
    or raises DiskError when the disk holds something else (nothing is touched).
    """
    if layout == "whole":
        if disk_pttype or partitions:
            raise DiskError(
                f"the disk has a partition table ({disk_pttype or 'unknown'}, "
                f"{len(partitions)} partition(s)) but data_volume_layout is 'whole'; "
                "nothing was changed. Set data_volume_layout: gpt to use it as it is")
        if not disk_type:
            return {"state": "empty", "target": None}
        if disk_type != fstype:
            raise DiskError(_other_fs(disk_type, fstype, "the whole disk"))
        return {"state": "ready", "target": None}
    if disk_type and not disk_pttype:
        raise DiskError(
            f"the disk holds a {disk_type} filesystem on the whole disk (no partition table) "
            f"but data_volume_layout is 'gpt'; nothing was changed. Set data_volume_layout: "
            f"whole{'' if disk_type == fstype else ' and data_volume_fstype: ' + disk_type} "
            "to mount it, or move its data off and wipe it yourself")
    if not disk_pttype:
        return {"state": "empty", "target": None}
    if len(partitions) != 1 or partitions[0]["number"] != 1:
        raise DiskError(
            f"the disk has {len(partitions)} partition(s) ({disk_pttype}); spotbox uses a disk "
            "with exactly one partition; nothing was changed. Give data_volume_device the "
            "partition to use, or another volume")
    found = partitions[0]["fstype"]
    if not found:
        return {"state": "partitioned", "target": partitions[0]["path"]}
    if found != fstype:
        raise DiskError(_other_fs(found, fstype, partitions[0]["path"]))
    return {"state": "ready", "target": partitions[0]["path"]}


def _other_fs(found: str, wanted: str, where: str) -> str:
    return (f"{where} holds a {found} filesystem, not {wanted}; it is never reformatted, "
            f"so nothing was changed. Set data_volume_fstype: {found} to mount it as it is, "
            "or use another volume")


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
