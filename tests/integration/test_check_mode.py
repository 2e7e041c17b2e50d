"""Check mode on a box that was never provisioned (issue 21), as a careful new user
runs it first: `ansible-playbook --check -i mybox.ini playbooks/provision.yml` on a
fresh local-cloud box (CUDA toolkits laid out as on the Deep Learning AMI, a blank
data volume, the uv backend, jupyter_port set) exits 0, says what it would do (the
partition and filesystem, the environment, the service, the ssh config entry) and
leaves the box as it was: molecule/shared/box_state.sh (mounts, /etc/fstab, systemd
units, the files under the roles' paths, the disks) reads the same before and after.
And `launch.yml --check` against an empty emulated account exits 0 and creates
nothing, in the account or on the controller.

The Molecule scenarios run the same check on each role's fresh box (the check step
before converge, molecule/shared/check_changed_nothing.yml).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import ROOT, ansible_env, needs_local_cloud

from localcloud.procs import free_port, read_exports

pytestmark = needs_local_cloud
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
BOX = "spotbox-checkmode"


def localcloud(env: dict, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([sys.executable, "-m", "localcloud", *args], cwd=ROOT, env=env,
                            input=stdin, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"localcloud {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def playbook_json(env: dict, *argv: str) -> tuple[subprocess.CompletedProcess, dict]:
    """ansible-playbook with the JSON callback: the run and its parsed output."""
    done = subprocess.run([ANSIBLE_PLAYBOOK, *argv], cwd=ROOT,
                          env={**env, "ANSIBLE_STDOUT_CALLBACK": "json"},
                          capture_output=True, text=True, check=False)
    try:
        return done, json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"not JSON: {done.stdout[-3000:]} {done.stderr[-3000:]}")


def results(output: dict, host: str) -> dict[str, dict]:
    """Each task's result on host, by task name without its role (the last run of a
    name wins)."""
    return {task["task"]["name"].split(" : ", 1)[-1]: task["hosts"][host]
            for play in output["plays"] for task in play["tasks"] if host in task["hosts"]}


@pytest.fixture(scope="module")
def fresh_box(tmp_path_factory):
    """A box as a new user gets it: the AMI's CUDA toolkits, a blank data volume."""
    state = tmp_path_factory.mktemp("check-cloud")
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_NOCOLOR": "1"}
    try:
        started = time.monotonic()
        localcloud(env, "volume-create", "checkdata", "--size", "64M")
        localcloud(env, "box-create", BOX, "--attach", "checkdata:/dev/xvdf")
        print(f"fresh box: {time.monotonic() - started:.0f}s")
        hosts = json.loads(localcloud(env, "box-inventory", BOX))["all"]["hosts"]
        inventory = state / "mybox.json"  # the user's own inventory: group spotbox
        inventory.write_text(json.dumps({"spotbox": {"hosts": hosts}}))
        # Two of the AMI's toolkits are enough (11.8, the default link, and 12.4).
        toolkits = yaml.safe_load((ROOT / "molecule/cuda/vars/toolkits.yml").read_text())
        two = [t for t in toolkits["cuda_test_toolkits"] if t["version"] in ("11.8", "12.4")]
        toolkits = subprocess.run(
            [ANSIBLE_PLAYBOOK, "-i", str(inventory), "-i", "inventory/localhost.yml",
             "molecule/cuda/prepare.yml", "-e", f"cuda_test_hosts={BOX}",
             "-e", json.dumps({"cuda_test_toolkits": two})],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        assert toolkits.returncode == 0, toolkits.stdout[-3000:]
        print(f"and its CUDA toolkits: {time.monotonic() - started:.0f}s")
        yield {"env": env, "state": state, "inventory": inventory}
    finally:
        subprocess.run([sys.executable, "-m", "localcloud", "cleanup"], cwd=ROOT, env=env,
                       capture_output=True, check=False)


def box_state(box: dict) -> list[str]:
    script = (ROOT / "molecule" / "shared" / "box_state.sh").read_text()
    return localcloud(box["env"], "ssh", BOX, "--", "sudo", "bash", "-s", stdin=script).splitlines()


@pytest.fixture(scope="module")
def provision_check(fresh_box):
    before = box_state(fresh_box)
    port = free_port()
    started = time.monotonic()
    run, output = playbook_json(
        fresh_box["env"], "--check", "-i", str(fresh_box["inventory"]), "playbooks/provision.yml",
        "-e", "conda_backend=uv", "-e", "conda_framework=none", "-e", f"jupyter_port={port}",
        "-e", f"access_ssh_config_file={fresh_box['state'] / 'ssh_config'}")
    print(f"provision.yml --check on the fresh box: {time.monotonic() - started:.0f}s")
    return {"run": run, "output": output, "port": port, "before": before,
            "after": box_state(fresh_box)}


def test_provision_check_on_a_fresh_box_exits_0(provision_check) -> None:
    run, output = provision_check["run"], provision_check["output"]
    failed = {name: result.get("msg") for name, result in results(output, BOX).items()
              if result.get("failed")}
    assert run.returncode == 0, (failed, run.stderr[-3000:])
    stats = output["stats"][BOX]
    assert (stats["failures"], stats["unreachable"]) == (0, 0)
    assert stats["changed"] > 0, "check mode reported nothing it would do"


def test_provision_check_says_what_it_would_do(provision_check) -> None:
    done = results(provision_check["output"], BOX)
    changed = {name for name, result in done.items() if result.get("changed")}
    # The partition and the filesystem, then the mount and its fstab line.
    assert {"Partition and format the empty volume",
            "Mount the volume by UUID and record it in /etc/fstab (nofail)"} <= changed, changed
    volume = done["Say what would be done to the volume (check mode)"]["msg"]
    assert volume[0].startswith("would make a GPT on /run/hostdev/loop"), volume
    assert volume[1].startswith("would make ext4 labelled spotbox-data on /run/"), volume
    assert volume[2].endswith("at /home/ubuntu/Payload and record it in /etc/fstab "
                              "(ext4, defaults,nofail)"), volume
    # The environment it would build.
    build = done["Say what the build would do (check mode)"]["msg"]
    assert build.startswith("would build course with uv at "
                            "/home/ubuntu/Payload/.spotbox/envs/course: "
                            "python=3.11, pip, jupyterlab"), build
    # The service it would create and start.
    assert "Install the Jupyter service" in changed
    service = "Say that Jupyter would be started and enabled at boot (check mode, a new unit)"
    assert service in changed
    assert done[service]["msg"].startswith(
        f"spotbox-jupyter would be created, enabled at boot and started: JupyterLab as ubuntu on "
        f"127.0.0.1:{provision_check['port']}, notebooks in /home/ubuntu/Payload"), done[service]
    # The ssh config entry it would write (on the controller), and the summary.
    assert "Write the ssh config entries (Include this file from ~/.ssh/config)" in changed
    summary = results(provision_check["output"], BOX)[  # roles/access runs on the box's play
        "Print the tunnel command and the URL"]["results"][0]["msg"]
    assert f":127.0.0.1:{provision_check['port']} ubuntu@127.0.0.1" in summary[1], summary
    assert summary[2].endswith("token=(check mode: the first real run makes the token)"), summary


def test_provision_check_leaves_the_box_as_it_was(provision_check, fresh_box) -> None:
    before, after = provision_check["before"], provision_check["after"]
    assert len(before) > 100 and any(line.startswith("disk /dev/xvdf ") for line in before)
    gone = [line for line in before if line not in set(after)]
    new = [line for line in after if line not in set(before)]
    assert before == after, {"gone": gone[:20], "new": new[:20]}
    assert not (fresh_box["state"] / "ssh_config").exists()


# --- launch.yml --check against an empty emulated account ----------------------------------

@pytest.fixture(scope="module")
def empty_account(tmp_path_factory):
    state = tmp_path_factory.mktemp("check-account")
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state),
           "AWS_EC2_METADATA_DISABLED": "true", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_NOCOLOR": "1"}
    try:
        localcloud(env, "moto-start")
        # A new account's G spot quota is 0 vCPUs (launch.yml stops on it, in check
        # mode too); this one asked for the demo's 8.
        localcloud(env, "quota", "set", "L-3819A6DF", "8")
        admin = ansible_env(env)
        home = state / "home"  # the key pair's .pem would go to $HOME/.ssh
        home.mkdir()
        (state / "inventory").mkdir()
        (state / "inventory" / "localhost.yml").write_text(
            (ROOT / "inventory" / "localhost.yml").read_text())
        # Run as an IAM user holding exactly docs/iam-policy.json, as on AWS.
        user = read_exports(localcloud(admin, "iam-user", "spotbox-check", "--policy",
                                       str(ROOT / "docs" / "iam-policy.json")))
        yield {"env": {**admin, **user, "HOME": str(home)}, "admin": admin, "state": state,
               "home": home}
    finally:
        subprocess.run([sys.executable, "-m", "localcloud", "cleanup"], cwd=ROOT, env=env,
                       capture_output=True, check=False)


