"""The local cloud on real parts: nspawn boxes, loop devices, a moto server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, leftovers, needs_local_cloud

from localcloud import procs

pytestmark = needs_local_cloud


def localcloud(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state)}
    return subprocess.run([sys.executable, "-m", "localcloud", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=check)


def ssh(record: dict, command: str) -> str:
    from localcloud.boxes import ssh_argv

    return subprocess.run(ssh_argv(record, command), capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture
def state(tmp_path: Path):
    yield tmp_path
    localcloud(tmp_path, "cleanup", check=False)
    assert leftovers(str(tmp_path)) == []


def test_rootfs_is_cached_and_reused(state: Path) -> None:
    first = localcloud(state, "rootfs").stdout.strip().splitlines()[-1]
    started = time.monotonic()
    again = localcloud(state, "rootfs").stdout.strip().splitlines()[-1]
    assert first == again
    assert time.monotonic() - started < 5, "a cached root filesystem must not be rebuilt"
    recipe = json.loads((Path(again) / ".spotbox-recipe.json").read_text())
    assert recipe["login_user"] == "ubuntu"


def test_two_boxes_at_once_with_a_volume(state: Path) -> None:
    localcloud(state, "rootfs")
    volume = json.loads(localcloud(state, "volume-create", "data", "--size", "64M").stdout)
    assert volume["loop"].startswith("/dev/loop")
    first = json.loads(
        localcloud(state, "box-create", "lc-one", "--attach", "data:/dev/xvdf").stdout
    )
    second = json.loads(localcloud(state, "box-create", "lc-two").stdout)
    for box in (first, second):
        assert box["boot_seconds"] < 10, f"{box['name']} took {box['boot_seconds']}s to answer SSH"
    assert first["port"] != second["port"]
    assert ssh(first, "hostname") == "lc-one"
    assert ssh(second, "hostname") == "lc-two"
    assert ssh(first, "systemctl is-system-running") == "running"
    assert ssh(first, "sudo -n id -un") == "root"
    assert ssh(first, "sudo -n blockdev --getsize64 /dev/xvdf") == str(64 * 1024 * 1024)

    localcloud(state, "box-destroy", "lc-one")
    assert leftovers(f"{state}/boxes/lc-one") == []
    assert not (state / "boxes" / "lc-one").exists()
    assert ssh(second, "hostname") == "lc-two", "destroying one box must not touch another"


def test_moto_server_answers_and_stops(state: Path) -> None:
    exports = localcloud(state, "moto-start", "--env").stdout
    assert "AWS_ENDPOINT_URL=http://127.0.0.1:" in exports
    record = json.loads(localcloud(state, "status").stdout)["moto"]["default"]
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{record['port']}/moto-api/", timeout=5) as r:
        assert r.status == 200
    assert procs.alive(record["pid"], record["pid_start"])  # the record names it rightly
    localcloud(state, "moto-stop")
    # Both of its processes are gone (procs.alive knows a reused pid by its start time; a
    # pid's digits as a leftovers() marker also matched other runs' mounts and processes).
    for pid, start in ((record["pid"], record["pid_start"]),
                       (record["layer_pid"], record["layer_pid_start"])):
        assert not procs.alive(pid, start), f"process {pid} still runs after moto-stop"


def _as_from_a_terminal() -> None:
    # A test run started in the background (`cmd &` without job control)
    # inherits SIGINT ignored, and so would the session's command: Ctrl-C
    # comes from a terminal, where it is not.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _session(state_marker_dir: Path, script: str) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": str(state_marker_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "localcloud", "session", "--", "bash", "-c", script],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=_as_from_a_terminal,
    )


def _ended(proc: subprocess.Popen, timeout: float) -> str:
    """The session's output once it ended; ended by SIGTERM (and failed) if it did not."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.terminate()
        output = proc.communicate(timeout=120)[0]
        pytest.fail(f"the session did not end within {timeout:.0f} s:\n{output}")


START_EVERYTHING = (
    f"{sys.executable} -m localcloud moto-start >/dev/null && "
    f"{sys.executable} -m localcloud volume-create v --size 32M >/dev/null && "
    f"{sys.executable} -m localcloud box-create lc-session --attach v >/dev/null && "
    "echo READY"
)


