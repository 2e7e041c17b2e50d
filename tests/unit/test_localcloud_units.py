"""Unit tests of the local cloud's pure parts."""

from __future__ import annotations

import os
from pathlib import Path

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


def test_volume_links_name_xvd_and_nvme_serial() -> None:
    text = boxes._volume_links(
        [{"loop": "/dev/loop7", "device": "/dev/xvdf", "volume_id": "vol-0abc123"}]
    )
    assert "L+ /dev/xvdf - - - - /run/hostdev/loop7" in text
    assert "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc123 " in text


def test_free_port_is_bindable() -> None:
    import socket

    port = procs.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
