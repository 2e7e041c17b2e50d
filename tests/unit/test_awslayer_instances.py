"""Instances are boxes: what the layer has the local cloud do for each EC2 call (real moto and
the real layer; the boxes, loop volumes and IMDS stand-ins are light fakes that record what
was asked, a `sleep` process standing in for a box's systemd-nspawn)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localcloud import boxes, imds, instances, procs, volumes
from localcloud.awslayer.boxes import instances_for
from localcloud.awslayer.testing import DLAMI, local_aws, run_dlami, spot_options
from localcloud.registry import Registry

NAME = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "spotbox-course"}]}]


class Fakes:
    """What the layer asked of boxes, volumes, IMDS stand-ins and images."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.calls: list[tuple] = []

    def prepare(self, registry, name, image, **fields):
        self.calls.append(("prepare", name, str(image)))
        root = registry.root / "boxes" / name
        (root / "etc").mkdir(parents=True, exist_ok=True)
        fields.pop("overlay", None)
        fields.pop("hostname", None)
        record = {"name": name, "root": str(root), "pid": None, "pid_start": None,
                  "port": 1, "volumes": [], "state": "stopped", **fields}
        registry.put("box", name, record)
        return record

    def power_on(self, registry, name, timeout=60.0, wait=True, started=None):
        self.calls.append(("power_on", name))
        pid = procs.start_detached(["sleep", "600"], registry.root / f"{name}.log")
        registry.update("box", name, pid=pid, pid_start=procs.proc_start_time(pid),
                        state="booting" if not wait else "running")
        return registry.get("box", name)

    def imds_start(self, registry, name, life_cycle="spot", instance_id=None, port=None, **_):
        self.calls.append(("imds", name, life_cycle, instance_id, port))
        record = {"name": name, "endpoint": f"http://127.0.0.1:{port}", "pid": None,
                  "state": str(registry.root / f"imds-{name}.json")}
        registry.put(imds.KIND, name, record)
        return record

    def volume_create(self, registry, name, size, volume_id=None):
        self.calls.append(("volume", name, size))
        record = {"name": name, "file": str(registry.root / f"{name}.img"),
                  "volume_id": volume_id, "loop": "/dev/loop99"}
        registry.put("volume", name, record)
        return record

    def volume_destroy(self, registry, name):
        self.calls.append(("volume-destroy", name))
        registry.drop("volume", name)

    def named(self, kind: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == kind]


@pytest.fixture(scope="module")
def cloud():
    with local_aws() as aws, pytest.MonkeyPatch.context() as patch:
        fakes = Fakes(Registry(aws.state))
        patch.setattr(boxes, "prepare", fakes.prepare)
        patch.setattr(boxes, "power_on", fakes.power_on)
        patch.setattr(imds, "start", fakes.imds_start)
        patch.setattr(imds, "write_state", lambda *a, **k: None)
        patch.setattr(volumes, "create", fakes.volume_create)
        patch.setattr(volumes, "destroy", fakes.volume_destroy)
        patch.setattr(instances.images, "for_ami",
                      lambda image_id, log=None: Path(f"/images/{image_id}"))
        aws.layer.instances = instances_for(aws.layer, aws.port, interval=0.2, wait_ready=False)
        aws.layer.instances.start()
        try:
            yield aws, fakes
        finally:
            aws.layer.instances.stop()
            for box in fakes.registry.snapshot().get("box", {}).values():
                if box.get("pid"):
                    procs.stop(box["pid"], box.get("pid_start"))


@pytest.fixture
def ec2(cloud):
    aws, fakes = cloud
    aws.reset()
    aws.set(quotas={"L-3819A6DF": 64}, spot_relaunch_delay=0.2)
    wait_for(lambda: not fakes.registry.snapshot().get("box"), "boxes of the last test gone")
    fakes.calls.clear()
    return aws.client("ec2")


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def box_of(cloud, instance_id: str) -> dict | None:
    return boxes.by_instance(cloud[1].registry, instance_id)


def state_of(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0][
        "State"]["Name"]


def running_box(cloud, instance_id: str) -> dict:
    return wait_for(lambda: (b := box_of(cloud, instance_id)) and boxes.running(b)
                    and b["state"] == "running" and b,
                    f"a running box for {instance_id}")


