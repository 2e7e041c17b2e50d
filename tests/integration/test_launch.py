"""launch.yml and terminate.yml against the strict local cloud (moto behind the
layer of AWS's rules, localcloud/README.md), run as an IAM user holding exactly
docs/iam-policy.json, with real boxes standing in for the instances (reached
through `localcloud ssh-proxy`).

Each of AWS's first-use rules is shown biting here: a new account's spot quota
of 0, the DLAMI's 75 GiB root snapshot, the spot service-linked role, IAM,
capacity, a stopped persistent box, host keys, no default VPC; and spotbox's own
safety rules: wildcard names, key files, other people's boxes.
"""

from __future__ import annotations

import contextlib
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

from localcloud.procs import read_exports

pytestmark = needs_local_cloud
BOX = "itest"
REGION = "us-east-2"
G_QUOTA = "L-3819A6DF"
EVE = "arn:aws:iam::123456789012:user/eve"  # another user of the same account


def localcloud(env: dict, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "localcloud", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"localcloud {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def iam_user(cloud: dict, name: str, policy: dict) -> dict:
    """The environment of an IAM user holding policy (made in the emulator)."""
    path = cloud["state"] / f"{name}-policy.json"
    path.write_text(json.dumps(policy))
    return {**cloud["admin_env"], **read_exports(localcloud(cloud["admin_env"], "iam-user", name,
                                                       "--policy", str(path)))}


POLICY = json.loads((ROOT / "docs" / "iam-policy.json").read_text())


def without(*actions: str) -> dict:
    """docs/iam-policy.json less some actions."""
    policy = json.loads(json.dumps(POLICY))
    for statement in policy["Statement"]:
        listed = statement["Action"] if isinstance(statement["Action"], list) else [
            statement["Action"]]
        statement["Action"] = [a for a in listed if a not in actions]
    policy["Statement"] = [s for s in policy["Statement"] if s["Action"]]
    return policy


@contextlib.contextmanager
def user_cloud(tmp_path_factory, label: str):
    """A local cloud of its own (ended afterwards) and an account whose spot quota was
    raised, used as the IAM user spotbox-tests holding exactly docs/iam-policy.json."""
    state = tmp_path_factory.mktemp(label)
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state),
           "AWS_EC2_METADATA_DISABLED": "true", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_NOCOLOR": "1"}
    try:
        localcloud(env, "moto-start")
        admin = ansible_env(env)
        home = state / "home"  # the key pair's default .pem goes to $HOME/.ssh
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        admin["HOME"] = str(home)
        (state / "inventory").mkdir()
        (state / "inventory" / "localhost.yml").write_text(
            (ROOT / "inventory" / "localhost.yml").read_text())
        cloud = {"admin_env": admin, "state": state, "home": home}
        cloud["env"] = iam_user(cloud, "spotbox-tests", POLICY)
        # A new account has 0 (test_a_new_accounts_spot_quota_...); this one asked for more.
        localcloud(admin, "quota", "set", G_QUOTA, "64")
        yield cloud
    finally:
        subprocess.run([sys.executable, "-m", "localcloud", "cleanup"], cwd=ROOT, env=env,
                       capture_output=True, check=False)


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with user_cloud(tmp_path_factory, "launch-cloud") as made:
        yield made


def inventory_file(cloud: dict, name: str) -> Path:
    return cloud["state"] / "inventory" / f"spotbox-{name}.aws_ec2.yml"


def playbook(cloud: dict, *args: str, name: str | None = BOX, env: dict | None = None):
    """ansible-playbook for the box name; None: the caller names the boxes (a list)."""
    inventory = cloud["state"] / "inventory"
    named = () if name is None else (
        "-e", f"spot_instance_name={name}",
        "-e", f"spot_instance_inventory_file={inventory_file(cloud, name)}")
    # The caller's arguments come last: a later -e wins.
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory),
            *named, "-e", "spot_instance_ssh_cidr=127.0.0.1/32",
            "-e", f"spot_instance_known_hosts_file={cloud['state']}/known_hosts",
            "-e", "spot_instance_ssh_timeout=60", *args]
    return subprocess.run(argv, cwd=ROOT, env=env or cloud["env"], capture_output=True,
                          text=True, check=False)


