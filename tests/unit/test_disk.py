"""Data volume logic: device resolution (NVMe serials, xvd/sd names) and the
never-wipe decisions."""

from __future__ import annotations

import pytest
import spotbox_disk as disk


def test_nvme_by_id_from_volume_id() -> None:
    assert disk.ebs_by_id_path("vol-0abc123def4567890") == (
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123def4567890")
    with pytest.raises(disk.DiskError, match="data_volume_volume_id must look like"):
        disk.ebs_by_id_path("0abc")


def test_attach_names() -> None:
    assert disk.attach_name_candidates("/dev/sdf") == ["/dev/sdf", "/dev/xvdf"]
    assert disk.attach_name_candidates("/dev/xvdg") == ["/dev/xvdg", "/dev/sdg"]
    assert disk.attach_name_candidates("/dev/nvme1n1") == ["/dev/nvme1n1"]


def test_candidates_order_and_explicit_path() -> None:
    assert disk.candidates("vol-0a1", "/dev/sdf", "") == [
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0a1", "/dev/sdf", "/dev/xvdf"]
    assert disk.candidates("vol-0a1", "/dev/sdf", "/dev/vdb") == ["/dev/vdb"]
    with pytest.raises(disk.DiskError, match="set data_volume_volume_id"):
        disk.candidates("", "", "")


def test_resolve_follows_nitro_links() -> None:
    links = {"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0a1": "/dev/nvme1n1"}
    paths = disk.candidates("vol-0a1", "/dev/sdf", "")
    assert disk.resolve(paths, exists=links.__contains__, realpath=links.get) == "/dev/nvme1n1"
    # Xen instance: no NVMe, /dev/sdf appears as /dev/xvdf.
    assert disk.resolve(paths, exists=lambda p: p == "/dev/xvdf",
                        realpath=lambda p: p) == "/dev/xvdf"
    with pytest.raises(disk.DiskError, match="the data volume was not found at"):
        disk.resolve(paths, exists=lambda p: False)


@pytest.mark.parametrize(("device", "partition"), [
    ("/dev/xvdf", "/dev/xvdf1"), ("/dev/sdf", "/dev/sdf1"),
    ("/dev/nvme1n1", "/dev/nvme1n1p1"), ("/run/hostdev/loop3", "/run/hostdev/loop3p1"),
])
def test_partition_names(device: str, partition: str) -> None:
    assert disk.partition_path(device) == partition


EXT4_PART = [{"number": 1, "path": "/dev/xvdf1", "fstype": "ext4"}]


def test_decisions_for_gpt() -> None:
    assert disk.decide("", "", [], "gpt", "ext4") == {"state": "empty", "target": None}
    assert disk.decide("", "gpt", EXT4_PART, "gpt", "ext4")["state"] == "ready"
    blank = [{"number": 1, "path": "/dev/xvdf1", "fstype": ""}]
    assert disk.decide("", "gpt", blank, "gpt", "ext4") == {
        "state": "partitioned", "target": "/dev/xvdf1"}


@pytest.mark.parametrize(("args", "message"), [
    (("xfs", "", [], "gpt", "ext4"), "holds a xfs filesystem on the whole disk"),
    (("", "gpt", [{"number": 1, "path": "/dev/xvdf1", "fstype": "xfs"}], "gpt", "ext4"),
     "/dev/xvdf1 holds a xfs filesystem, not ext4; it is never reformatted"),
    (("", "dos", EXT4_PART * 2, "gpt", "ext4"), "the disk has 2 partition"),
    (("", "gpt", EXT4_PART, "whole", "ext4"), "data_volume_layout is 'whole'"),
    (("xfs", "", [], "whole", "ext4"), "the whole disk holds a xfs filesystem"),
])
def test_anything_else_is_refused(args, message) -> None:
    with pytest.raises(disk.DiskError, match=message):
        disk.decide(*args)


def test_whole_disk_layout() -> None:
    assert disk.decide("", "", [], "whole", "ext4")["state"] == "empty"
    assert disk.decide("ext4", "", [], "whole", "ext4")["state"] == "ready"


def test_growth_detection() -> None:
    # 1 GiB GPT disk with a partition from 1 MiB to the end (33 sectors of backup GPT).
    assert not disk.can_grow(2097152, 2048, 2097152 - 2048 - 33)
    # The same partition after the volume became 2 GiB.
    assert disk.can_grow(4194304, 2048, 2097152 - 2048 - 33)


def test_the_uuid_link_is_waited_for_then_given_up(tmp_path) -> None:
    import threading
    import time

    link = tmp_path / "by-uuid" / "0f3c"
    threading.Timer(0.3, lambda: (link.parent.mkdir(), link.symlink_to("/dev/null"))).start()
    started = time.monotonic()
    assert disk.wait_for_path(str(link), 5) is True
    assert 0.25 < time.monotonic() - started < 3
    started = time.monotonic()
    assert disk.wait_for_path(str(tmp_path / "never"), 0.3) is False
    assert 0.25 < time.monotonic() - started < 2
