"""The stand-in Deep Learning AMIs' root snapshot is as large as the real one's.

moto gives every AMI a 15 GiB root snapshot; the real "Deep Learning Base
OSS Nvidia Driver GPU AMI (Ubuntu 22.04)" has a root of about 75 GiB (its
``df -h`` shows /dev/root 73G, tekumara/notes aws-deeplearning-ami.md). The
layer shows the recorded size in DescribeImages and DescribeSnapshots and
refuses a smaller root volume as EC2 does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import core, launch

ROOT_SIZES = Path(__file__).resolve().parent.parent / "data" / "ami-root-snapshots.json"


def root_sizes() -> dict[str, int]:
    """AMI id -> root snapshot size in GiB, for the AMIs the layer sizes."""
    return json.loads(ROOT_SIZES.read_text(encoding="utf-8"))["root_snapshot_gib"]


def root_snapshot(layer: core.Layer, region: str, image_id: str) -> tuple[str, str, int] | None:
    """(root device name, snapshot id, size GiB) of a sized AMI, None for the others."""
    size = root_sizes().get(image_id)
    if size is None:
        return None
    key = ("ami_root", region, image_id)
    with layer.lock:
        if key not in layer.memory:
            images = layer.moto.client("ec2", region).describe_images(ImageIds=[image_id])
            image = images["Images"][0]
            root = image.get("RootDeviceName", "/dev/sda1")
            snapshot = next(m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"]
                            if m.get("DeviceName") == root)
            layer.memory[key] = (root, snapshot, size)
        return layer.memory[key]


# "VolumeSize: ... You can specify a volume size that is equal to or larger
# than the snapshot size." (botocore ec2 EbsBlockDevice.VolumeSize). A
# smaller one fails RunInstances with InvalidBlockDeviceMapping "Volume of
# size 15GB is smaller than  snapshot 'snap-…', expect size >= 30GB" (two
# spaces before "snapshot" in AWS's text: scylladb/scylladb#6999,
# openshift/origin-ci-tool#153, AviatrixSystems/terraform-modules#105).
@launch.check(order=20)
def root_not_smaller_than_snapshot(layer: core.Layer, call: core.Call,
                                   spec: dict[str, Any]) -> None:
    image_id = spec.get("ImageId")
    found = image_id and root_snapshot(layer, call.region, image_id)
    if not found:
        return
    root, snapshot, size = found
    for mapping in spec.get("BlockDeviceMappings") or []:
        wanted = (mapping.get("Ebs") or {}).get("VolumeSize")
        if mapping.get("DeviceName") == root and wanted is not None and int(wanted) < size:
            raise core.AwsError(
                "InvalidBlockDeviceMapping",
                f"Volume of size {int(wanted)}GB is smaller than  snapshot '{snapshot}', "
                f"expect size >= {size}GB")


@core.after("ec2", "DescribeImages")
def show_image_root_size(layer: core.Layer, call: core.Call, reply: core.Reply) -> core.Reply:
    sizes = root_sizes()
    root = core.parse_xml(reply.body)
    changed = False
    for image in root.iter(core.q("item")):
        image_id = image.findtext(core.q("imageId"))
        if image_id not in sizes:
            continue
        for size in image.iter(core.q("volumeSize")):
            size.text = str(sizes[image_id])
            changed = True
    return core.Reply(reply.status, core.xml_bytes(root), reply.headers) if changed else reply


@core.after("ec2", "DescribeSnapshots")
def show_snapshot_size(layer: core.Layer, call: core.Call, reply: core.Reply) -> core.Reply:
    by_snapshot = {}
    for image_id in root_sizes():
        found = root_snapshot_if_known(layer, call.region, image_id)
        if found:
            by_snapshot[found[1]] = found[2]
    root = core.parse_xml(reply.body)
    changed = False
    for snapshot in root.iter(core.q("item")):
        snapshot_id = snapshot.findtext(core.q("snapshotId"))
        size = snapshot.find(core.q("volumeSize"))
        if snapshot_id in by_snapshot and size is not None:
            size.text = str(by_snapshot[snapshot_id])
            changed = True
    return core.Reply(reply.status, core.xml_bytes(root), reply.headers) if changed else reply


def root_snapshot_if_known(layer: core.Layer, region: str,
                           image_id: str) -> tuple[str, str, int] | None:
    try:
        return root_snapshot(layer, region, image_id)
    except Exception:
        return None  # an AMI missing from this region's list