def text(result) -> str:
    """The output as one line: the YAML callback folds long lines and doubles the
    quote in a single-quoted string (AMI''s)."""
    return " ".join((result.stdout + result.stderr).split()).replace("''", "'")


def recap(output: str, host: str = "localhost") -> dict:
    match = re.search(rf"^{re.escape(host)}\s+: (.*)$", output, re.MULTILINE)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def client(cloud: dict, service: str = "ec2"):
    """An admin client (the account root), to look at what exists."""
    return boto3.client(service, region_name=REGION,
                        endpoint_url=cloud["admin_env"]["AWS_ENDPOINT_URL"],
                        aws_access_key_id="localcloud", aws_secret_access_key="localcloud")


def resources(cloud: dict, name: str) -> dict:
    """Everything tagged for the box name, by kind (terminated instances left out)."""
    ec2 = client(cloud)
    tag = [{"Name": "tag:spotbox:box", "Values": [name]}]
    instances = [i for r in ec2.describe_instances(Filters=tag)["Reservations"]
                 for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    return {
        "instances": instances,
        "volumes": ec2.describe_volumes(Filters=tag)["Volumes"],
        "groups": ec2.describe_security_groups(Filters=tag)["SecurityGroups"],
        "keys": ec2.describe_key_pairs(Filters=tag)["KeyPairs"],
        "templates": ec2.describe_launch_templates(Filters=tag)["LaunchTemplates"],
        "requests": [r for r in ec2.describe_spot_instance_requests(Filters=tag)[
            "SpotInstanceRequests"] if r["State"] in ("open", "active", "disabled")],
    }


def data_volume(cloud: dict, name: str) -> dict:
    """The data volume of the box name (its tags), as EC2 describes it."""
    [volume] = client(cloud).describe_volumes(Filters=[
        {"Name": "tag:spotbox:box", "Values": [name]},
        {"Name": "tag:spotbox:role", "Values": ["data"]}])["Volumes"]
    return volume


def shutdown_behaviour(cloud: dict, instance: dict) -> str:
    """What EC2 does when the box powers itself off (the launch template's setting)."""
    return client(cloud).describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="instanceInitiatedShutdownBehavior",
    )["InstanceInitiatedShutdownBehavior"]["Value"]