def test_run_instances_boots_a_box_per_instance_named_and_keyed_by_id(cloud, ec2) -> None:
    launched = ec2.run_instances(ImageId=DLAMI, MinCount=2, MaxCount=2, InstanceType="t3.micro",
                                 TagSpecifications=NAME)["Instances"]
    for instance in launched:
        box = running_box(cloud, instance["InstanceId"])
        assert box["name"] == f"spotbox-course-{instance['InstanceId']}"
        assert box["image_id"] == DLAMI and box["life_cycle"] == "on-demand"
        port = int(box["imds_endpoint"].rsplit(":", 1)[1])
        assert ("imds", box["name"], "on-demand", instance["InstanceId"], port) in cloud[1].calls
    assert [c[2] for c in cloud[1].named("prepare")] == [f"/images/{DLAMI}"] * 2


def test_a_spot_instance_gets_a_spot_metadata_service(cloud, ec2) -> None:
    instance = run_dlami(ec2, InstanceMarketOptions=spot_options())
    box = running_box(cloud, instance["InstanceId"])
    assert box["life_cycle"] == "spot"
    assert [c[2] for c in cloud[1].named("imds") if c[1] == box["name"]] == ["spot"]


def test_stop_keeps_the_box_and_start_boots_it_again(cloud, ec2) -> None:
    instance_id = run_dlami(ec2, InstanceType="t3.micro")["InstanceId"]
    first = running_box(cloud, instance_id)
    ec2.stop_instances(InstanceIds=[instance_id])
    wait_for(lambda: (b := box_of(cloud, instance_id)) and b["state"] == "stopped"
             and not boxes.running(b), "the box powered off")
    assert not procs.alive(first["pid"], first["pid_start"])
    ec2.start_instances(InstanceIds=[instance_id])
    again = running_box(cloud, instance_id)
    assert again["name"] == first["name"] and again["pid"] != first["pid"]
    assert len(cloud[1].named("prepare")) == 1, "a started instance keeps its root"


def test_terminate_destroys_the_box_and_its_metadata_service(cloud, ec2) -> None:
    instance_id = run_dlami(ec2, InstanceType="t3.micro")["InstanceId"]
    box = running_box(cloud, instance_id)
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_for(lambda: box_of(cloud, instance_id) is None, "the box destroyed")
    assert not procs.alive(box["pid"], box["pid_start"])
    assert cloud[1].registry.get(imds.KIND, box["name"]) is None


def test_volumes_are_loop_volumes_attached_and_detached_hot(cloud, ec2) -> None:
    instance = run_dlami(ec2, InstanceType="t3.micro")
    box = running_box(cloud, instance["InstanceId"])
    volume_id = ec2.create_volume(AvailabilityZone=instance["Placement"]["AvailabilityZone"],
                                  Size=3)["VolumeId"]
    assert ("volume", volume_id, "3G") in cloud[1].calls
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance["InstanceId"], Device="/dev/sdf")
    attached = box_of(cloud, instance["InstanceId"])["volumes"]
    assert attached == [{"volume": volume_id, "device": "/dev/sdf", "loop": "/dev/loop99",
                         "volume_id": volume_id}]
    listed = (Path(box["root"]) / "etc/localcloud/volumes").read_text()
    assert listed == f"loop99 /dev/sdf {volume_id.replace('-', '')}\n"
    assert box_of(cloud, instance["InstanceId"])["pid"] == box["pid"], "no reboot"
    ec2.detach_volume(VolumeId=volume_id, InstanceId=instance["InstanceId"])
    assert box_of(cloud, instance["InstanceId"])["volumes"] == []
    assert (Path(box["root"]) / "etc/localcloud/volumes").read_text() == ""
    ec2.delete_volume(VolumeId=volume_id)
    assert ("volume-destroy", volume_id) in cloud[1].calls


@pytest.mark.parametrize(("behaviour", "end"), [(None, "stopped"), ("stop", "stopped"),
                                                ("terminate", "terminated")])
def test_a_box_that_powers_itself_off_gets_its_shutdown_behaviour(cloud, ec2, behaviour,
                                                                  end) -> None:
    extra = {"InstanceInitiatedShutdownBehavior": behaviour} if behaviour else {}
    instance_id = run_dlami(ec2, InstanceType="t3.micro", **extra)["InstanceId"]
    box = running_box(cloud, instance_id)
    procs.stop(box["pid"], box["pid_start"])  # `systemctl poweroff` inside: nspawn ends
    wait_for(lambda: state_of(ec2, instance_id) == end, f"the instance {end}")