def test_session_ends_everything_after_a_failing_command(tmp_path: Path) -> None:
    proc = _session(tmp_path, START_EVERYTHING + " && exit 3")
    output = _ended(proc, 120)
    assert "READY" in output, output
    assert proc.returncode == 3, "the session must pass the command's failure on"
    assert re.search(r"session cleanup ended .*\bbox lc-session\b", output), output
    assert leftovers(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == [], "the session's state dir must be removed"


def test_session_ends_everything_after_ctrl_c(tmp_path: Path) -> None:
    proc = _session(tmp_path, START_EVERYTHING + " && sleep 300")
    assert proc.stdout is not None
    for line in proc.stdout:
        if "READY" in line:
            break
    proc.send_signal(signal.SIGINT)
    output = _ended(proc, 60)
    assert proc.returncode != 0
    assert re.search(r"session cleanup ended .*\bbox lc-session\b", output), output
    assert leftovers(str(tmp_path)) == []


# --- EC2 instances are boxes (the AWS layer boots one per instance) -----------------------

@pytest.fixture(scope="module")
def ec2_cloud(tmp_path_factory):
    """A local cloud (moto + layer) whose instances are boxes; an admin EC2 client."""
    import boto3

    state = tmp_path_factory.mktemp("instances-cloud")
    try:
        localcloud(state, "moto-start")
        record = json.loads(localcloud(state, "status").stdout)["moto"]["default"]
        ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{record['port']}",
                           region_name="us-east-2", aws_access_key_id="localcloud",
                           aws_secret_access_key="localcloud")
        yield {"state": state, "ec2": ec2}
    finally:
        localcloud(state, "cleanup", check=False)
        assert leftovers(str(state)) == []


DLAMI = "ami-0dl22b0000000002"


def launch(cloud: dict, name: str, **extra) -> dict:
    return cloud["ec2"].run_instances(
        ImageId=DLAMI, MinCount=1, MaxCount=1, InstanceType="t3.micro",
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "Name", "Value": name}]}], **extra)["Instances"][0]


def address(instance: dict) -> str:
    return instance.get("PublicIpAddress") or instance["PrivateIpAddress"]


def via_proxy(cloud: dict, instance: dict, command: str, timeout: float = 90) -> str:
    """command on the instance's box, reached as Ansible does: ssh to the instance's
    address through `localcloud ssh-proxy`; retried until the box answers."""
    state = cloud["state"]
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", f"ProxyCommand={sys.executable} -m localcloud ssh-proxy %h %p",
            "-i", str(state / "id_ed25519"), f"ubuntu@{address(instance)}", command]
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state), "PYTHONPATH": str(ROOT)}
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return result.stdout.strip()
        if time.monotonic() > deadline:
            pytest.fail(f"no SSH to {instance['InstanceId']}: {result.stderr}")
        time.sleep(0.3)


def box_record(cloud: dict, instance_id: str) -> dict | None:
    boxes = json.loads(localcloud(cloud["state"], "status").stdout).get("box", {})
    return next((b for b in boxes.values() if b.get("instance_id") == instance_id), None)


def until(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.3)
    return value


def state_of(cloud: dict, instance_id: str) -> str:
    return cloud["ec2"].describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"][0]["State"]["Name"]


@pytest.fixture(scope="module")
def first_instance(ec2_cloud):
    localcloud(ec2_cloud["state"], "image", "dlami")  # built once, before the clock starts
    from localcloud import boxes
    from localcloud.registry import Registry

    boxes.ssh_key(Registry(ec2_cloud["state"]))  # the harness's key, before the clock starts
    started = time.monotonic()
    instance = launch(ec2_cloud, "spotbox-lc")
    hostname = via_proxy(ec2_cloud, instance, "hostname")
    seconds = time.monotonic() - started
    print(f"\nRunInstances to SSH answering through ssh-proxy: {seconds:.1f} s")
    return {"instance": instance, "hostname": hostname, "seconds": seconds}


