"""Unit tests of the local cloud's pure parts."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from localcloud import boxes, procs, rootfs
from localcloud.registry import Registry


def test_registry_round_trip(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.put("box", "a", {"pid": 1})
    registry.update("box", "a", port=2222)
    assert registry.get("box", "a") == {"pid": 1, "port": 2222}
    registry.drop("box", "a")
    assert registry.get("box", "a") is None
    assert Registry(tmp_path).snapshot()["box"] == {}


def test_recipe_key_follows_the_ca_files(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(rootfs, "CA_DIR", tmp_path)
    before = rootfs.recipe_key()
    (tmp_path / "proxy.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    assert rootfs.recipe_key() != before, "a new CA must give a new root filesystem"


def test_alive_detects_pid_reuse() -> None:
    me = os.getpid()
    assert procs.alive(me, procs.proc_start_time(me))
    assert not procs.alive(me, "1")  # same pid, other start time: not ours


@pytest.mark.parametrize("ends_on_read", [1, 2])
def test_a_process_that_ends_while_its_stat_is_read_is_not_alive(monkeypatch,
                                                                 ends_on_read: int) -> None:
    # stop() polls alive() while the process ends: /proc/PID/stat can vanish
    # between the open and the read (ESRCH), on any read alive() makes.
    ending = subprocess.Popen(["sleep", "30"])
    started_at = procs.proc_start_time(ending.pid)
    reads = []

    class EndsWhileRead(type(Path())):
        def read_text(self, *args, **kwargs):
            with self.open(*args, **kwargs) as handle:
                reads.append(self)
                if len(reads) == ends_on_read:
                    ending.kill()
                    ending.wait()
                return handle.read()

    monkeypatch.setattr(procs, "Path", EndsWhileRead)
    try:
        assert procs.alive(ending.pid, started_at) is (ending.poll() is None)
    finally:
        ending.kill()
        ending.wait()


def test_volumes_file_names_the_loop_the_device_and_the_nvme_serial() -> None:
    text = boxes.volumes_file(
        [{"loop": "/dev/loop7", "device": "/dev/sdf", "volume_id": "vol-0abc123"},
         {"loop": "/dev/loop12", "device": "/dev/xvdg", "volume_id": "vol-0def"}]
    )
    assert text == "loop7 /dev/sdf vol0abc123\nloop12 /dev/xvdg vol0def\n"


def test_devlinks_script_is_valid_sh_and_names_what_udev_would() -> None:
    import subprocess

    assert subprocess.run(["sh", "-n"], input=boxes.DEVLINKS_SCRIPT, text=True).returncode == 0
    for name in ("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$serial", "-part$part",
                 "/dev/xvd${device#/dev/sd}", "/dev/disk/by-uuid/$uuid"):
        assert name in boxes.DEVLINKS_SCRIPT


def test_free_port_is_bindable_and_never_an_outgoing_connections_port() -> None:
    import socket

    ephemeral = procs.ephemeral_ports()
    ports = {procs.free_port() for _ in range(50)}
    assert not ports & set(ephemeral), "a port an outgoing connection may take meanwhile"
    assert len(ports) > 40  # at random, not one port over and over
    port = ports.pop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_the_ephemeral_range_is_read_from_the_kernel_setting(tmp_path, monkeypatch) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("1024\t65535\n")
    assert procs.ephemeral_ports(str(setting)) == range(1024, 65536)
    assert procs.ephemeral_ports(str(tmp_path / "missing")) == range(32768, 61000)
    # No room outside the range: the kernel's own pick, which is bindable.
    monkeypatch.setattr(procs, "ephemeral_ports", lambda: range(1024, 65536))
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", procs.free_port()))


def test_the_vars_plugin_gives_a_local_cloud_host_its_imds_endpoint(monkeypatch, tmp_path) -> None:
    import importlib.util

    from localcloud import sshproxy

    spec = importlib.util.spec_from_file_location(
        "lc_vars", Path(boxes.__file__).parent / "ansible_vars" / "localcloud.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    monkeypatch.setenv("SPOTBOX_LOCALCLOUD_STATE", str(tmp_path))
    Registry(tmp_path).put("box", "b-i-1", {"name": "b-i-1", "instance_id": "i-1",
                                             "imds_endpoint": "http://127.0.0.1:4242"})
    asked = []

    def instance_at(registry, address):
        asked.append(address)
        if address != "54.1.2.3":
            raise LookupError(address)
        return {"InstanceId": "i-1"}

    monkeypatch.setattr(sshproxy, "instance_at", instance_at)

    class Host:
        def __init__(self, address):
            self.vars = {"ansible_host": address}

    module = plugin.VarsModule()
    assert module.get_vars(None, str(tmp_path), [Host("54.1.2.3")]) == {
        "spotbox_imds_endpoint": "http://127.0.0.1:4242"}
    assert module.get_vars(None, str(tmp_path), [Host("10.9.9.9")]) == {}
    for _ in range(3):  # Ansible asks at every task: found and missing answers are kept
        module.get_vars(None, str(tmp_path), [Host("54.1.2.3")])
        module.get_vars(None, str(tmp_path), [Host("10.9.9.9")])
    assert asked == ["54.1.2.3", "10.9.9.9"]
    monkeypatch.delenv("SPOTBOX_LOCALCLOUD_STATE")
    assert module.get_vars(None, str(tmp_path), [Host("54.9.9.9")]) == {}, (
        "no local cloud: nothing")


def test_stop_also_ends_a_child_in_a_session_of_its_own(tmp_path) -> None:
    """As systemd-nspawn's box init: SIGTERM ignored, so SIGKILL comes, and the child
    that left the session (setsid) must not survive its parent."""
    child_file = tmp_path / "child.pid"
    pid = procs.start_detached(
        ["sh", "-c", f"trap '' TERM; setsid sh -c 'echo $$ > {child_file}; exec sleep 300' & "
                     "while :; do sleep 0.1; done"], tmp_path / "log")
    for _ in range(50):
        if child_file.exists() and child_file.read_text().strip():
            break
        time.sleep(0.1)
    child = int(child_file.read_text())
    procs.stop(pid, procs.proc_start_time(pid), timeout=0.5)
    # A killed child whose parent died too waits as a zombie for PID 1 to reap it; where
    # PID 1 is no reaper (CI's container), the zombie stays: it is dead all the same.
    for _ in range(50):
        if not procs.alive(child, None):
            break
        time.sleep(0.1)
    assert not procs.alive(child, None), f"pid {child} survived"