def ours(instances: list[dict]) -> list[dict]:
    """Leave out the instance another user (EVE) tagged with the same box name."""
    return [i for i in instances
            if {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get("spotbox:owner") != EVE]


def nothing_exists(cloud: dict, name: str) -> None:
    found = {kind: items for kind, items in resources(cloud, name).items() if items}
    assert not found, f"a refused run left {found}"


def cheapest_zone(cloud: dict, instance_type: str) -> str:
    history = client(cloud).describe_spot_price_history(
        InstanceTypes=[instance_type], ProductDescriptions=["Linux/UNIX"],
        StartTime=time.time())["SpotPriceHistory"]
    return min(history, key=lambda h: (float(h["SpotPrice"]), h["AvailabilityZone"]))[
        "AvailabilityZone"]


# --- refused before anything is created ---------------------------------------------------

def test_a_new_accounts_spot_quota_of_0_is_refused_before_anything_is_created(cloud) -> None:
    localcloud(cloud["admin_env"], "quota", "set", G_QUOTA, "0")
    try:
        result = playbook(cloud, "launch.yml", "--skip-tags", "provision", name="newacct")
    finally:
        localcloud(cloud["admin_env"], "quota", "set", G_QUOTA, "64")
    assert result.returncode != 0
    out = text(result)
    assert ('the spot vCPU quota "All G and VT Spot Instance Requests" (L-3819A6DF) in '
            'us-east-2 is 0 vCPUs') in out, out[-3000:]
    assert "request-service-quota-increase --service-code ec2 --quota-code L-3819A6DF" in out
    nothing_exists(cloud, "newacct")


def test_an_existing_key_file_is_never_overwritten(cloud) -> None:
    key = cloud["state"] / "mine.pem"
    key.write_text("my own key\n")
    result = playbook(cloud, "launch.yml", "--skip-tags", "provision",
                      "-e", f"spot_instance_key_file={key}", name="keyclash")
    assert result.returncode != 0
    assert f"but the file {key} does: spotbox never overwrites a file" in text(result)
    assert key.read_text() == "my own key\n"
    nothing_exists(cloud, "keyclash")


@pytest.mark.parametrize("pattern", ["*", "itest*", "ites?"])
def test_terminate_refuses_wildcards(cloud, pattern) -> None:
    result = playbook(cloud, "playbooks/terminate.yml", name=pattern)
    assert result.returncode != 0
    assert "spot_instance_name must be" in text(result), text(result)[-2000:]


def test_without_permission_for_the_spot_role_the_admin_command_is_given(cloud) -> None:
    user = iam_user(cloud, "no-slr", without("iam:CreateServiceLinkedRole"))
    result = playbook(cloud, "launch.yml", "--skip-tags", "provision", name="noslr", env=user)
    assert result.returncode != 0
    out = text(result)
    assert "AWSServiceRoleForEC2Spot does not exist and this AWS identity may not create it" in out
    assert "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com" in out
    nothing_exists(cloud, "noslr")


def test_a_missing_permission_is_named(cloud) -> None:
    user = iam_user(cloud, "no-prices", without("ec2:DescribeSpotPriceHistory"))
    result = playbook(cloud, "launch.yml", "--skip-tags", "provision", name="noprices", env=user)
    assert result.returncode != 0
    out = text(result)
    assert "UnauthorizedOperation" in out and "ec2:DescribeSpotPriceHistory" in out, out[-2000:]
    assert "docs/iam-policy.json" in out
    nothing_exists(cloud, "noprices")


@pytest.mark.parametrize(("extra", "message"), [
    (["-e", "spot_instance_types=t2.micro"], "t2.micro has no GPU"),
    (["-e", "spot_instance_types=zz.large"], "spot_instance_types: The following supplied "
                                             "instance types do not exist: [zz.large]"),
    (["-e", "spot_instance_ami_id=ami-00000000000000000"],
     "no AMI ami-00000000000000000 in us-east-2; leave spot_instance_ami_id empty"),
    (["-e", "spot_instance_region=xx-mars-1"], "spot_instance_region 'xx-mars-1' is not an "
                                               "AWS region"),
])
def test_what_only_aws_knows_is_said_in_a_sentence(cloud, extra, message) -> None:
    result = playbook(cloud, "launch.yml", *extra, name="badinput")
    assert result.returncode != 0
    assert message in text(result), text(result)[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    nothing_exists(cloud, "badinput")


# --- the first launch ----------------------------------------------------------------------

# 50 GiB as in the course: smaller than the DLAMI's 75 GiB root snapshot.
FIRST = ("launch.yml", "--skip-tags", "provision", "-e", "spot_instance_root_volume_size=50")


def unsafe(value):
    """ansible-inventory --list marks the aws_ec2 plugin's values unsafe."""
    if isinstance(value, dict) and list(value) == ["__ansible_unsafe"]:
        return value["__ansible_unsafe"]
    return value


@pytest.fixture(scope="module")
def first_launch(cloud):
    os.sync()  # timed on a quiet disk: earlier tests' deleted boxes are still written back
    # Each task's time in the output, so that a slow launch says where its time went.
    env = {**cloud["env"], "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
           "PROFILE_TASKS_SORT_ORDER": "descending", "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "12"}
    started = time.monotonic()
    result = playbook(cloud, *FIRST, env=env)
    return result, time.monotonic() - started


def slowest_tasks(result) -> str:
    """profile_tasks's closing table: the slowest tasks with their seconds."""
    return result.stdout[result.stdout.rfind("=" * 20):][-2000:]


def test_launch_ends_with_the_summary(cloud, first_launch) -> None:
    result, seconds = first_launch
    assert result.returncode == 0, result.stdout[-5000:]
    # 30 s on a quiet machine (about 2 s per AWS module: boto3 and EC2's service model
    # loaded by each); CI's machine took 31.6 s once: the bound leaves it room.
    assert seconds < 45, f"launch took {seconds:.1f}s; {slowest_tasks(result)}"
    out = text(result)
    assert re.search(r"instance i-\w+ \(g4dn\.xlarge in us-east-2[abc], us-east-2\): launched", out)
    assert re.search(r"price now 0\.\d+ USD/h spot vs 0\.526 on-demand \(saving \d+", out)
    assert re.search(r"ssh ssh -i \S+/\.ssh/spotbox-us-east-2-itest\.pem ubuntu@[\d.]+", out)
    assert "region us-east-2 (the AWS profile or environment)" in out
    assert recap(result.stdout, f"spotbox-{BOX}")["ok"] >= 1, "the wait for SSH must reach the box"


def test_the_root_volume_is_raised_to_the_amis_snapshot(cloud, first_launch) -> None:
    result, _ = first_launch
    assert ("spot_instance_root_volume_size 50 GiB is smaller than the AMI's root snapshot "
            "(75 GiB): using 75 GiB") in text(result)
    version = client(cloud).describe_launch_template_versions(
        LaunchTemplateName=f"spotbox-{BOX}")["LaunchTemplateVersions"][-1]["LaunchTemplateData"]
    root = version["BlockDeviceMappings"][0]["Ebs"]
    assert (root["VolumeSize"], root["VolumeType"], root["DeleteOnTermination"]) == (
        75, "gp3", True)


def test_the_spot_role_was_created_once(cloud, first_launch) -> None:
    role = client(cloud, "iam").get_role(RoleName="AWSServiceRoleForEC2Spot")["Role"]
    assert role["Path"] == "/aws-service-role/spot.amazonaws.com/"


def test_resources_are_as_asked_and_owned(cloud, first_launch) -> None:
    found = resources(cloud, BOX)
    [instance] = found["instances"]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["spotbox:owner"] == "arn:aws:iam::123456789012:user/spotbox-tests"
    assert instance["InstanceLifecycle"] == "spot"
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert shutdown_behaviour(cloud, instance) == "terminate"  # a one-time box ends
    assert instance["ImageId"] == "ami-0dl22b0000000002"  # the newest x86_64 DLAMI stand-in
    [request] = found["requests"]
    assert (request["State"], request["InstanceId"], request["Type"]) == (
        "active", instance["InstanceId"], "one-time")
    [template] = found["templates"]  # tagged at creation: status finds a leftover one
    assert {t["Key"]: t["Value"] for t in template["Tags"]}["spotbox:owner"] == tags[
        "spotbox:owner"]
    [group] = found["groups"]
    assert [r["IpRanges"] for r in group["IpPermissions"]] == [
        [{"CidrIp": "127.0.0.1/32", "Description": "SSH"}]]
    [data] = [v for v in found["volumes"] if v["Size"] == 100]
    assert data["Encrypted"] and data["VolumeType"] == "gp3"
    assert data["Attachments"][0]["InstanceId"] == instance["InstanceId"]
    assert data["AvailabilityZone"] == instance["Placement"]["AvailabilityZone"]
    key = cloud["home"] / ".ssh" / f"spotbox-{REGION}-{BOX}.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400


def test_the_host_key_was_accepted_once(cloud, first_launch) -> None:
    [instance] = ours(resources(cloud, BOX)["instances"])
    known = subprocess.run(["ssh-keygen", "-F", instance["PublicIpAddress"], "-f",
                            str(cloud["state"] / "known_hosts")], capture_output=True, text=True)
    assert known.returncode == 0, "accept-new must have recorded the box's host key"


def test_the_inventory_holds_only_the_callers_boxes(cloud, first_launch) -> None:
    # Another user's instance carrying the same box name and spotbox's tags.
    ec2 = client(cloud)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1,
                      TagSpecifications=[{"ResourceType": "instance", "Tags": [
                          {"Key": "Name", "Value": "spotbox-itest *"},
                          {"Key": "spotbox:box", "Value": BOX},
                          {"Key": "spotbox:managed", "Value": "true"},
                          {"Key": "spotbox:owner", "Value": EVE}]}])
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-inventory")), "-i",
         str(inventory_file(cloud, BOX)), "--list"],
        cwd=ROOT, env=cloud["env"], capture_output=True, text=True, check=True).stdout
    hosts = json.loads(out)["_meta"]["hostvars"]
    assert list(hosts) == [f"spotbox-{BOX}"]
    hostvars = {k: unsafe(v) for k, v in hosts[f"spotbox-{BOX}"].items()}
    assert hostvars["ansible_ssh_private_key_file"].endswith(f"/.ssh/spotbox-{REGION}-{BOX}.pem")
    assert "StrictHostKeyChecking=accept-new" in hostvars["ansible_ssh_common_args"]
    assert hostvars["spotbox_region"] == REGION
    # ...and a re-run of launch still sees one box: its own.
    again = playbook(cloud, *FIRST)
    assert again.returncode == 0, again.stdout[-3000:]


