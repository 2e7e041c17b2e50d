"""Data volume logic: device resolution (NVMe serials, xvd/sd names), the check that
the device is the volume, the mount point, and the never-wipe decisions; then the same
decisions and the partition + format step on real loop devices (as root)."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import spotbox_disk as disk


def test_nvme_by_id_from_volume_id() -> None:
    assert disk.ebs_by_id_path("vol-0abc123def4567890") == (
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123def4567890")
    with pytest.raises(disk.DiskError, match="O\\(volume_id\\) must look like"):
        disk.ebs_by_id_path("0abc")


def test_attach_names() -> None:
    assert disk.attach_name_candidates("/dev/sdf") == ["/dev/sdf", "/dev/xvdf"]
    assert disk.attach_name_candidates("/dev/xvdg") == ["/dev/xvdg", "/dev/sdg"]
    assert disk.attach_name_candidates("/dev/nvme1n1") == ["/dev/nvme1n1"]


def test_candidates_order_and_explicit_path() -> None:
    assert disk.candidates("vol-0a1", "/dev/sdf", "") == [
        "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0a1", "/dev/sdf", "/dev/xvdf"]
    assert disk.candidates("vol-0a1", "/dev/sdf", "/dev/vdb") == ["/dev/vdb"]
    assert disk.sourced_candidates("vol-0a1", "/dev/sdf", "")[1:] == [
        ("/dev/sdf", "O(device_name)"), ("/dev/xvdf", "O(device_name)")]
    assert disk.sourced_candidates("", "", "/dev/vdb") == [("/dev/vdb", "O(device)")]
    with pytest.raises(disk.DiskError, match="set O\\(volume_id\\)"):
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


# --- blkid's answers, recorded with util-linux 2.38.1 (the box's) ---------------------------

BLKID_EXT4 = ("DEVNAME=/dev/loop0\nLABEL=spotbox-data\nUUID=a5513b71-e2aa-4c2e-bc1d-c16b2fcf7804\n"
              "VERSION=1.0\nBLOCK_SIZE=1024\nTYPE=ext4\nUSAGE=filesystem\n")
BLKID_SWAP = ("DEVNAME=/dev/loop0\nUUID=f8dab4db-d07f-4faa-9c1b-294c0aca23fc\nVERSION=1\n"
              "TYPE=swap\nUSAGE=other\n")
BLKID_GPT = "DEVNAME=/dev/loop0\nPTUUID=4ae05673-5535-4a0f-8110-96d563102a2b\nPTTYPE=gpt\n"
# `blkid -p` as a user who may not read the device: rc 2, as for "nothing found".
BLKID_DENIED = "blkid: error: /tmp/dvrec/ext4.img: Permission denied\n"


def test_blkid_answers() -> None:
    assert disk.parse_blkid("/dev/x", 0, BLKID_EXT4, "")["TYPE"] == "ext4"
    assert disk.parse_blkid("/dev/x", 0, BLKID_EXT4, "")["UUID"] == (
        "a5513b71-e2aa-4c2e-bc1d-c16b2fcf7804")
    assert disk.parse_blkid("/dev/x", 0, BLKID_GPT, "")["PTTYPE"] == "gpt"
    # rc 2 and nothing on stderr: blkid recognised nothing (an empty disk, or raw data).
    assert disk.parse_blkid("/dev/x", 2, "", "") == {}


@pytest.mark.parametrize(("rc", "err", "message"), [
    (2, BLKID_DENIED, r"blkid could not read /dev/x \(blkid: error: .*Permission denied\)"),
    (2, "blkid: error: /dev/x: Input/output error", "could not read /dev/x"),
    (8, "", "more than one signature on /dev/x"),
    (4, "blkid: unknown option", r"blkid -p /dev/x failed \(rc 4"),
])
def test_blkid_errors_are_refusals_not_empty(rc: int, err: str, message: str) -> None:
    with pytest.raises(disk.DiskError, match=message):
        disk.parse_blkid("/dev/x", rc, "", err)


def test_nonzero_edges() -> None:
    zeros = bytes(disk.MIB)
    assert disk.nonzero_edges(zeros, zeros) == []
    assert disk.nonzero_edges(b"\x01" + zeros[1:], zeros) == ["first MiB"]
    assert disk.nonzero_edges(zeros, zeros[1:] + b"\xff") == ["last MiB"]


# --- Decisions -------------------------------------------------------------------------------

def whole(type_: str = "", pttype: str = "", data_at: list[str] | str | None = "auto",
          partition: bool = False) -> dict:
    """The disk as survey() describes it; data_at [] = its first and last MiB are zeros,
    None = not read (survey reads them only where blkid recognised nothing)."""
    if data_at == "auto":
        data_at = [] if not type_ and not pttype else None
    return {"path": "/dev/xvdf", "type": type_, "pttype": pttype, "data_at": data_at,
            "partition": partition}


def part(type_: str = "", data_at: list[str] | str | None = "auto", number: int = 1,
         node: bool = True) -> dict:
    if data_at == "auto":
        data_at = [] if not type_ else None
    return {"number": number, "path": f"/dev/xvdf{number}", "node": node, "type": type_,
            "data_at": data_at}


def test_a_provably_empty_disk_is_empty() -> None:
    assert disk.decide(whole(), [], "gpt", "ext4") == {
        "state": "empty", "target": "/dev/xvdf1", "note": ""}
    assert disk.decide(whole(), [], "whole", "ext4") == {
        "state": "empty", "target": "/dev/xvdf", "note": ""}


def test_existing_filesystems_are_mounted() -> None:
    assert disk.decide(whole(pttype="gpt"), [part("ext4")], "gpt", "ext4") == {
        "state": "ready", "target": "/dev/xvdf1", "note": ""}
    assert disk.decide(whole("xfs"), [], "whole", "xfs")["state"] == "ready"
    # An interrupted first run: a GPT and one provably empty partition.
    assert disk.decide(whole(pttype="gpt"), [part()], "gpt", "ext4") == {
        "state": "partitioned", "target": "/dev/xvdf1", "note": ""}


def test_a_whole_disk_filesystem_made_by_hand_is_mounted_as_it_is() -> None:
    decision = disk.decide(whole("ext4"), [], "gpt", "ext4")
    assert decision["state"] == "ready"
    assert decision["target"] == "/dev/xvdf"
    assert "mounted as it is, not partitioned" in decision["note"]
    assert disk.decide(whole("ext4"), [], "whole", "ext4")["note"] == ""


def test_a_partition_named_by_data_volume_device_is_never_partitioned() -> None:
    named = whole(partition=True)
    assert disk.decide(named, [], "gpt", "ext4") == {
        "state": "partitioned", "target": "/dev/xvdf", "note": ""}
    assert disk.decide(whole("ext4", partition=True), [], "gpt", "ext4")["state"] == "ready"
    with pytest.raises(disk.DiskError, match="non-zero bytes in its first MiB"):
        disk.decide(whole(data_at=["first MiB"], partition=True), [], "gpt", "ext4")


@pytest.mark.parametrize(("args", "message"), [
    # What is not provably empty (H1).
    ((whole(data_at=["first MiB"]), [], "gpt", "ext4"),
     r"not provably empty \(non-zero bytes in its first MiB\).*never formatted"),
    ((whole(data_at=["first MiB", "last MiB"]), [], "whole", "ext4"),
     "first MiB and last MiB"),
    ((whole(data_at=None), [], "gpt", "ext4"), "its first and last MiB were not read"),
    ((whole(), [part("ext4")], "gpt", "ext4"),
     r"no partition table on the disk, but the kernel lists 1 partition\(s\) \(/dev/xvdf1\)"),
    ((whole(pttype="gpt"), [part(node=False)], "gpt", "ext4"),
     "its device node /dev/xvdf1 does not exist.*O\\(udev_timeout\\)"),
    ((whole(pttype="gpt"), [part(data_at=["last MiB"])], "gpt", "ext4"),
     r"/dev/xvdf1 has no partition table or filesystem .* \(non-zero bytes in its last MiB\)"),
    ((whole(pttype="gpt"), [part(data_at=None)], "gpt", "ext4"), "not provably empty"),
    # Recognised content that is not the filesystem asked for.
    ((whole("xfs"), [], "gpt", "ext4"),
     r"the whole disk holds a xfs filesystem, not ext4 \(O\(fstype\)\).*"
     "Set O\\(fstype\\): xfs to mount it as it is"),
    ((whole(pttype="gpt"), [part("xfs")], "gpt", "ext4"),
     "/dev/xvdf1 holds a xfs filesystem, not ext4"),
    ((whole(pttype="dos"), [part("ext4"), part("ext4", number=2)], "gpt", "ext4"),
     r"the disk has 2 partition\(s\) \(dos\).*Give O\(device\) the partition"),
    ((whole(pttype="gpt"), [part("ext4", number=2)], "gpt", "ext4"), "exactly one partition"),
    # A table the kernel has not read (this CI kernel reads none at losetup -P), or an
    # empty one.
    ((whole(pttype="gpt"), [], "gpt", "ext4"),
     "a gpt partition table but the kernel lists no partition on it.*partx -a /dev/xvdf"),
    ((whole(pttype="gpt"), [part("ext4")], "whole", "ext4"),
     "O\\(layout\\) is 'whole'.*Set O\\(layout\\): gpt"),
    ((whole("xfs"), [], "whole", "ext4"), "the whole disk holds a xfs filesystem"),
    ((whole("crypto_LUKS"), [], "gpt", "ext4"),
     "holds crypto_LUKS, not a ext4 filesystem \\(spotbox mounts only ext4 or xfs"),
    ((whole("LVM2_member"), [], "whole", "ext4"), "holds LVM2_member"),
    ((whole("ext4", "gpt"), [], "gpt", "ext4"),
     "a ext4 signature on the whole disk, and also a partition table"),
    ((whole("ext4"), [part()], "gpt", "ext4"), "the kernel lists 1 partition"),
])
def test_anything_else_is_refused(args, message) -> None:
    with pytest.raises(disk.DiskError, match=message):
        disk.decide(*args)


def test_every_refusal_says_nothing_was_changed() -> None:
    cases = [(whole(data_at=["first MiB"]), []), (whole(), [part()]),
             (whole(pttype="gpt"), [part(node=False)]), (whole("swap"), []),
             (whole("zfs_member"), []), (whole("xfs"), [])]
    for probed, partitions in cases:
        with pytest.raises(disk.DiskError, match="nothing was changed"):
            disk.decide(probed, partitions, "gpt", "ext4")


def test_swap_is_never_offered_as_a_filesystem_to_mount() -> None:
    """Issue 17: the refusal suggested `data_volume_fstype: swap`, which is never mounted."""
    for layout in ("gpt", "whole"):
        with pytest.raises(disk.DiskError) as refused:
            disk.decide(whole("swap"), [], layout, "ext4")
        message = str(refused.value)
        assert "O(fstype): swap" not in message
        assert "swap is never mounted" in message
        assert "swapoff" in message and "wipefs -a" in message
        assert "O(volume_id) or O(device)" in message
    with pytest.raises(disk.DiskError, match="holds swap space") as refused:
        disk.decide(whole(pttype="gpt"), [part("swap")], "gpt", "ext4")
    assert "O(fstype): swap" not in str(refused.value)


def test_growth_detection() -> None:
    # 1 GiB GPT disk with a partition from 1 MiB to the end (33 sectors of backup GPT).
    assert not disk.can_grow(2097152, 2048, 2097152 - 2048 - 33)
    # The same partition after the volume became 2 GiB.
    assert disk.can_grow(4194304, 2048, 2097152 - 2048 - 33)


# --- Is it the volume? (M8) ------------------------------------------------------------------

# /sys/block/nvme1n1/device/{serial,model} as Nitro shows them (NVMe pads with spaces).
EBS_SERIAL = "vol0abc123def4567890\n"
EBS_MODEL = "Amazon Elastic Block Store              \n"
STORE_SERIAL = "AWS1B2C3D4E5F6A7B8C9\n"
STORE_MODEL = "Amazon EC2 NVMe Instance Storage        \n"
VOL = "vol-0abc123def4567890"


def test_an_ebs_nvme_disk_is_checked_by_serial_and_model() -> None:
    checked, warn = disk.check_identity(VOL, "/dev/nvme1n1", "/dev/nvme1n1", EBS_SERIAL,
                                        EBS_MODEL)
    assert checked == ("checked: NVMe serial vol0abc123def4567890 and model "
                       "Amazon Elastic Block Store")
    assert not warn
    # Found by the attach-name fallback (no by-id link), still checked by its serial.
    assert disk.check_identity(VOL, "/dev/nvme1n1", "", EBS_SERIAL, EBS_MODEL)[0].startswith(
        "checked:")


@pytest.mark.parametrize(("volume_id", "by_id", "serial", "model", "message"), [
    # The review's case: data_volume_device=/dev/nvme1n1 on a g4dn is the instance store.
    (VOL, "", STORE_SERIAL, STORE_MODEL, "instance-store disk.*lost when the box stops"),
    ("", "", STORE_SERIAL, STORE_MODEL, "instance-store disk"),
    # Another EBS volume (the root volume, say).
    ("vol-0fff", "", EBS_SERIAL, EBS_MODEL,
     r"its NVMe serial is 'vol0abc123def4567890'.*would read 'vol0fff'.*"
     "Correct O\\(volume_id\\) or O\\(device\\)"),
    (VOL, "", EBS_SERIAL, "Some Other NVMe Disk\n", "its model 'Some Other NVMe Disk'"),
    # The volume id's by-id link names another disk than the one chosen.
    (VOL, "/dev/nvme2n1", EBS_SERIAL, EBS_MODEL,
     r"O\(volume_id\) vol-0abc123def4567890 is /dev/nvme2n1 \(its /dev/disk/by-id "
     "link\\), not this disk.*Leave O\\(device\\) empty"),
    ("vol-localb", "/run/hostdev/loop4", None, None, "is /run/hostdev/loop4"),
])
def test_another_disk_is_refused(volume_id, by_id, serial, model, message) -> None:
    with pytest.raises(disk.DiskError, match=message):
        disk.check_identity(volume_id, "/dev/nvme1n1" if serial else "/run/hostdev/loop3",
                            by_id, serial, model)


def test_a_disk_without_nvme_serial() -> None:
    # The local cloud: the by-id link (named after the id) points at a loop device, which
    # has no NVMe serial: the link's word is taken, without a warning.
    checked, warn = disk.check_identity("vol-localdatamain", "/run/hostdev/loop3",
                                        "/run/hostdev/loop3", None, None)
    assert checked.startswith("named by the by-id link of vol-localdatamain")
    assert not warn
    # A Xen instance: /dev/sdf appears as /dev/xvdf, no NVMe, no by-id link: used, with a
    # warning that the id could not be checked (never silently).
    checked, warn = disk.check_identity(VOL, "/dev/xvdf", "", None, None)
    assert checked.startswith(f"NOT checked against O(volume_id) {VOL}")
    assert warn
    # No volume id: nothing to check against.
    assert disk.check_identity("", "/dev/xvdf", "", None, None) == (
        "not checked: O(volume_id) is not set", False)


def test_identity_is_read_from_sysfs(tmp_path: Path) -> None:
    """A fake /sys/class/block: nvme1n1 -> its controller's serial and model; a partition
    reads its disk's; a loop device has none."""
    devices = tmp_path / "devices"
    ctrl = devices / "nvme1"
    ns = ctrl / "nvme1n1"
    (ns / "nvme1n1p1").mkdir(parents=True)
    (ns / "nvme1n1p1" / "partition").write_text("1\n")
    (ns / "device").symlink_to(ctrl)
    (ctrl / "serial").write_text(EBS_SERIAL)
    (ctrl / "model").write_text(EBS_MODEL)
    (devices / "loop3").mkdir()
    sys_block = tmp_path / "class-block"
    sys_block.mkdir()
    for name, target in (("nvme1n1", ns), ("nvme1n1p1", ns / "nvme1n1p1"),
                         ("loop3", devices / "loop3")):
        (sys_block / name).symlink_to(target)
    assert disk.read_identity("/dev/nvme1n1", str(sys_block)) == {
        "whole": "/dev/nvme1n1", "serial": EBS_SERIAL, "model": EBS_MODEL}
    assert disk.read_identity("/dev/nvme1n1p1", str(sys_block))["whole"] == "/dev/nvme1n1"
    assert disk.read_identity("/dev/nvme1n1p1", str(sys_block))["serial"] == EBS_SERIAL
    assert disk.read_identity("/run/hostdev/loop3", str(sys_block)) == {
        "whole": "/run/hostdev/loop3", "serial": None, "model": None}


