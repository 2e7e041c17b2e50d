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
  - When the volume id is known, checks that the device is that volume, whichever way it was
    found; an NVMe device's serial must be the id without its dash and its model
    C(Amazon Elastic Block Store); a device that the id's by-id link names but that has no
    NVMe serial (the local cloud's loop devices) is taken on the link's word; any other device
    without a serial is used with a warning that it could not be checked. An instance-store
    disk is always refused.
  - Probes the disk and its partitions with C(blkid -p) and sysfs (no udev needed), and reads
    the first and last MiB of anything blkid recognises nothing on.
  - Returns C(state) empty (provably empty, may be partitioned and formatted), partitioned
    (one provably empty partition, may be formatted) or ready (holds the filesystem asked
    for); fails, touching nothing, when the disk holds anything else or cannot be read.
  - Refuses a mount point that would hide the user's home or a system folder.
  - Waits, with a shared lock, for a data_volume_format in progress on the same box.
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
    description: What an empty disk gets, C(gpt) (one partition) or C(whole) (no partition table).
    type: str
    choices: [gpt, whole]
    default: gpt
  fstype:
    description: The filesystem wanted.
    type: str
    choices: [ext4, xfs]
    default: ext4
  mount_point:
    description: Where the volume will be mounted, checked (not created); empty skips the check.
    type: str
    default: ""
  user:
    description: The login user whose home the mount point must not hide.
    type: str
    default: ""
  lock_path:
    description:
      - The lock file that data_volume_format holds while it partitions and formats; the probe
        takes it shared, so it waits for a format in progress. Used only where it exists.
    type: path
    default: /run/lock/spotbox-data-volume.lock
  lock_timeout:
    description: Seconds to wait for a format in progress.
    type: int
    default: 300
  device_timeout:
    description:
      - Seconds to wait for the volume's device to appear. EC2 attaches a volume
        asynchronously (the attachment is C(attaching) first), so a volume attached a moment
        ago may not be on the instance yet. 0 looks once.
    type: int
    default: 0
  uuid_link_timeout:
    description:
      - Seconds to wait, when the target holds a filesystem, for its C(/dev/disk/by-uuid)
        link (udev makes it an instant after the filesystem appears; mounts by UUID need
        it); fails when it does not appear. 0 neither waits nor looks.
    type: int
    default: 0
extends_documentation_fragment:
  - spotbox_names
author: spotbox
"""

EXAMPLES = r"""
- name: Find the data volume
  data_volume_info:
    volume_id: vol-0123456789abcdef0
    device_name: /dev/sdf
    mount_point: /home/ubuntu/Payload
    user: ubuntu
  register: data_volume
"""

RETURN = r"""
disk:
  description: The real path of the whole disk (or of the partition data_volume_device names).
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
  description: Partitions found (number, path, node, type, uuid, label, data_at, start, sectors).
  returned: success
  type: list
  elements: dict
note:
  description: How the volume is used when that is unusual (a whole-disk filesystem, gpt layout).
  returned: success
  type: str
  sample: "/dev/nvme1n1 holds ext4 on the whole disk (...): mounted as it is, ..."
identity:
  description: How the device was checked against the volume id.
  returned: success
  type: str
  sample: "checked: NVMe serial vol0123456789abcdef0 and model Amazon Elastic Block Store"
mount_point:
  description: The mount point, symlinks resolved (empty when none was given).
  returned: success
  type: str
mounted:
  description: Whether the filesystem on target is mounted at mount_point now.
  returned: success
  type: bool
"""

import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.spotbox_disk import (
    DiskError,
    check_mount_point,
    inspect,
    mounted_from,
    volume_lock,
    wait_for_path,
)
from ansible.module_utils.spotbox_names import NAMES_SPEC, name_messages


def runner(module: AnsibleModule):
    """run(argv) -> (rc, out, err), argv[0] found on the box's PATH (sbin included)."""
    def run(argv: list[str]) -> tuple[int, str, str]:
        return module.run_command([module.get_bin_path(argv[0], required=True), *argv[1:]])
    return run


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "volume_id": {"type": "str", "default": ""},
            "device_name": {"type": "str", "default": ""},
            "device": {"type": "str", "default": ""},
            "layout": {"type": "str", "default": "gpt", "choices": ["gpt", "whole"]},
            "fstype": {"type": "str", "default": "ext4", "choices": ["ext4", "xfs"]},
            "mount_point": {"type": "str", "default": ""},
            "user": {"type": "str", "default": ""},
            "lock_path": {"type": "path", "default": "/run/lock/spotbox-data-volume.lock"},
            "lock_timeout": {"type": "int", "default": 300},
            "device_timeout": {"type": "int", "default": 0},
            "uuid_link_timeout": {"type": "int", "default": 0},
            **NAMES_SPEC,
        },
        supports_check_mode=True,
    )
    name_messages(module, own={"udev_timeout": "uuid_link_timeout"})
    params = module.params
    mount_point = ""
    try:
        if params["mount_point"]:
            try:
                home = pwd.getpwnam(params["user"]).pw_dir if params["user"] else "/root"
            except KeyError:
                home = f"/home/{params['user']}"
            mount_point = check_mount_point(params["mount_point"], home)
        with volume_lock(params["lock_path"], params["lock_timeout"], shared=True):
            result = inspect(params["volume_id"], params["device_name"], params["device"],
                             params["layout"], params["fstype"], runner(module),
                             wait=params["device_timeout"])
    except DiskError as exc:
        module.fail_json(msg=str(exc))
    for warning in result.pop("warnings"):
        module.warn(warning)
    uuid, target, seconds = result["uuid"], result["target"], params["uuid_link_timeout"]
    link = f"/dev/disk/by-uuid/{uuid}"
    if uuid and seconds > 0 and not wait_for_path(link, seconds):
        module.fail_json(msg=f"{link} (the link to {target}) did not appear within {seconds} s "
                             "(O(uuid_link_timeout)): is udev running?",
                         disk=result["disk"], target=target, uuid=uuid)
    module.exit_json(changed=False, mount_point=mount_point,
                     mounted=mounted_from(mount_point, target), **result)


if __name__ == "__main__":
    main()