def test_rerun_and_check_mode_change_nothing(cloud, first_launch) -> None:
    before = resources(cloud, BOX)
    again = playbook(cloud, *FIRST)
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout, f"aws-{BOX}")["changed"] == 0, again.stdout[-3000:]
    check = playbook(cloud, *FIRST, "--check")
    assert check.returncode == 0, check.stdout[-3000:]
    assert recap(check.stdout, f"aws-{BOX}")["changed"] == 0
    after = resources(cloud, BOX)
    assert {k: len(v) for k, v in before.items()} == {k: len(v) for k, v in after.items()}


def test_an_existing_box_keeps_its_type_when_others_are_listed(cloud, first_launch) -> None:
    # g5.xlarge listed first: a new box could get it, the running one must not change
    # (EC2 cannot change a spot instance's type; ec2_instance would stop it and try).
    [before] = ours(resources(cloud, BOX)["instances"])
    again = playbook(cloud, *FIRST, "-e", "spot_instance_types=g5.xlarge,g4dn.xlarge")
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap(again.stdout, f"aws-{BOX}")["changed"] == 0
    [after] = ours(resources(cloud, BOX)["instances"])
    assert (after["InstanceId"], after["InstanceType"], after["State"]["Name"]) == (
        before["InstanceId"], "g4dn.xlarge", "running")


