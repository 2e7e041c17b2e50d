"""The layer as the local cloud starts it: moto.start, the CLI's switches, cleanup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from localcloud import cleanup, moto, procs
from localcloud.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    registry = Registry(state)
    record = moto.start(registry)
    yield registry, record, {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state)}
    cleanup.cleanup(registry)  # the layer booted a box for each instance launched here


def cli(env, *args) -> str:
    return subprocess.run([sys.executable, "-m", "localcloud", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


def ec2_of(record, **credentials):
    env = moto.aws_env(record)
    return boto3.session.Session().client(
        "ec2", region_name=env["AWS_REGION"], endpoint_url=moto.endpoint(record),
        aws_access_key_id=credentials.get("key", env["AWS_ACCESS_KEY_ID"]),
        aws_secret_access_key=credentials.get("secret", env["AWS_SECRET_ACCESS_KEY"]))


def test_clients_reach_moto_through_the_layer(cloud) -> None:
    registry, record, _ = cloud
    assert record["port"] != record["moto_port"]
    assert procs.alive(record["pid"], record["pid_start"])
    assert procs.alive(record["layer_pid"], record["layer_pid_start"])
    assert moto.endpoint(record) == f"http://127.0.0.1:{record['port']}"
    image = ec2_of(record).describe_images(ImageIds=["ami-0dl22b0000000002"])["Images"][0]
    assert image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"] == 75  # the layer answered
    assert moto.start(registry) == record  # running: the same pair


def test_cli_switches_act_on_the_running_layer(cloud) -> None:
    registry, record, env = cloud
    ec2 = ec2_of(record)
    spot = {"MarketType": "spot"}
    launch = {"ImageId": "ami-0dl22b0000000002", "MinCount": 1, "MaxCount": 1,
              "InstanceType": "g4dn.xlarge", "InstanceMarketOptions": spot}
    with pytest.raises(ec2.exceptions.ClientError, match="MaxSpotInstanceCountExceeded"):
        ec2.run_instances(**launch)
    assert "L-3819A6DF = 8" in cli(env, "quota", "set", "L-3819A6DF", "8")
    ec2.run_instances(**launch)
    cli(env, "capacity", "off", "g4dn.xlarge", "us-east-2a")
    with pytest.raises(ec2.exceptions.ClientError, match="InsufficientInstanceCapacity"):
        ec2.run_instances(**{**launch, "Placement": {"AvailabilityZone": "us-east-2a"}})
    cli(env, "capacity", "on", "g4dn.xlarge", "us-east-2a")
    cli(env, "lenient")
    ec2.run_instances(**{**launch, "BlockDeviceMappings": [
        {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50}}]})
    cli(env, "strict")
    cli(env, "account", "--no-default-vpc", "--spot-role")
    assert ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"] == []
    iam = boto3.session.Session().client(
        "iam", region_name="us-east-1", endpoint_url=moto.endpoint(record),
        aws_access_key_id="localcloud", aws_secret_access_key="localcloud")
    assert iam.get_role(RoleName="AWSServiceRoleForEC2Spot")["Role"]["RoleName"]
    cli(env, "account", "--default-vpc", "--no-spot-role")
    state = json.loads((Path(registry.root) / "awslayer.json").read_text())
    assert state["quotas"] == {"L-3819A6DF": 8.0} and state["strict"] is True


def test_iam_user_prints_working_exports(cloud, tmp_path) -> None:
    _, record, env = cloud
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:DescribeRegions", "Resource": "*"}]}))
    exports = procs.read_exports(cli(env, "iam-user", "reader", "--policy", str(policy)))
    assert set(exports) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    ec2 = ec2_of(record, key=exports["AWS_ACCESS_KEY_ID"],
                 secret=exports["AWS_SECRET_ACCESS_KEY"])
    ec2.describe_regions()
    with pytest.raises(ec2.exceptions.ClientError, match="UnauthorizedOperation"):
        ec2.describe_instances()
    # Again: the user is updated, with a new key; the old one no longer works.
    again = cli(env, "iam-user", "reader", "--policy", str(policy))
    assert exports["AWS_ACCESS_KEY_ID"] not in again
    with pytest.raises(ec2.exceptions.ClientError, match="AuthFailure"):
        ec2.describe_regions()


def test_stop_ends_both(tmp_path) -> None:
    registry = Registry(tmp_path)
    record = moto.start(registry)
    moto.stop(registry)
    assert not procs.alive(record["pid"], record["pid_start"])
    assert not procs.alive(record["layer_pid"], record["layer_pid_start"])
    assert registry.get("moto", moto.NAME) is None