def account(cloud: dict) -> dict:
    """Everything of the emulated region that launch.yml could create, by kind."""
    ec2 = boto3.client("ec2", region_name="us-east-2",
                       endpoint_url=cloud["admin"]["AWS_ENDPOINT_URL"],
                       aws_access_key_id="localcloud", aws_secret_access_key="localcloud")
    iam = boto3.client("iam", region_name="us-east-1",
                       endpoint_url=cloud["admin"]["AWS_ENDPOINT_URL"],
                       aws_access_key_id="localcloud", aws_secret_access_key="localcloud")
    return {
        "instances": [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                      for i in r["Instances"]],
        "volumes": [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]],
        "groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "keys": [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]],
        "templates": [t["LaunchTemplateId"] for t in
                      ec2.describe_launch_templates()["LaunchTemplates"]],
        "spot requests": [r["SpotInstanceRequestId"] for r in
                          ec2.describe_spot_instance_requests()["SpotInstanceRequests"]],
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
    }


def test_launch_check_against_an_empty_account_creates_nothing(empty_account) -> None:
    cloud = empty_account
    before = account(cloud)
    assert not before["instances"] + before["volumes"] + before["keys"] + before["templates"]
    inventory = cloud["state"] / "inventory"
    started = time.monotonic()
    run, output = playbook_json(
        cloud["env"], "-i", str(inventory), "launch.yml", "--check",
        "-e", "spot_instance_name=checkmode", "-e", "spot_instance_ssh_cidr=127.0.0.1/32",
        "-e", f"spot_instance_inventory_file={inventory / 'spotbox-checkmode.aws_ec2.yml'}",
        "-e", f"spot_instance_known_hosts_file={cloud['state'] / 'known_hosts'}",
        "-e", "conda_backend=uv")
    print(f"launch.yml --check against an empty account: {time.monotonic() - started:.0f}s")
    done = results(output, "aws-checkmode")  # the box's controller-side host
    failed = {name: result.get("msg") for name, result in done.items() if result.get("failed")}
    assert run.returncode == 0, (failed, run.stderr[-3000:])
    assert output["stats"]["aws-checkmode"]["changed"] > 0, "check mode said nothing it would do"
    [printed] = results(output, "localhost")["Print each instance, its price and how to log in"][
        "results"]
    summary = " ".join(printed["msg"])
    assert "would launch g4dn.xlarge" in summary, summary
    assert account(cloud) == before
    # Nor on the controller: no key file, inventory or known_hosts entry.
    assert sorted(p.name for p in inventory.iterdir()) == ["localhost.yml"]
    assert not (cloud["home"] / ".ssh").exists()
    assert not (cloud["state"] / "known_hosts").exists()