# --- a second box: no ~/.ssh, no capacity in the first zone, the first box untouched --------

@pytest.fixture(scope="module")
def second_box(cloud, first_launch):
    home = cloud["state"] / "fresh-home"  # a controller that never used ssh
    home.mkdir()
    env = {**cloud["env"], "HOME": str(home)}
    full_zone = cheapest_zone(cloud, "g4dn.xlarge")
    localcloud(cloud["admin_env"], "capacity", "off", "g4dn.xlarge", full_zone)
    alpha = ours(resources(cloud, BOX)["instances"])[0]
    try:
        result = playbook(cloud, "launch.yml", "--tags", "launch,provision",
                          "--skip-tags", "role::cuda,role::conda,role::data_volume,role::jupyter,"
                          "access", name="beta", env=env)
    finally:
        localcloud(cloud["admin_env"], "capacity", "on", "g4dn.xlarge", full_zone)
    return {"result": result, "home": home, "full_zone": full_zone, "alpha": alpha}


def test_no_capacity_in_the_first_zone_takes_the_next_offer(cloud, second_box) -> None:
    result = second_box["result"]
    assert result.returncode == 0, result.stdout[-5000:]
    [instance] = resources(cloud, "beta")["instances"]
    assert instance["Placement"]["AvailabilityZone"] != second_box["full_zone"]
    assert f"no capacity for g4dn.xlarge in {second_box['full_zone']}" in text(result)
    [data] = [v for v in resources(cloud, "beta")["volumes"] if v["Size"] == 100]
    assert data["AvailabilityZone"] == instance["Placement"]["AvailabilityZone"]


def test_a_controller_without_dot_ssh_gets_it(cloud, second_box) -> None:
    ssh_dir = second_box["home"] / ".ssh"
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    key = ssh_dir / f"spotbox-{REGION}-beta.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400 and key.read_text().startswith("-----BEGIN")


def test_launching_one_box_leaves_the_other_alone(cloud, second_box) -> None:
    result = second_box["result"]
    assert "provisioning spotbox-beta" in text(result)
    assert f"spotbox-{BOX}" not in re.sub(r"(?s).*PLAY RECAP", "", result.stdout), (
        "launching beta must not run anything on itest")
    alpha = ours(resources(cloud, BOX)["instances"])[0]
    assert (alpha["InstanceId"], alpha["State"]["Name"]) == (
        second_box["alpha"]["InstanceId"], "running")
    [volume] = [v for v in resources(cloud, BOX)["volumes"] if v["Size"] == 100]
    assert volume["Attachments"][0]["InstanceId"] == alpha["InstanceId"]


