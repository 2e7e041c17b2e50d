#!/usr/bin/python
"""Ansible module: partition and format the data volume, only where it is provably empty."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: data_volume_format
short_description: Partition and format the data volume, only where it is provably empty
description:
  - Takes an exclusive C(flock) on a lock file, so that two runs on one box cannot both
    partition or format the volume, then finds and probes the volume again exactly as
    data_volume_info does (same checks, same refusals).
  - On a provably empty disk (blkid finds nothing and could read it; its first and last MiB
    read as zeros; the kernel lists no partition), makes a GPT with one partition from 1 MiB
    to the end (layout gpt) and then the filesystem; on one provably empty partition, makes
    the filesystem only. mkfs runs without its force flag.
  - Does nothing to a disk that holds the filesystem asked for (another run made it
    meanwhile), and fails, touching nothing, on anything else.
  - Waits for the new partition's node and the filesystem's C(/dev/disk/by-uuid) link.
  - In check mode, probes (without the lock) and says what it would do.
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
    description: The filesystem to make.
    type: str
    choices: [ext4, xfs]
    default: ext4
  label:
    description: The GPT partition's name and the filesystem's label.
    type: str
    default: spotbox-data
  udev_timeout:
    description: Seconds to wait for the new partition's node and the filesystem's by-uuid link.
    type: int
    default: 30
  lock_path:
    description: The lock file (on the box) held while probing and formatting.
    type: path
    default: /run/lock/spotbox-data-volume.lock
  lock_timeout:
    description: Seconds to wait for another run that holds the lock.
    type: int
    default: 300
extends_documentation_fragment:
  - spotbox_names
author: spotbox
"""

EXAMPLES = r"""
- name: Partition and format the empty data volume
  data_volume_format:
    volume_id: vol-0123456789abcdef0
    device_name: /dev/sdf
    label: spotbox-data
  when: probe.state in ['empty', 'partitioned']
"""

RETURN = r"""
done:
  description: What was done (or, in check mode, would be done).
  returned: success
  type: list
  elements: str
  sample: ["made a GPT on /dev/nvme1n1 with partition /dev/nvme1n1p1",
           "made ext4 labelled spotbox-data on /dev/nvme1n1p1"]
disk:
  description: The real path of the whole disk.
  returned: success
  type: str
target:
  description: The device that holds the filesystem.
  returned: success
  type: str
state:
  description: ready after a change or when another run made it; in check mode, the state before.
  returned: success
  type: str
uuid:
  description: UUID of the filesystem on target (empty in check mode).
  returned: success
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.spotbox_disk import DiskError, format_volume
from ansible.module_utils.spotbox_names import NAMES_SPEC, name_messages


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "volume_id": {"type": "str", "default": ""},
            "device_name": {"type": "str", "default": ""},
            "device": {"type": "str", "default": ""},
            "layout": {"type": "str", "default": "gpt", "choices": ["gpt", "whole"]},
            "fstype": {"type": "str", "default": "ext4", "choices": ["ext4", "xfs"]},
            "label": {"type": "str", "default": "spotbox-data"},
            "udev_timeout": {"type": "int", "default": 30},
            "lock_path": {"type": "path", "default": "/run/lock/spotbox-data-volume.lock"},
            "lock_timeout": {"type": "int", "default": 300},
            **NAMES_SPEC,
        },
        supports_check_mode=True,
    )
    name_messages(module)

    def run(argv: list[str]) -> tuple[int, str, str]:
        return module.run_command([module.get_bin_path(argv[0], required=True), *argv[1:]])

    try:
        result = format_volume(module.params, run, check_mode=module.check_mode,
                               lock_path=module.params["lock_path"],
                               lock_seconds=module.params["lock_timeout"])
    except DiskError as exc:
        module.fail_json(msg=str(exc))
    result.pop("warnings", None)  # data_volume_info gave them
    module.exit_json(**result)


if __name__ == "__main__":
    main()