# --- Where it is mounted (L15) ---------------------------------------------------------------

@pytest.mark.parametrize("mount_point", [
    "/", "/home", "/home/ubuntu", "/home/ubuntu/", "/home/ubuntu/Payload/..", "/etc",
    "/etc/data", "/usr", "/usr/local/data", "/var", "/var/lib", "/opt", "/root", "/tmp",
    "/tmp/data", "/var/tmp/x", "/proc", "/sys/x", "/dev/data", "/run/data", "/boot", "/bin",
    "/srv",
])
def test_mount_points_that_hide_the_home_or_system_folders_are_refused(mount_point) -> None:
    with pytest.raises(disk.DiskError, match=f"O\\(mount_point\\) {mount_point}") as refused:
        disk.check_mount_point(mount_point, "/home/ubuntu", realpath=lambda p: p)
    assert "nothing was changed" in str(refused.value)


@pytest.mark.parametrize("mount_point", [
    "/home/ubuntu/Payload", "/home/ubuntu/data/course", "/mnt/data", "/mnt", "/data",
    "/opt/data", "/var/lib/docker", "/home/other",
])
def test_mount_points_of_their_own_are_accepted(mount_point) -> None:
    assert disk.check_mount_point(mount_point, "/home/ubuntu",
                                  realpath=lambda p: p) == mount_point


