"""Any SSH host (issue 20): a plain box with no CUDA toolkit and no GPU, a second
disk, an ini inventory written as the README shows, and playbooks/provision.yml.

The README's promise, tried as a new user would: the environment builds (uv
backend, no framework: PyPI's torch is a multi-GB CUDA build), the data disk
is partitioned, formatted and mounted, Jupyter runs, the access summary prints
a tunnel that works (with the host's SSH port), and a re-run changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, needs_local_cloud

pytestmark = needs_local_cloud

ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
BOX = "spotbox-anyhost"


def text(output: str) -> str:
    return " ".join(output.split())  # the callback folds long lines


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    state = tmp_path_factory.mktemp("anyhost-cloud")
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state),
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    lc = [sys.executable, "-m", "localcloud"]

    def local_cloud(*args: str) -> str:
        return subprocess.run([*lc, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              check=True).stdout

    try:
        # A plain Debian box (the local cloud's root filesystem as it is: no
        # cuda-X.Y folder, no nvidia-smi) and a blank 4 GiB second disk (the
        # environment and uv's cache live on it).
        local_cloud("volume-create", "anyhostdata", "--size", "4G")
        local_cloud("box-create", BOX, "--attach", "anyhostdata:/dev/xvdf")
        box = json.loads(local_cloud("box-inventory", BOX))["all"]["hosts"][BOX]
        # The README's inventory, plus the port this box's sshd listens on.
        inventory = state / "inventory" / "mybox.ini"
        inventory.parent.mkdir()
        inventory.write_text(
            "[spotbox]\n"
            f"mybox ansible_host={box['ansible_host']} ansible_port={box['ansible_port']} "
            f"ansible_user={box['ansible_user']} "
            f"ansible_ssh_private_key_file={box['ansible_ssh_private_key_file']}\n")
        # A first contact as ssh makes it by hand (accept-new): the host key is
        # kept and checked from then on.
        known_hosts = state / "known_hosts"
        env["ANSIBLE_SSH_COMMON_ARGS"] = (f"-o StrictHostKeyChecking=accept-new "
                                          f"-o UserKnownHostsFile={known_hosts}")
        sys.path.insert(0, str(ROOT))
        from localcloud.procs import free_port

        args = ["-e", "conda_backend=uv", "-e", "conda_framework=none",
                "-e", "data_volume_device_name=/dev/xvdf",
                # Local-cloud boxes share this machine's network: Jupyter on the
                # box gets a port of its own; the ssh config entries go to the state dir.
                "-e", f"jupyter_port={free_port()}",
                "-e", f"access_ssh_config_file={state}/ssh_config"]
        command = [ANSIBLE_PLAYBOOK, "-i", str(inventory), "playbooks/provision.yml", *args]
        started = time.monotonic()
        first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                               check=False)
        seconds = time.monotonic() - started
        yield {"first": first, "seconds": seconds, "command": command, "env": env,
               "state": state, "box": box, "known_hosts": known_hosts,
               "ssh": lambda command: subprocess.run(
                   ["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts}",
                    "-i", box["ansible_ssh_private_key_file"], "-p", str(box["ansible_port"]),
                    f"{box['ansible_user']}@{box['ansible_host']}", command],
                   capture_output=True, text=True, check=False)}
    finally:
        subprocess.run([*lc, "cleanup"], cwd=ROOT, env=env, capture_output=True, check=False)


def test_a_plain_box_is_provisioned(host) -> None:
    first = host["first"]
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-3000:]
    out = text(first.stdout)
    assert "No CUDA toolkit under /usr/local (no cuda-X.Y folders), so none is selected" in out
    assert "driver: none (CUDA up to n/a); GPUs: none; framework build: cpu" in out
    assert re.search(r"mybox\s+: ok=\d+\s+changed=[1-9]", first.stdout)
    print(f"first provision of a plain box: {host['seconds']:.0f}s")


def test_no_cuda_entries_and_the_disk_is_mounted(host) -> None:
    check = host["ssh"]("test ! -e /usr/local/cuda && echo no-link; "
                        "test ! -e /etc/profile.d/spotbox-cuda.sh && echo no-profile; "
                        "test ! -e /etc/ld.so.conf.d/spotbox-cuda.conf && echo no-ldconf; "
                        "findmnt -n -o FSTYPE,TARGET /home/ubuntu/Payload; "
                        "stat -c %U /home/ubuntu/Payload; "
                        "/home/ubuntu/Payload/.spotbox/envs/course/bin/python "
                        "-c 'import jupyterlab, pandas' "
                        "&& echo env-ok; systemctl is-active spotbox-jupyter")
    assert check.stdout.split() == ["no-link", "no-profile", "no-ldconf", "ext4",
                                    "/home/ubuntu/Payload", "ubuntu", "env-ok", "active"], \
        check.stdout + check.stderr


def test_the_printed_tunnel_reaches_jupyter(host) -> None:
    out = text(host["first"].stdout)
    tunnel = re.search(r"tunnel (ssh -i \S+ -p (\d+) -N -L (\d+):127\.0\.0\.1:\d+ \S+@\S+)", out)
    url = re.search(r"url (http://127\.0\.0\.1:\d+/lab\?token=([0-9a-f]{48}))", out)
    assert tunnel and url, out[-3000:]
    assert int(tunnel.group(2)) == host["box"]["ansible_port"]
    argv, port, token = shlex.split(tunnel.group(1)), int(tunnel.group(3)), url.group(2)
    # The command as printed; ssh checks the host key provisioning accepted.
    ssh = subprocess.Popen(
        [argv[0], "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={host['known_hosts']}", "-o", "ExitOnForwardFailure=yes",
         *argv[1:]], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5) as answer:
                    assert answer.status == 200
                    assert "started" in json.loads(answer.read())
                    break
            except OSError:
                if time.monotonic() > deadline or ssh.poll() is not None:
                    raise
                time.sleep(0.5)
    finally:
        ssh.send_signal(signal.SIGTERM)
        ssh.wait(timeout=10)
    # The ssh config entry is the same route, port included (ssh -G: as ssh reads it).
    resolved = subprocess.run(["ssh", "-G", "-F", str(host["state"] / "ssh_config"), "mybox"],
                              capture_output=True, text=True, check=True).stdout
    options = dict(line.partition(" ")[::2] for line in resolved.splitlines())
    assert options["port"] == str(host["box"]["ansible_port"])
    assert options["localforward"].startswith(f"{port} ")


def test_a_rerun_changes_nothing(host) -> None:
    assert host["first"].returncode == 0, "the first run failed"
    started = time.monotonic()
    rerun = subprocess.run(host["command"], cwd=ROOT, env=host["env"], capture_output=True,
                           text=True, check=False)
    seconds = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    recap = re.search(r"^mybox\s+: .*changed=(\d+)", rerun.stdout, re.MULTILINE)
    assert recap and recap.group(1) == "0", rerun.stdout[-3000:]
    print(f"re-run: {seconds:.1f}s")


def test_access_alone_prints_the_summary_again(host) -> None:
    """"Print me the tunnel again": playbooks/access.yml alone reads Jupyter's port and
    token on the box and prints the same tunnel and URL; the ssh config entries stay."""
    first = host["first"]
    assert first.returncode == 0, "the first run failed"
    config = host["state"] / "ssh_config"
    entries = config.read_text()
    inventory = host["command"][host["command"].index("-i") + 1]
    again = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", inventory, "playbooks/access.yml",
         "-e", f"access_ssh_config_file={config}"],
        cwd=ROOT, env=host["env"], capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    summary = r"(tunnel ssh .*?) url (http://127\.0\.0\.1:\d+/lab\?token=[0-9a-f]{48})"
    before, after = re.search(summary, text(first.stdout)), re.search(summary, text(again.stdout))
    assert before and after, text(again.stdout)[-3000:]
    assert after.groups() == before.groups()
    assert f"or ssh -N mybox (with 'Include {config}' in ~/.ssh/config)" in text(again.stdout)
    assert config.read_text() == entries
    recap = re.search(r"^mybox\s+: .*changed=(\d+)", again.stdout, re.MULTILINE)
    assert recap and recap.group(1) == "0", again.stdout[-3000:]