def test_run_instances_boots_a_box_that_answers_ssh_at_the_instances_address(
        ec2_cloud, first_instance) -> None:
    instance = first_instance["instance"]
    assert first_instance["hostname"] == "spotbox-lc"
    assert first_instance["seconds"] < 30, "a box must answer SSH within 30 s of RunInstances"
    box = box_record(ec2_cloud, instance["InstanceId"])
    assert box["name"] == f"spotbox-lc-{instance['InstanceId']}"
    assert via_proxy(ec2_cloud, instance, "systemctl is-system-running") == "running"


def test_the_dlami_stand_in_carries_the_cuda_toolkits_and_the_cpu_wheel(
        ec2_cloud, first_instance) -> None:
    instance = first_instance["instance"]
    assert via_proxy(ec2_cloud, instance, "readlink -f /usr/local/cuda") == "/usr/local/cuda-11.8"
    for version in ("11.8", "12.4", "13.5"):
        out = via_proxy(ec2_cloud, instance, f"/usr/local/cuda-{version}/bin/ptxas --version")
        assert f"release {version}" in out
    wheel = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    if wheel.exists():
        assert via_proxy(ec2_cloud, instance, "ls /opt/spotbox/wheels") == wheel.name


def test_the_instances_metadata_service_knows_it(ec2_cloud, first_instance) -> None:
    import urllib.request

    instance = first_instance["instance"]
    endpoint = box_record(ec2_cloud, instance["InstanceId"])["imds_endpoint"]
    assert endpoint.startswith("http://127.0.0.1:")
    token = urllib.request.urlopen(urllib.request.Request(
        f"{endpoint}/latest/api/token", method="PUT",
        headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}), timeout=5).read().decode()
    for path, value in (("instance-id", instance["InstanceId"]),
                        ("instance-life-cycle", "on-demand")):
        answer = urllib.request.urlopen(urllib.request.Request(
            f"{endpoint}/latest/meta-data/{path}",
            headers={"X-aws-ec2-metadata-token": token}), timeout=5).read().decode()
        assert answer == value


def test_an_attached_volume_appears_and_a_detached_one_goes_without_a_reboot(
        ec2_cloud, first_instance) -> None:
    ec2, instance = ec2_cloud["ec2"], first_instance["instance"]
    boot = via_proxy(ec2_cloud, instance, "cat /proc/sys/kernel/random/boot_id; systemctl "
                     "show -P ExecMainStartTimestampMonotonic systemd-journald")
    volume_id = ec2.create_volume(AvailabilityZone=instance["Placement"]["AvailabilityZone"],
                                  Size=1)["VolumeId"]
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance["InstanceId"], Device="/dev/sdf")
    by_id = f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"
    check = (f"for i in $(seq 50); do [ -b {by_id} ] && [ -b /dev/sdf ] && [ -b /dev/xvdf ] "
             f"&& break; sleep 0.1; done; sudo blockdev --getsize64 {by_id} /dev/sdf")
    assert via_proxy(ec2_cloud, instance, check).split() == [str(1024 ** 3)] * 2
    assert via_proxy(ec2_cloud, instance, "cat /proc/sys/kernel/random/boot_id; systemctl "
                     "show -P ExecMainStartTimestampMonotonic systemd-journald") == boot
    ec2.detach_volume(VolumeId=volume_id, InstanceId=instance["InstanceId"])
    gone = (f"for i in $(seq 50); do [ -e {by_id} ] || [ -e /dev/sdf ] || break; sleep 0.1; "
            f"done; ls {by_id} /dev/sdf /dev/xvdf 2>/dev/null | wc -l")
    assert via_proxy(ec2_cloud, instance, gone) == "0"
    ec2.delete_volume(VolumeId=volume_id)
    status = json.loads(localcloud(ec2_cloud["state"], "status").stdout)
    assert volume_id not in status["volume"]
    assert not (ec2_cloud["state"] / "volumes" / f"{volume_id}.img").exists()