def test_mount_point_symlinks_and_relative_paths(tmp_path: Path) -> None:
    home = tmp_path / "home" / "ubuntu"
    home.mkdir(parents=True)
    (home / "Payload").symlink_to(home)
    with pytest.raises(disk.DiskError, match="would hide the user's home"):
        disk.check_mount_point(str(home / "Payload"), str(home))
    (tmp_path / "etc-link").symlink_to("/etc")
    with pytest.raises(disk.DiskError, match=r"\(that is /etc\) is a system folder"):
        disk.check_mount_point(str(tmp_path / "etc-link"), str(home))
    with pytest.raises(disk.DiskError, match="must be an absolute path, not 'Payload'"):
        disk.check_mount_point("Payload", str(home))


# --- The lock and the commands (L16) ---------------------------------------------------------

def test_the_lock_makes_a_second_run_wait_then_give_up(tmp_path: Path) -> None:
    lock = str(tmp_path / "run" / "lock" / "dv.lock")
    with disk.volume_lock(lock, 0.3, shared=True):
        assert not os.path.exists(lock)  # a probe creates nothing
    with (disk.volume_lock(lock, 1),
          pytest.raises(disk.DiskError, match=f"another run has held {lock}"),
          disk.volume_lock(lock, 0.3)):
        pass
    with (disk.volume_lock(lock, 1),
          pytest.raises(disk.DiskError, match="another run has held"),
          disk.volume_lock(lock, 0.3, shared=True)):
        pass  # a probe waits for a format
    with disk.volume_lock(lock, 0.3, shared=True), disk.volume_lock(lock, 0.3, shared=True):
        pass  # probes do not wait for each other
    with disk.volume_lock(lock, 0.3):
        pass  # free again


