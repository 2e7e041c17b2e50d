"""The whole flow on the local cloud, as `make demo` runs it: launch, CUDA,
data volume, environment, Jupyter, then the printed tunnel really works."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, ansible_env, needs_local_cloud

pytestmark = needs_local_cloud

CHROMIUM = shutil.which("chromium")


def text(output: str) -> str:
    return " ".join(output.split())  # the callback folds long lines


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    state = tmp_path_factory.mktemp("demo-cloud")
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state),
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}
    # A local Jupyter already holds 8888 on this controller (the course's trap).
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        holder.bind(("127.0.0.1", 8888))
        holder.listen()
    except OSError:
        pass  # something else holds it already: the same situation
    started = time.monotonic()
    run = subprocess.run(["scripts/demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=False)
    seconds = time.monotonic() - started
    try:
        yield {"run": run, "env": env, "state": state, "seconds": seconds}
    finally:
        subprocess.run(["scripts/demo", "down"], cwd=ROOT, env=env, capture_output=True,
                       check=False)
        holder.close()


def test_demo_ends_with_the_access_summary(demo) -> None:
    run = demo["run"]
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    out = text(run.stdout)
    assert "8888 is taken on this machine" in out
    assert re.search(r"url http://127\.0\.0\.1:(\d+)/lab\?token=[0-9a-f]{48}", out)
    print(f"demo took {demo['seconds']:.0f}s")


def tunnel_and_url(demo) -> tuple[list[str], str, int]:
    out = text(demo["run"].stdout)
    tunnel = re.search(r"tunnel (ssh -i \S+ -N -L (\d+):127\.0\.0\.1:\d+ \S+@\S+)", out)
    url = re.search(r"url (http://127\.0\.0\.1:\d+/lab\?token=[0-9a-f]+)", out)
    assert tunnel and url, out[-3000:]
    return shlex.split(tunnel.group(1)), url.group(1), int(tunnel.group(2))


def test_the_ssh_config_entry_is_the_printed_tunnel(demo) -> None:
    argv, _, _ = tunnel_and_url(demo)
    key, forward, login = argv[2], argv[5], argv[6]
    user, host = login.split("@")
    local, remote_host, remote_port = forward.split(":")
    # ssh -G: the entry as ssh itself resolves it.
    config = demo["state"] / "ssh_config"
    resolved = subprocess.run(["ssh", "-G", "-F", str(config), "spotbox-demo"],
                              capture_output=True, text=True, check=True).stdout
    options = {}
    for line in resolved.splitlines():
        name, _, value = line.partition(" ")
        options.setdefault(name.lower(), value)
    assert (options["hostname"], options["user"], options["identityfile"]) == (host, user, key)
    assert options["localforward"] == f"{local} [{remote_host}]:{remote_port}"


def test_the_printed_tunnel_reaches_jupyter(demo) -> None:
    argv, url, port = tunnel_and_url(demo)
    assert port != 8888
    # Only the route differs from AWS: the instance's address goes through the proxy.
    proxy = f"ProxyCommand={sys.executable} -m localcloud ssh-proxy %h %p"
    ssh = subprocess.Popen(
        # The host key launch accepted (accept-new) must be there: checked strictly.
        [argv[0], "-o", proxy, "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={demo['state']}/known_hosts", "-o", "ExitOnForwardFailure=yes",
         *argv[1:]],
        cwd=ROOT, env={**demo["env"], "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE)
    try:
        token = url.split("token=")[1]
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
        if CHROMIUM:
            shot = ROOT / "artifacts" / "jupyterlab.png"
            shot.parent.mkdir(exist_ok=True)
            subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={demo['state']}/chromium", "--window-size=1280,800",
                 "--virtual-time-budget=15000", f"--screenshot={shot}", url],
                check=True, capture_output=True, timeout=120)
            assert shot.stat().st_size > 10_000, "the JupyterLab page did not render"
        else:
            pytest.skip("chromium is not installed: the page was reached through the tunnel "
                        "(/api/status 200) but not rendered")
    finally:
        ssh.send_signal(signal.SIGTERM)
        ssh.wait(timeout=10)


def test_second_provision_changes_nothing(demo) -> None:
    env = ansible_env(demo["env"])
    args = json.loads((demo["state"] / "demo-args.json").read_text())
    started = time.monotonic()
    rerun = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i",
         str(demo["state"] / "inventory"), "playbooks/provision.yml", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    recap = re.search(r"^spotbox-demo\s+: .*changed=(\d+)", rerun.stdout, re.MULTILINE)
    assert recap and recap.group(1) == "0", rerun.stdout[-3000:]
    print(f"idempotent provision re-run: {seconds:.1f}s")