def host_key(cloud: dict, address: str) -> str:
    """The known_hosts line(s) for address ('' when there is none)."""
    return subprocess.run(["ssh-keygen", "-F", address, "-f", str(cloud["state"] / "known_hosts")],
                          capture_output=True, text=True).stdout


def test_a_recycled_address_with_a_stale_host_key_is_reached(cloud, second_box) -> None:
    # beta ends outside spotbox (from the console, say): its host key stays in known_hosts.
    [old] = resources(cloud, "beta")["instances"]
    address = old["PublicIpAddress"]
    stale = host_key(cloud, address)
    assert stale, "launch must have recorded beta's host key"
    client(cloud).terminate_instances(InstanceIds=[old["InstanceId"]])
    # A new instance gets the same address; its box (booted by the local cloud at
    # RunInstances, as every instance's) has a new host key.
    localcloud(cloud["admin_env"], "recycle-address", address)
    env = {**cloud["env"], "HOME": str(second_box["home"])}
    again = playbook(cloud, "launch.yml", "--skip-tags", "provision", name="beta", env=env)
    assert again.returncode == 0, again.stdout[-4000:]
    [new] = resources(cloud, "beta")["instances"]
    assert new["InstanceId"] != old["InstanceId"] and new["PublicIpAddress"] == address
    assert recap(again.stdout, "spotbox-beta")["ok"] >= 1, "SSH must reach the new box"
    fresh = host_key(cloud, address)
    assert fresh and fresh != stale, "the stale key must be replaced by the new box's"


# --- terminate -----------------------------------------------------------------------------

def test_terminate_ends_only_the_named_box_and_keeps_its_volume(cloud, second_box) -> None:
    before = resources(cloud, "beta")
    [volume] = [v for v in before["volumes"] if v["Size"] == 100]
    address = before["instances"][0]["PublicIpAddress"]
    done = playbook(cloud, "playbooks/terminate.yml", "-e", "spot_instance_region=",
                    name="beta", env={**cloud["env"], "AWS_REGION": "eu-west-1",
                                      "AWS_DEFAULT_REGION": "eu-west-1"})
    assert done.returncode == 0, done.stdout[-3000:]
    out = text(done)
    # The region came from the box's inventory file, not the environment.
    assert f"terminate {before['instances'][0]['InstanceId']} (box beta, us-east-2)" in out, out
    assert f"kept the data volume {volume['VolumeId']} (100 GiB in" in out
    gone = resources(cloud, "beta")
    assert gone["instances"] == [] and gone["requests"] == []
    assert [v["State"] for v in gone["volumes"] if v["VolumeId"] == volume["VolumeId"]] == [
        "available"]
    assert ours(resources(cloud, BOX)["instances"])[0]["State"]["Name"] == "running"
    known = subprocess.run(["ssh-keygen", "-F", address, "-f",
                            str(cloud["state"] / "known_hosts")], capture_output=True, text=True)
    assert known.returncode == 1, "terminate must forget the ended instance's host key"


def test_terminate_can_snapshot_and_delete_on_request(cloud, second_box) -> None:
    [volume] = [v for v in resources(cloud, "beta")["volumes"] if v["Size"] == 100]
    done = playbook(cloud, "playbooks/terminate.yml",
                    "-e", "spot_instance_snapshot_on_terminate=true",
                    "-e", "spot_instance_delete_data_volume=true", name="beta")
    assert done.returncode == 0, done.stdout[-3000:]
    snapshots = client(cloud).describe_snapshots(
        Filters=[{"Name": "volume-id", "Values": [volume["VolumeId"]]}])["Snapshots"]
    assert len(snapshots) == 1
    assert volume["VolumeId"] not in [v["VolumeId"] for v in resources(cloud, "beta")["volumes"]]
    assert f"delete the data volume {volume['VolumeId']}" in text(done)


# --- persistent requests -------------------------------------------------------------------