def test_the_behaviour_set_later_or_in_a_template_is_the_one_applied(cloud, ec2) -> None:
    ec2.create_launch_template(LaunchTemplateName="ends", LaunchTemplateData={
        "ImageId": DLAMI, "InstanceType": "t3.micro",
        "InstanceInitiatedShutdownBehavior": "terminate"})
    from_template = ec2.run_instances(LaunchTemplate={"LaunchTemplateName": "ends"},
                                      MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    attribute = ec2.describe_instance_attribute(
        InstanceId=from_template, Attribute="instanceInitiatedShutdownBehavior")
    assert attribute["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    later = run_dlami(ec2, InstanceType="t3.micro")["InstanceId"]
    ec2.modify_instance_attribute(InstanceId=later,
                                  InstanceInitiatedShutdownBehavior={"Value": "terminate"})
    for instance_id in (from_template, later):
        box = running_box(cloud, instance_id)
        procs.stop(box["pid"], box["pid_start"])
        wait_for(lambda i=instance_id: state_of(ec2, i) == "terminated", "terminated")


def test_a_persistent_spot_box_that_powers_off_stops_and_its_request_is_disabled(cloud,
                                                                              ec2) -> None:
    instance = run_dlami(ec2, InstanceMarketOptions=spot_options("persistent", "stop"))
    box = running_box(cloud, instance["InstanceId"])
    procs.stop(box["pid"], box["pid_start"])
    wait_for(lambda: state_of(ec2, instance["InstanceId"]) == "stopped", "stopped")
    [request] = ec2.describe_spot_instance_requests(SpotInstanceRequestIds=[
        instance["SpotInstanceRequestId"]])["SpotInstanceRequests"]
    assert (request["State"], request["Status"]["Code"]) == ("disabled",
                                                             "instance-stopped-by-user")


def test_an_interruption_and_a_relaunch_reach_the_boxes_without_a_call(cloud, ec2) -> None:
    """What EC2 does by itself (the layer's interrupt API, a persistent request's new
    instance) goes to moto directly: the watcher sees it."""
    aws, _ = cloud
    instance = run_dlami(ec2, InstanceMarketOptions=spot_options("persistent", "stop"))
    box = running_box(cloud, instance["InstanceId"])
    aws.layer.handle("POST", "/localcloud-awslayer/interrupt", {}, (
        f'{{"instance_id": "{instance["InstanceId"]}", "action": "stop"}}').encode())
    wait_for(lambda: not boxes.running(box_of(cloud, instance["InstanceId"])), "powered off")
    ec2.start_instances(InstanceIds=[instance["InstanceId"]])
    running_box(cloud, instance["InstanceId"])
    # Terminated, the persistent request is fulfilled again by the layer, on moto.
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    new_id = wait_for(lambda: (ec2.describe_spot_instance_requests(SpotInstanceRequestIds=[
        instance["SpotInstanceRequestId"]])["SpotInstanceRequests"][0].get("InstanceId")
        not in (None, instance["InstanceId"])) and ec2.describe_spot_instance_requests(
        SpotInstanceRequestIds=[instance["SpotInstanceRequestId"]])["SpotInstanceRequests"][0][
        "InstanceId"], "the request fulfilled again")
    assert running_box(cloud, new_id)["life_cycle"] == "spot"
    wait_for(lambda: box_of(cloud, instance["InstanceId"]) is None, "the old box gone")
    assert box["name"] != box_of(cloud, new_id)["name"]


def test_box_names_are_recognisable_and_safe() -> None:
    assert instances.box_name("i-0abc", {"Name": "spotbox-course"}) == "spotbox-course-i-0abc"
    assert instances.box_name("i-0abc", {}) == "i-0abc"
    assert instances.box_name("i-0abc", {"Name": "a b/c"}) == "a-b-c-i-0abc"


def test_a_box_is_found_by_name_instance_id_or_name_tag(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.put("box", "spotbox-x-i-1", {"name": "spotbox-x-i-1", "instance_id": "i-1"})
    registry.put("box", "molecule", {"name": "molecule"})
    for key in ("spotbox-x-i-1", "i-1", "spotbox-x"):
        assert instances.record_of(registry, key)["instance_id"] == "i-1"
    assert instances.record_of(registry, "molecule")["name"] == "molecule"
    registry.put("box", "spotbox-x-i-2", {"name": "spotbox-x-i-2", "instance_id": "i-2"})
    assert instances.record_of(registry, "spotbox-x") is None, "two boxes: ambiguous"

