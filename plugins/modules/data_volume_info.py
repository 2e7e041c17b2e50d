#!/usr/bin/python
"""Ansible module: find the data volume's device and say what may be done to it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: data_volume_info
short_description: Find the EBS data volume's device and decide what may safely be done to it
description:
  - Finds the device by an explicit path, by the EBS volume id (NVMe by-id name on Nitro
    instances), or by the device name used at attach time (/dev/sdf may appear as /dev/xvdf).
  - Probes the disk and its partitions with C(blkid -p) and sysfs (no udev needed).
  - Returns C(state) empty (may be partitioned and formatted), partitioned (one empty
    partition, may be formatted) or ready; fails, touching nothing, when the disk holds
    anything else.
  - Changes nothing; runs in check mode.
options:
  volume_id:
    description: EBS volume id (vol-...).
    type: str
    default: ""
  device_name:
    description: Device name used when the volume was attached (/dev/sdf).
    type: str
    default: ""
  device:
    description: Explicit device path; overrides the two above.
    type: str
    default: ""
  layout:
    description: C(gpt) (one partition) or C(whole) (filesystem on the whole disk).
    type: str
    choices: [gpt, whole]
    default: gpt
  fstype:
    description: The filesystem wanted.
    type: str
    default: ext4
  uuid_link_timeout:
    description:
      - Seconds to wait, when the target holds a filesystem, for its C(/dev/disk/by-uuid)
        link (udev makes it an instant after the filesystem appears; mounts by UUID need
        it); fails when it does not appear. 0 neither waits nor looks.
    type: int
    default: 0
author: spotbox
"""

EXAMPLES = r"""
- name: Find the data volume
  data_volume_info:
    volume_id: vol-0123456789abcdef0
    device_name: /dev/sdf
  register: data_volume
"""

RETURN = r"""
disk:
  description: The real path of the whole disk.
  returned: success
  type: str
  sample: /dev/nvme1n1
target:
  description: The path that holds (or will hold) the filesystem.
  returned: success
  type: str
  sample: /dev/nvme1n1p1
state:
  description: empty, partitioned or ready.
  returned: success
  type: str
uuid:
  description: UUID of the filesystem on target, or empty.
  returned: success
  type: str
grow_partition:
  description: True when the partition can be grown (the volume was enlarged).
  returned: success
  type: bool
partitions:
  description: Partitions found (number, path, fstype, uuid, label).
  returned: success
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.spotbox_disk import (
    DiskError,
    can_grow,
    candidates,
    decide,
    partition_path,
    resolve,
    wait_for_path,
)


def probe(module: AnsibleModule, path: str) -> dict:
    """blkid's low-level probe of path (TYPE, PTTYPE, UUID, LABEL), {} when blank."""
    blkid = module.get_bin_path("blkid", required=True)
    rc, out, err = module.run_command([blkid, "-p", "-o", "export", path])
    if rc == 2:  # nothing recognised
        return {}
    if rc != 0:
        module.fail_json(msg=f"blkid -p {path} failed: {err.strip()}")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def sysfs_int(*parts: str) -> int:
    with open(os.path.join("/sys/class/block", *parts, ), encoding="ascii") as handle:
        return int(handle.read().strip())


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "volume_id": {"type": "str", "default": ""},
            "device_name": {"type": "str", "default": ""},
            "device": {"type": "str", "default": ""},
            "layout": {"type": "str", "default": "gpt", "choices": ["gpt", "whole"]},
            "fstype": {"type": "str", "default": "ext4"},
            "uuid_link_timeout": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    params = module.params
    try:
        disk = resolve(candidates(params["volume_id"], params["device_name"], params["device"]))
    except DiskError as exc:
        module.fail_json(msg=str(exc))
    name = os.path.basename(disk)
    partitions = []
    if os.path.isdir(f"/sys/class/block/{name}"):
        for entry in sorted(os.listdir(f"/sys/class/block/{name}")):
            if not entry.startswith(name) or not os.path.exists(
                    f"/sys/class/block/{name}/{entry}/partition"):
                continue
            number = sysfs_int(name, entry, "partition")
            path = partition_path(disk, number)
            info = probe(module, path) if os.path.exists(path) else {}
            partitions.append({
                "number": number, "path": path, "fstype": info.get("TYPE", ""),
                "uuid": info.get("UUID", ""), "label": info.get("LABEL", ""),
                "start": sysfs_int(name, entry, "start"), "sectors": sysfs_int(name, entry, "size"),
            })
    whole = probe(module, disk)
    try:
        decision = decide(whole.get("TYPE", ""), whole.get("PTTYPE", ""), partitions,
                          params["layout"], params["fstype"])
    except DiskError as exc:
        module.fail_json(msg=f"data volume {disk}: {exc}", disk=disk, partitions=partitions)
    target = decision["target"] or (disk if params["layout"] == "whole" else partition_path(disk))
    uuid = whole.get("UUID", "") if params["layout"] == "whole" else next(
        (p["uuid"] for p in partitions if p["path"] == target), "")
    grow = bool(partitions) and params["layout"] == "gpt" and can_grow(
        sysfs_int(name, "size"), partitions[0]["start"], partitions[0]["sectors"])
    link, seconds = f"/dev/disk/by-uuid/{uuid}", params["uuid_link_timeout"]
    if uuid and seconds > 0 and not wait_for_path(link, seconds):
        module.fail_json(msg=f"{link} (the link to {target}) did not appear within {seconds} s "
                             "(data_volume_udev_timeout): is udev running?",
                         disk=disk, target=target, uuid=uuid)
    module.exit_json(changed=False, disk=disk, target=target, state=decision["state"],
                     uuid=uuid, grow_partition=grow, partitions=partitions)


if __name__ == "__main__":
    main()