def test_stop_and_start_keep_the_root_disk(ec2_cloud, first_instance) -> None:
    ec2, instance = ec2_cloud["ec2"], first_instance["instance"]
    via_proxy(ec2_cloud, instance, "echo kept | sudo tee /var/lib/marker")
    ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    until(lambda: box_record(ec2_cloud, instance["InstanceId"])["state"] == "stopped",
          "the box powered off")
    assert not subprocess.run(["pgrep", "-f", f"-M spotbox-lc-{instance['InstanceId']}"],
                              capture_output=True).stdout, "no nspawn left for a stopped box"
    ec2.start_instances(InstanceIds=[instance["InstanceId"]])
    instance = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0][
        "Instances"][0]  # a started instance may have a new public address, as on EC2
    assert via_proxy(ec2_cloud, instance, "cat /var/lib/marker") == "kept"


def test_terminate_removes_the_box_and_keeps_the_volume(ec2_cloud) -> None:
    ec2 = ec2_cloud["ec2"]
    instance = launch(ec2_cloud, "spotbox-gone")
    volume_id = ec2.create_volume(AvailabilityZone=instance["Placement"]["AvailabilityZone"],
                                  Size=1)["VolumeId"]
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance["InstanceId"], Device="/dev/sdf")
    via_proxy(ec2_cloud, instance, "for i in $(seq 50); do [ -b /dev/sdf ] && break; "
              "sleep 0.1; done; sudo mkfs.ext4 -q -L keep /dev/sdf")
    root = Path(box_record(ec2_cloud, instance["InstanceId"])["root"])
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    until(lambda: box_record(ec2_cloud, instance["InstanceId"]) is None, "the box destroyed")
    assert not root.exists() and leftovers(str(root)) == []
    [volume] = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert volume["State"] == "available"
    kept = json.loads(localcloud(ec2_cloud["state"], "status").stdout)["volume"][volume_id]
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", kept["loop"]],
                           capture_output=True, text=True).stdout.strip()
    assert label == "keep", "the volume's data outlives the instance"


@pytest.mark.parametrize("behaviour", ["stop", "terminate"])
def test_a_box_that_powers_itself_off_gets_its_shutdown_behaviour(ec2_cloud, behaviour) -> None:
    instance = launch(ec2_cloud, f"spotbox-off-{behaviour}",
                      InstanceInitiatedShutdownBehavior=behaviour)
    via_proxy(ec2_cloud, instance, "true")
    via_proxy(ec2_cloud, instance, "sudo systemd-run --on-active=1 systemctl poweroff")
    end = {"stop": "stopped", "terminate": "terminated"}[behaviour]
    # systemd inside may wait for a unit's stop timeout (90 s by default) before it exits.
    until(lambda: state_of(ec2_cloud, instance["InstanceId"]) == end, f"the instance {end}",
          timeout=150)
    if behaviour == "terminate":
        until(lambda: box_record(ec2_cloud, instance["InstanceId"]) is None, "its box gone")
    else:
        assert box_record(ec2_cloud, instance["InstanceId"])["state"] == "stopped"


def test_interrupt_stop_and_restart_act_on_the_box(ec2_cloud) -> None:
    state = ec2_cloud["state"]
    localcloud(state, "quota", "set", "L-34B43A08", "64")
    instance = launch(ec2_cloud, "spotbox-spot", InstanceMarketOptions={
        "MarketType": "spot", "SpotOptions": {"SpotInstanceType": "persistent",
                                              "InstanceInterruptionBehavior": "stop"}})
    via_proxy(ec2_cloud, instance, "echo mine | sudo tee /var/lib/marker")
    assert box_record(ec2_cloud, instance["InstanceId"])["life_cycle"] == "spot"
    localcloud(state, "interrupt", "spotbox-spot", "--action", "stop", "--notice-seconds", "1")
    until(lambda: box_record(ec2_cloud, instance["InstanceId"])["state"] == "stopped",
          "the interrupted box powered off")
    localcloud(state, "restart", "spotbox-spot")
    # A restarted instance may have a new public address, as on EC2.
    instance = ec2_cloud["ec2"].describe_instances(InstanceIds=[instance["InstanceId"]])[
        "Reservations"][0]["Instances"][0]
    assert via_proxy(ec2_cloud, instance, "cat /var/lib/marker") == "mine"
    out = localcloud(state, "ssh", "spotbox-spot", "readlink", "-f", "/usr/local/cuda").stdout
    assert out.strip() == "/usr/local/cuda-11.8", "ssh NAME passes every argument after NAME"