@pytest.fixture(scope="module")
def persistent_box(cloud, first_launch):
    return playbook(cloud, "launch.yml", "--skip-tags", "provision",
                    "-e", "spot_instance_request_type=persistent",
                    "-e", "spot_instance_interruption_behavior=stop", name="keep")


def test_persistent_needs_stop(cloud) -> None:
    result = playbook(cloud, "launch.yml", "--skip-tags", "provision",
                      "-e", "spot_instance_request_type=persistent", name="persist")
    assert result.returncode != 0
    assert "AWS allows a persistent one only with stop" in text(result)
    nothing_exists(cloud, "persist")


def test_a_box_aws_stopped_is_not_launched_twice(cloud, persistent_box) -> None:
    assert persistent_box.returncode == 0, persistent_box.stdout[-4000:]
    [instance] = resources(cloud, "keep")["instances"]
    assert shutdown_behaviour(cloud, instance) == "stop"  # a persistent box stops
    localcloud(cloud["admin_env"], "interrupt", "spotbox-keep", "--action", "stop",
               "--notice-seconds", "0")
    again = playbook(cloud, "launch.yml", "--skip-tags", "provision", name="keep")
    assert again.returncode != 0
    assert "was stopped by AWS (spot interruption" in text(again), text(again)[-2000:]
    [still] = resources(cloud, "keep")["instances"]
    assert (still["InstanceId"], still["State"]["Name"]) == (instance["InstanceId"], "stopped")


def test_a_box_you_stopped_is_started_again(cloud, persistent_box) -> None:
    localcloud(cloud["admin_env"], "restart", "spotbox-keep")  # capacity is back
    [instance] = resources(cloud, "keep")["instances"]
    client(cloud).stop_instances(InstanceIds=[instance["InstanceId"]])  # you stop it
    again = playbook(cloud, "launch.yml", "--skip-tags", "provision", name="keep")
    assert again.returncode == 0, again.stdout[-4000:]
    assert f"started the stopped box keep ({instance['InstanceId']})" in text(again)
    [still] = resources(cloud, "keep")["instances"]
    assert (still["InstanceId"], still["State"]["Name"]) == (instance["InstanceId"], "running")


def test_terminate_cancels_a_disabled_request_and_nothing_comes_back(cloud,
                                                                      persistent_box) -> None:
    [instance] = resources(cloud, "keep")["instances"]
    if instance["State"]["Name"] != "stopped":  # stopped: its request is disabled
        client(cloud).stop_instances(InstanceIds=[instance["InstanceId"]])
    done = playbook(cloud, "playbooks/terminate.yml", name="keep")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "(disabled)" in text(done)
    time.sleep(3)  # a re-opened persistent request would launch again by now
    left = resources(cloud, "keep")
    assert left["instances"] == [] and left["requests"] == []


# --- an account without a default VPC (last: it removes the default VPC) -------------------

def test_no_default_vpc_is_said_and_a_subnet_of_yours_works(cloud, first_launch) -> None:
    localcloud(cloud["admin_env"], "account", "--no-default-vpc")
    refused = playbook(cloud, "launch.yml", "--skip-tags", "provision", name="novpc")
    assert refused.returncode != 0
    assert "has no default VPC in us-east-2" in text(refused)
    assert "spot_instance_subnet_id" in text(refused)
    nothing_exists(cloud, "novpc")
    ec2 = client(cloud)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24",
                               AvailabilityZone="us-east-2b")["Subnet"]["SubnetId"]
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    launched = playbook(cloud, "launch.yml", "--skip-tags", "provision",
                        "-e", f"spot_instance_subnet_id={subnet}", name="novpc")
    assert launched.returncode == 0, launched.stdout[-4000:]
    [instance] = resources(cloud, "novpc")["instances"]
    assert (instance["SubnetId"], instance["Placement"]["AvailabilityZone"]) == (
        subnet, "us-east-2b")


def test_missing_credentials_say_how_to_configure(cloud) -> None:
    env = {k: v for k, v in cloud["env"].items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")}
    env.update(AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_CONFIG_FILE="/dev/null")
    result = playbook(cloud, "launch.yml", name="nocreds", env=env)
    assert result.returncode != 0
    assert "no AWS credentials found. Configure them with `aws configure`" in text(result)
    nothing_exists(cloud, "nocreds")
