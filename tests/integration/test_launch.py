"""launch.yml and terminate.yml against the AWS emulator, with a real box
standing in for the instance (reached through `localcloud ssh-proxy`).

What the emulator cannot show, and where it is tested instead: spot prices
that differ by zone (moto prices every offer alike; tests/unit/test_spot.py),
the instance lifecycle 'spot' of a launch-template spot instance (moto does
not mark it; real AWS does), and a live on-demand price (no Pricing API).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from conftest import ROOT, ansible_env, needs_local_cloud

pytestmark = needs_local_cloud
BOX = "itest"


def localcloud(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "localcloud", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("launch-cloud")
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state),
           "AWS_EC2_METADATA_DISABLED": "true", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_NOCOLOR": "1"}
    try:
        localcloud(env, "moto-start")
        localcloud(env, "box-create", f"spotbox-{BOX}")
        env = ansible_env(env)
        env["HOME"] = str(state)  # the key pair's .pem goes to $HOME/.ssh
        (state / ".ssh").mkdir(mode=0o700)
        (state / "inventory").mkdir()
        (state / "inventory" / "localhost.yml").write_text(
            (ROOT / "inventory" / "localhost.yml").read_text())
        yield {"env": env, "state": state}
    finally:
        localcloud(env, "cleanup")


def playbook(cloud: dict, *args: str, name: str = BOX):
    inventory = cloud["state"] / "inventory"
    # The caller's arguments come last: a later -e wins.
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory),
            "-e", f"spot_instance_name={name}", "-e", "spot_instance_ssh_cidr=127.0.0.1/32",
            "-e", f"spot_instance_inventory_file={inventory / 'aws_ec2.yml'}",
            "-e", "spot_instance_ssh_timeout=60", *args]
    return subprocess.run(argv, cwd=ROOT, env=cloud["env"], capture_output=True, text=True,
                          check=False)


def recap(output: str, host: str = "localhost") -> dict:
    match = re.search(rf"^{re.escape(host)}\s+: (.*)$", output, re.MULTILINE)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def ec2(cloud: dict):
    return boto3.client("ec2", region_name="us-east-2",
                        endpoint_url=cloud["env"]["AWS_ENDPOINT_URL"],
                        aws_access_key_id="localcloud", aws_secret_access_key="localcloud")


def resources(cloud: dict, name: str) -> dict:
    """Everything tagged for the box name, by kind."""
    client = ec2(cloud)
    tag = [{"Name": "tag:spotbox:box", "Values": [name]}]
    instances = [i for r in client.describe_instances(Filters=tag)["Reservations"]
                 for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    return {
        "instances": instances,
        "volumes": client.describe_volumes(Filters=tag)["Volumes"],
        "groups": client.describe_security_groups(Filters=tag)["SecurityGroups"],
        "keys": client.describe_key_pairs(Filters=tag)["KeyPairs"],
        "templates": client.describe_launch_templates(Filters=tag)["LaunchTemplates"],
    }


@pytest.fixture(scope="module")
def first_launch(cloud):
    # Timed on a quiet machine: the previous tests' deleted boxes (GBs) are
    # still being written back; a 37 s launch was measured in their wake.
    os.sync()
    started = time.monotonic()
    result = playbook(cloud, "launch.yml", "--skip-tags", "provision")
    return result, time.monotonic() - started


def test_launch_ends_with_the_summary(cloud, first_launch) -> None:
    result, seconds = first_launch
    assert result.returncode == 0, result.stdout[-4000:]
    assert seconds < 30, f"launch took {seconds:.1f}s"
    out = " ".join(result.stdout.split())  # the callback folds long lines
    assert re.search(r"instance i-\w+ \(g4dn\.xlarge in us-east-2[abc]\)", out)
    assert re.search(r"price now 1e-05 USD/h spot vs 0\.526 on-demand", out)
    assert re.search(r"ssh ssh -i \S+/\.ssh/spotbox-itest\.pem ubuntu@[\d.]+", out)
    assert "chosen: g4dn.xlarge in us-east-2" in out
    assert recap(result.stdout, f"spotbox-{BOX}")["ok"] == 1, "the wait for SSH must reach the box"


def test_resources_are_as_asked(cloud, first_launch) -> None:
    found = resources(cloud, BOX)
    assert len(found["instances"]) == 1
    instance = found["instances"][0]
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    # The newest x86_64 "Deep Learning Base ... (Ubuntu 22.04)" of localcloud/data/amis.json.
    assert instance["ImageId"] == "ami-0dl22b0000000002"
    [group] = found["groups"]
    assert [r["IpRanges"] for r in group["IpPermissions"]] == [
        [{"CidrIp": "127.0.0.1/32", "Description": "SSH"}]]
    assert group["IpPermissions"][0]["FromPort"] == 22
    data = [v for v in found["volumes"] if v["Size"] == 100]
    assert len(data) == 1 and data[0]["Encrypted"] and data[0]["VolumeType"] == "gp3"
    assert data[0]["Attachments"][0]["InstanceId"] == instance["InstanceId"]
    assert data[0]["AvailabilityZone"] == instance["Placement"]["AvailabilityZone"]
    version = ec2(cloud).describe_launch_template_versions(
        LaunchTemplateName=f"spotbox-{BOX}")["LaunchTemplateVersions"][-1]["LaunchTemplateData"]
    assert version["InstanceMarketOptions"]["MarketType"] == "spot"
    root = version["BlockDeviceMappings"][0]["Ebs"]
    assert (root["VolumeSize"], root["VolumeType"], root["DeleteOnTermination"]) == (
        50, "gp3", True)
    key = cloud["state"] / ".ssh" / f"spotbox-{BOX}.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400


def test_inventory_lists_the_box(cloud, first_launch) -> None:
    inventory = cloud["state"] / "inventory" / "aws_ec2.yml"
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-inventory")), "-i", str(inventory),
         "--host", f"spotbox-{BOX}"],
        cwd=ROOT, env=cloud["env"], capture_output=True, text=True, check=True).stdout
    hostvars = json.loads(out)
    assert hostvars["ansible_user"] == "ubuntu"
    assert hostvars["ansible_ssh_private_key_file"].endswith(f"/.ssh/spotbox-{BOX}.pem")
    assert re.fullmatch(r"[\d.]+", hostvars["ansible_host"])
    assert hostvars["spotbox_box_name"] == BOX
    # The same inventory drives a play on the box itself.
    ping = subprocess.run(
        [str(Path(sys.executable).with_name("ansible")), "-i", str(inventory),
         f"spotbox_box_{BOX}", "-m", "ansible.builtin.command", "-a", "hostname"],
        cwd=ROOT, env=cloud["env"], capture_output=True, text=True, check=False)
    assert f"spotbox-{BOX}" in ping.stdout, ping.stdout + ping.stderr


def test_rerun_and_check_mode_change_nothing(cloud, first_launch) -> None:
    before = resources(cloud, BOX)
    again = playbook(cloud, "launch.yml", "--skip-tags", "provision")
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout)["changed"] == 0, again.stdout[-3000:]
    check = playbook(cloud, "launch.yml", "--skip-tags", "provision", "--check")
    assert check.returncode == 0, check.stdout[-3000:]
    assert recap(check.stdout)["changed"] == 0
    after = resources(cloud, BOX)
    assert {k: len(v) for k, v in before.items()} == {k: len(v) for k, v in after.items()}


def test_terminate_keeps_the_volume_and_relaunch_reuses_it(cloud, first_launch) -> None:
    before = resources(cloud, BOX)
    volume = next(v for v in before["volumes"] if v["Size"] == 100)
    done = playbook(cloud, "playbooks/terminate.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    assert f"Kept the data volume {volume['VolumeId']}" in done.stdout
    gone = resources(cloud, BOX)
    assert gone["instances"] == []
    assert [v["State"] for v in gone["volumes"] if v["VolumeId"] == volume["VolumeId"]] == [
        "available"]
    # The spot box died: a new box stands in for the next instance.
    localcloud(cloud["env"], "box-destroy", f"spotbox-{BOX}")
    localcloud(cloud["env"], "box-create", f"spotbox-{BOX}")
    relaunch = playbook(cloud, "launch.yml", "--skip-tags", "provision")
    assert relaunch.returncode == 0, relaunch.stdout[-3000:]
    assert "the zone of the existing data volume" in " ".join(relaunch.stdout.split())
    now = resources(cloud, BOX)
    [instance] = now["instances"]
    assert instance["Placement"]["AvailabilityZone"] == volume["AvailabilityZone"]
    attached = next(v for v in now["volumes"] if v["VolumeId"] == volume["VolumeId"])
    assert attached["Attachments"][0]["InstanceId"] == instance["InstanceId"]
    assert len([v for v in now["volumes"] if v["Size"] == 100]) == 1, "no second data volume"


def test_terminate_can_snapshot_and_delete_on_request(cloud, first_launch) -> None:
    volume = next(v for v in resources(cloud, BOX)["volumes"] if v["Size"] == 100)
    done = playbook(cloud, "playbooks/terminate.yml",
                    "-e", "spot_instance_snapshot_on_terminate=true",
                    "-e", "spot_instance_delete_data_volume=true")
    assert done.returncode == 0, done.stdout[-3000:]
    snapshots = ec2(cloud).describe_snapshots(
        Filters=[{"Name": "volume-id", "Values": [volume["VolumeId"]]}])["Snapshots"]
    assert len(snapshots) == 1
    assert volume["VolumeId"] not in [v["VolumeId"] for v in resources(cloud, BOX)["volumes"]]


@pytest.mark.parametrize(("extra", "message"), [
    (["-e", "spot_instance_types=t2.micro"], "t2.micro has no GPU"),
    (["-e", "spot_instance_types=zz.large"], "spot_instance_types: The following supplied "
                                             "instance types do not exist: [zz.large]"),
    (["-e", "spot_instance_max_price=cheap"], "spot_instance_max_price must be empty or a "
                                              "positive USD/hour price"),
    (["-e", "spot_instance_interruption_behavior=stop"], "needs spot_instance_request_type "
                                                         "persistent"),
    (["-e", "spot_instance_ssh_cidr=example.com"], "spot_instance_ssh_cidr must be an IPv4"),
    (["-e", "spot_instance_name=Bad_Name"], "spot_instance_name must be 1-31 lower-case letters"),
])
def test_bad_input_fails_early_and_creates_nothing(cloud, extra, message) -> None:
    result = playbook(cloud, "launch.yml", *extra, name="badinput")
    assert result.returncode != 0
    assert message in " ".join((result.stdout + result.stderr).split()), result.stdout[-3000:]
    assert all(v == [] for v in resources(cloud, "badinput").values())


def test_missing_credentials_say_how_to_configure(cloud) -> None:
    env = {k: v for k, v in cloud["env"].items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    env.update(AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_CONFIG_FILE="/dev/null")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i",
         str(cloud["state"] / "inventory"), "launch.yml", "-e", "spot_instance_name=nocreds",
         "-e", "spot_instance_ssh_cidr=127.0.0.1/32"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "no AWS credentials found. Configure them with `aws configure`" in " ".join(
        result.stdout.split())
    assert all(v == [] for v in resources(cloud, "nocreds").values())