def test_mkfs_and_parted_commands() -> None:
    assert disk.mkfs_argv("ext4", "spotbox-data", "/dev/xvdf1") == [
        "mkfs.ext4", "-q", "-L", "spotbox-data", "/dev/xvdf1"]
    assert disk.mkfs_argv("xfs", "d", "/dev/xvdf") == ["mkfs.xfs", "-q", "-L", "d", "/dev/xvdf"]
    with pytest.raises(disk.DiskError, match="O\\(fstype\\) must be one of"):
        disk.mkfs_argv("swap", "d", "/dev/xvdf")
    assert disk.parted_argv("/dev/xvdf", "spotbox-data", "ext4") == [
        "parted", "--script", "--align", "optimal", "/dev/xvdf", "mklabel", "gpt", "mkpart",
        "spotbox-data", "ext4", "1MiB", "100%"]


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


# --- On real loop devices (root) -------------------------------------------------------------

def loops_missing() -> str | None:
    if os.geteuid() != 0:
        return "loop devices need root"
    for tool in ("losetup", "partx", "parted", "blkid", "mkfs.ext4", "wipefs"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


needs_loops = pytest.mark.skipif(loops_missing() is not None, reason=str(loops_missing()))


def run(argv: list[str]) -> tuple[int, str, str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def loop(tmp_path: Path):
    """make(size) -> a loop device over a new sparse file; only these are touched, and
    each is detached (its partitions first) at the end."""
    made: list[str] = []

    def make(size: str = "64M") -> str:
        image = tmp_path / f"disk{len(made)}.img"
        subprocess.run(["truncate", "-s", size, str(image)], check=True)
        device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                                capture_output=True, text=True).stdout.strip()
        made.append(device)
        return device

    try:
        yield make
    finally:
        for device in made:
            subprocess.run(["partx", "-d", device], capture_output=True, check=False)
            subprocess.run(["losetup", "-d", device], check=False)


def write(device: str, offset: int, data: bytes) -> None:
    """Write through the device itself (the block cache stays right for blkid)."""
    with open(device, "r+b", buffering=0) as handle:
        handle.seek(offset)
        handle.write(data)
        os.fsync(handle.fileno())


def digest(device: str) -> str:
    with open(device, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def params(device: str, **more) -> dict:
    return {"volume_id": "", "device_name": "", "device": device, "layout": "gpt",
            "fstype": "ext4", "label": "spotbox-data", "udev_timeout": 0, **more}


def formatted(device: str, tmp_path: Path, **more) -> dict:
    return disk.format_volume(params(device, **more), run, lock_path=str(tmp_path / "lock"))


@needs_loops
def test_real_empty_disk_is_partitioned_and_formatted(loop, tmp_path) -> None:
    device = loop()
    found = disk.inspect("", "", device, "gpt", "ext4", run)
    assert (found["state"], found["target"]) == ("empty", f"{device}p1")
    result = formatted(device, tmp_path)
    assert result["changed"] and result["state"] == "ready"
    assert result["target"] == f"{device}p1" and result["uuid"]
    assert run(["blkid", "-p", "-o", "value", "-s", "TYPE", f"{device}p1"])[1].strip() == "ext4"
    again = formatted(device, tmp_path)
    assert not again["changed"] and again["uuid"] == result["uuid"]


@needs_loops
def test_real_whole_layout_and_check_mode(loop, tmp_path) -> None:
    device = loop()
    preview = disk.format_volume(params(device, layout="whole"), run, check_mode=True)
    assert preview["changed"] and preview["state"] == "empty"
    assert preview["done"] == [f"made ext4 labelled spotbox-data on {device}"]
    assert not os.path.exists(f"{device}p1")
    result = formatted(device, tmp_path, layout="whole")
    assert (result["state"], result["target"]) == ("ready", device)


@needs_loops
def test_real_random_bytes_at_the_start_are_refused_and_left_alone(loop, tmp_path) -> None:
    device = loop()
    write(device, 0, os.urandom(4096))
    before = digest(device)
    assert run(["blkid", "-p", device])[0] == 2  # blkid recognises nothing
    for layout in ("gpt", "whole"):
        with pytest.raises(disk.DiskError, match=(
                f"data volume {device} \\(O\\(device\\)\\): the disk has no partition "
                r"table or filesystem .* \(non-zero bytes in its first MiB\)")):
            formatted(device, tmp_path, layout=layout)
    assert digest(device) == before


@needs_loops
def test_real_damaged_ext4_is_refused(loop, tmp_path) -> None:
    """The review's case: an ext4 whose first 4 KiB were zeroed (e2fsck -b recovers it)."""
    device = loop()
    assert run(["mkfs.ext4", "-q", device])[0] == 0
    write(device, 0, bytes(4096))
    write(device, 64 * disk.MIB - 4096, b"x" * 4096)  # and its last MiB holds something
    before = digest(device)
    with pytest.raises(disk.DiskError, match="not provably empty"):
        formatted(device, tmp_path)
    assert digest(device) == before


@needs_loops
def test_real_whole_disk_ext4_made_by_hand_is_mounted_as_it_is(loop, tmp_path) -> None:
    device = loop()
    assert run(["mkfs.ext4", "-q", "-L", "byhand", device])[0] == 0
    before = digest(device)
    found = disk.inspect("", "", device, "gpt", "ext4", run)
    assert (found["state"], found["target"]) == ("ready", device)
    assert "mounted as it is" in found["note"] and found["uuid"]
    assert not formatted(device, tmp_path)["changed"]
    assert digest(device) == before
    with pytest.raises(disk.DiskError, match="holds a ext4 filesystem, not xfs"):
        disk.inspect("", "", device, "gpt", "xfs", run)


@needs_loops
def test_real_swap_is_refused_without_suggesting_to_mount_it(loop, tmp_path) -> None:
    device = loop()
    assert run(["mkswap", device])[0] == 0
    with pytest.raises(disk.DiskError, match="holds swap space") as refused:
        formatted(device, tmp_path)
    assert "O(fstype): swap" not in str(refused.value)


@needs_loops
def test_real_partitions_without_a_table_are_refused(loop, tmp_path) -> None:
    device = loop()
    assert run(disk.parted_argv(device, "x", "ext4"))[0] == 0
    assert os.path.exists(f"{device}p1")
    write(device, 0, bytes(34 * 512))  # protective MBR and primary GPT
    write(device, 64 * disk.MIB - 33 * 512, bytes(33 * 512))  # the backup GPT
    assert run(["blkid", "-p", device])[0] == 2
    before = digest(device)
    with pytest.raises(disk.DiskError, match=r"the kernel lists 1 partition\(s\)"):
        formatted(device, tmp_path)
    assert digest(device) == before


@needs_loops
def test_real_table_the_kernel_has_not_read_is_refused(loop, tmp_path) -> None:
    device = loop()
    assert run(disk.parted_argv(device, "x", "ext4"))[0] == 0
    assert run(["partx", "-d", device])[0] == 0  # as after a re-attach without a scan
    before = digest(device)
    with pytest.raises(disk.DiskError, match="the kernel lists no partition on it"):
        formatted(device, tmp_path)
    assert digest(device) == before


@needs_loops
def test_real_lone_partition_of_unknown_content_is_refused(loop, tmp_path) -> None:
    device = loop()
    assert run(disk.parted_argv(device, "x", "ext4"))[0] == 0
    write(f"{device}p1", 0, os.urandom(512))
    before = digest(device)
    with pytest.raises(disk.DiskError, match=f"{device}p1 has no partition table or filesystem"):
        formatted(device, tmp_path)
    assert digest(device) == before


@needs_loops
def test_real_interrupted_first_run_is_finished(loop, tmp_path) -> None:
    device = loop()
    assert run(disk.parted_argv(device, "spotbox-data", "ext4"))[0] == 0
    found = disk.inspect("", "", device, "gpt", "ext4", run)
    assert (found["state"], found["target"]) == ("partitioned", f"{device}p1")
    result = formatted(device, tmp_path)
    assert result["done"] == [f"made ext4 labelled spotbox-data on {device}p1"]
    assert result["state"] == "ready"


@needs_loops
def test_real_missing_partition_node_is_refused(loop, tmp_path) -> None:
    """A disk reached through a folder of its own (as the local cloud's /run/hostdev) where
    the partition the kernel lists has no node."""
    device = loop()
    assert run(disk.parted_argv(device, "x", "ext4"))[0] == 0
    nodes = tmp_path / "hostdev"
    nodes.mkdir()
    node = nodes / Path(device).name
    os.mknod(node, stat.S_IFBLK | 0o600, os.stat(device).st_rdev)
    with pytest.raises(disk.DiskError, match=f"its device node {node}p1 does not exist"):
        disk.inspect("", "", str(node), "gpt", "ext4", run)


@needs_loops
def test_real_explicit_partition_is_formatted_not_partitioned(loop, tmp_path) -> None:
    device = loop()
    assert run(disk.parted_argv(device, "x", "ext4"))[0] == 0
    result = formatted(f"{device}p1", tmp_path)
    assert result["done"] == [f"made ext4 labelled spotbox-data on {device}p1"]
    assert run(["blkid", "-p", "-o", "value", "-s", "PTTYPE", device])[1].strip() == "gpt"


@needs_loops
def test_real_blkid_that_cannot_read_is_a_refusal(loop, tmp_path) -> None:
    device = loop()

    def failing(argv):
        if argv[0] == "blkid":
            return 2, "", f"blkid: error: {argv[-1]}: Input/output error\n"
        return run(argv)

    with pytest.raises(disk.DiskError, match="blkid could not read"):
        disk.format_volume(params(device), failing, lock_path=str(tmp_path / "lock"))
    assert not os.path.exists(f"{device}p1")


@needs_loops
def test_real_volume_id_check_on_loop_devices(loop, tmp_path, monkeypatch) -> None:
    """The local cloud's way: by-id links named after the id point at loop devices."""
    mine, other = loop(), loop()
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    monkeypatch.setattr(disk, "EBS_BY_ID", f"{by_id}/nvme-Amazon_Elastic_Block_Store_")
    (by_id / "nvme-Amazon_Elastic_Block_Store_vollocalmine").symlink_to(mine)
    found = disk.inspect("vol-localmine", "", "", "gpt", "ext4", run)
    assert found["disk"] == mine and found["warnings"] == []
    assert found["identity"].startswith("named by the by-id link of vol-localmine")
    with pytest.raises(disk.DiskError, match=(
            f"data volume {other} \\(O\\(device\\)\\): O\\(volume_id\\) "
            f"vol-localmine is {mine}")):
        disk.inspect("vol-localmine", "", other, "gpt", "ext4", run)
    # No link for the id: the device is used, with a warning.
    found = disk.inspect("vol-localgone", "", other, "gpt", "ext4", run)
    assert "NOT checked" in found["warnings"][0]


def _format_in_child(device: str, lock: str, queue) -> None:
    try:
        result = disk.format_volume(params(device), run, lock_path=lock)
        queue.put((result["changed"], result["uuid"]))
    except Exception as exc:  # reported to the parent
        queue.put(("error", str(exc)))


@needs_loops
def test_real_concurrent_runs_format_once(loop, tmp_path) -> None:
    device = loop()
    lock = str(tmp_path / "lock")
    queue = multiprocessing.get_context("fork").Queue()
    children = [multiprocessing.get_context("fork").Process(
        target=_format_in_child, args=(device, lock, queue)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    results = sorted(queue.get(timeout=5) for _ in children)
    assert [changed for changed, _ in results] == [False, True], results
    assert results[0][1] == results[1][1]


def test_mounted_from_compares_the_mounts_device_with_the_target() -> None:
    class Stat:
        def __init__(self, dev: int = 0, rdev: int = 0) -> None:
            self.st_dev, self.st_rdev = dev, rdev

    stats = {"/home/u/Payload": Stat(dev=0x10301), "/dev/nvme1n1p1": Stat(rdev=0x10301),
             "/dev/nvme2n1p1": Stat(rdev=0x10302)}

    def stat(path: str) -> Stat:
        if path not in stats:
            raise FileNotFoundError(path)
        return stats[path]

    def mounted(point: str, device: str, ismount: bool = True) -> bool:
        return disk.mounted_from(point, device, stat=stat, ismount=lambda _: ismount)

    assert mounted("/home/u/Payload", "/dev/nvme1n1p1")
    assert not mounted("/home/u/Payload", "/dev/nvme2n1p1"), "another filesystem is mounted"
    assert not mounted("/home/u/Payload", "/dev/nvme1n1p1", ismount=False), "not a mount point"
    assert not mounted("/home/u/Payload", "/dev/gone"), "a missing device"
    assert not mounted("", "/dev/nvme1n1p1") and not mounted("/home/u/Payload", "")


@needs_loops
def test_real_a_volume_attached_a_moment_ago_is_waited_for(loop, tmp_path) -> None:
    # EC2 attaches asynchronously: the device shows up on the instance a little later.
    device, link = loop(), tmp_path / "sdf"
    with pytest.raises(disk.DiskError, match="the data volume was not found"):
        disk.inspect("", str(link), "", "gpt", "ext4", run)
    appears = threading.Timer(0.5, link.symlink_to, [device])
    appears.start()
    try:
        found = disk.inspect("", str(link), "", "gpt", "ext4", run, wait=10)
    finally:
        appears.join()
    assert found["disk"] == device
