"""Several boxes from one inventory (a class, a team) on the strict local cloud, as the
IAM user holding exactly docs/iam-policy.json: one launch.yml run launches and
provisions the boxes of spot_instance_boxes in parallel, each with its own settings,
volume and local port; a box whose type has no capacity fails alone and the summary
names it; a re-run changes nothing; terminate.yml -e spotbox_box=NAME ends that box
and no other.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, needs_local_cloud
from test_launch import REGION, client, data_volume, localcloud, recap, text, user_cloud

from localcloud.procs import free_port

pytestmark = needs_local_cloud
UP = ("ana", "ben", "cal")  # the boxes that come up
NO_CAPACITY = "dan"  # his type has no capacity in any zone
BOXES = [{"name": "ana"}, {"name": "ben"},
         {"name": "cal", "data_volume_size": 20},  # a setting of its own
         {"name": NO_CAPACITY, "types": ["g5.xlarge"]}]
BOXES_NAMES = [box["name"] for box in BOXES]


def play(cloud: dict, *args: str) -> subprocess.CompletedProcess:
    """ansible-playbook with the class's inventory folder (its settings in group_vars)."""
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), "-i",
            str(cloud["state"] / "inventory"), *args]
    return subprocess.run(argv, cwd=ROOT, env=cloud["env"], capture_output=True, text=True,
                          check=False)


def instances(cloud: dict, name: str, states=("pending", "running")) -> list[dict]:
    return [i for r in client(cloud).describe_instances(Filters=[
        {"Name": "tag:spotbox:box", "Values": [name]},
        {"Name": "instance-state-name", "Values": list(states)}])["Reservations"]
        for i in r["Instances"]]


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with user_cloud(tmp_path_factory, "many-cloud") as made:
        state = made["state"]
        for zone in "abc":
            localcloud(made["admin_env"], "capacity", "off", "g5.xlarge", f"{REGION}{zone}")
        (state / "inventory" / "group_vars").mkdir()
        settings = {
            "spot_instance_boxes": BOXES,
            "spot_instance_ssh_cidr": "127.0.0.1/32",
            "spot_instance_inventory_file":
                f"{state}/inventory/spotbox-{{{{ spot_instance_name }}}}.aws_ec2.yml",
            "spot_instance_known_hosts_file": f"{state}/known_hosts",
            "spot_instance_ssh_timeout": 180,  # the boxes boot while other lanes run
            "access_ssh_config_file": f"{state}/ssh_config",
            "access_local_port": free_port(),
            "conda_backend": "uv", "conda_framework": "none"}
        (state / "inventory" / "group_vars" / "all.yml").write_text(yaml.safe_dump(settings))
        # The boxes share this machine's network: each Jupyter its own port (on AWS each
        # box has its own address). A box's own values go in its host vars.
        (state / "inventory" / "host_vars").mkdir()
        for name in UP:
            (state / "inventory" / "host_vars" / f"spotbox-{name}.yml").write_text(
                f"jupyter_port: {free_port()}\n")
        yield made


@pytest.fixture(scope="module")
def launched(cloud):
    started = time.monotonic()
    result = play(cloud, "launch.yml")
    return {"result": result, "seconds": time.monotonic() - started}


def test_the_boxes_come_up_and_the_one_without_capacity_is_named(cloud, launched) -> None:
    result = launched["result"]
    out = text(result)
    # The failed box makes the run fail (exit 2), after the others were provisioned.
    assert result.returncode == 2, result.stdout[-5000:]
    assert f"NOT LAUNCHED {NO_CAPACITY}:" in out, result.stdout[-5000:]
    assert "no spot capacity" in out.split(f"NOT LAUNCHED {NO_CAPACITY}:")[1][:400], out[-3000:]
    assert instances(cloud, NO_CAPACITY) == []
    for name in UP:
        assert recap(result.stdout, f"spotbox-{name}")["failed"] == 0
        [instance] = instances(cloud, name)
        assert instance["InstanceType"] == "g4dn.xlarge"
        assert f"provisioning spotbox-{name}" in out
    # Rescued, not failed, in the launch play; the run fails at its end, after the list.
    assert recap(result.stdout, f"aws-{NO_CAPACITY}")["rescued"] == 1
    assert "1 of 4 box(es) did not launch: dan" in out, out[-3000:]
    print(f"launch and provision of {len(UP)} boxes (and one refused): "
          f"{launched['seconds']:.0f} s")


def test_each_box_has_its_own_volume_in_its_zone_and_its_own_settings(cloud, launched) -> None:
    volumes = {name: data_volume(cloud, name) for name in UP}
    assert len({v["VolumeId"] for v in volumes.values()}) == len(UP)
    assert {name: v["Size"] for name, v in volumes.items()} == {"ana": 100, "ben": 100, "cal": 20}
    for name, volume in volumes.items():
        [instance] = instances(cloud, name)
        assert volume["Attachments"][0]["InstanceId"] == instance["InstanceId"]
        assert volume["AvailabilityZone"] == instance["Placement"]["AvailabilityZone"]


def access_rows(output: str) -> dict[str, dict]:
    """The access table's rows: box, address, local port, tunnel; the URL below."""
    found = {}
    for match in re.finditer(r"^\s*(spotbox-[a-z]+)\s+(\S+)\s+(\d+)\s+(ssh .*?)\n\s+(http://\S+)",
                             output, re.MULTILINE):
        name, address, port, tunnel, url = match.groups()
        found[name] = {"address": address, "port": int(port), "tunnel": tunnel, "url": url}
    return found


def test_one_access_table_gives_each_box_its_port_and_a_working_ssh_entry(cloud, launched) -> None:
    rows = access_rows(launched["result"].stdout)
    assert set(rows) == {f"spotbox-{name}" for name in UP}, launched["result"].stdout[-4000:]
    ports = [row["port"] for row in rows.values()]
    assert len(set(ports)) == len(UP)
    config = cloud["state"] / "ssh_config"
    for name, row in rows.items():
        assert f"-L {row['port']}:127.0.0.1:" in row["tunnel"]
        assert row["url"].startswith(f"http://127.0.0.1:{row['port']}/lab?token=")
        [instance] = instances(cloud, name.removeprefix("spotbox-"))
        assert row["address"] == instance["PublicIpAddress"]
        # `ssh -N spotbox-NAME` with the written entries is the printed tunnel.
        resolved = subprocess.run(["ssh", "-G", "-F", str(config), name], capture_output=True,
                                  text=True, check=True).stdout.lower()
        assert f"hostname {row['address']}" in resolved
        remote = re.search(r"127\.0\.0\.1:(\d+)", row["tunnel"]).group(1)
        assert f"localforward {row['port']} [127.0.0.1]:{remote}" in resolved, resolved


@pytest.fixture(scope="module")
def rerun(cloud, launched):
    # ana's tunnel is open during the re-run (its port in use here): ana keeps the port.
    port = access_rows(launched["result"].stdout)["spotbox-ana"]["port"]
    with socket.create_server(("127.0.0.1", port)):
        return play(cloud, "launch.yml")


def test_a_rerun_changes_nothing_anywhere(cloud, launched, rerun) -> None:
    assert rerun.returncode == 2, rerun.stdout[-4000:]  # the box without capacity again
    for host in [f"spotbox-{name}" for name in UP] + [f"aws-{name}" for name in BOXES_NAMES]:
        assert recap(rerun.stdout, host)["changed"] == 0, (host, rerun.stdout[-6000:])
    assert access_rows(rerun.stdout).keys() == access_rows(launched["result"].stdout).keys()
    assert {n: r["port"] for n, r in access_rows(rerun.stdout).items()} == {
        n: r["port"] for n, r in access_rows(launched["result"].stdout).items()}
    assert "kept from the box's ssh config entry; it is in use on this machine (your open " \
        "tunnel to the box?" in text(rerun)


@pytest.fixture(scope="module")
def ben_ended(cloud, rerun):
    volume = data_volume(cloud, "ben")
    return {"result": play(cloud, "playbooks/terminate.yml", "-e", "spotbox_box=ben"),
            "volume": volume}


def test_terminating_one_box_leaves_the_others_running(cloud, ben_ended) -> None:
    result = ben_ended["result"]
    assert result.returncode == 0, result.stdout[-4000:]
    assert instances(cloud, "ben") == []
    for name in ("ana", "cal"):
        [instance] = instances(cloud, name)
        assert instance["State"]["Name"] == "running"
    assert "aws-ana" not in result.stdout and "aws-cal" not in result.stdout
    # ben's route goes with him (AWS gives his address to others); the others' stay.
    hosts = re.findall(r"^Host (\S+)$", (cloud["state"] / "ssh_config").read_text(), re.M)
    assert sorted(hosts) == ["spotbox-ana", "spotbox-cal"]
    [kept] = client(cloud).describe_volumes(VolumeIds=[ben_ended["volume"]["VolumeId"]])["Volumes"]
    assert kept["State"] == "available"


def test_the_boxes_left_keep_their_ports_when_one_is_ended(cloud, launched, ben_ended) -> None:
    before = access_rows(launched["result"].stdout)
    result = play(cloud, "playbooks/access.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    after = access_rows(result.stdout)
    # cal was box 3 of 3 and is box 2 of 2 now: he keeps his port all the same.
    assert {n: r["port"] for n, r in after.items()} == {
        n: before[n]["port"] for n in ("spotbox-ana", "spotbox-cal")}


@pytest.mark.parametrize(("playbook", "extra", "message"), [
    ("playbooks/terminate.yml", ("-e", "spotbox_box=zed"),
     "spotbox_box 'zed' is not one of this run's boxes (ana, ben, cal, dan)"),
    ("playbooks/terminate.yml", ("-e", "spot_instance_name=ana"),
     "spot_instance_name=ana is given on the command line while the boxes are listed"),
    ("launch.yml", ("-e", "spot_instance_name=ana"),
     "spot_instance_name=ana is given on the command line while the boxes are listed"),
])
def test_a_wrong_box_is_refused_before_anything_is_done(cloud, ben_ended, playbook, extra,
                                                        message) -> None:
    result = play(cloud, playbook, *extra)
    assert result.returncode != 0
    assert message in text(result), text(result)[-2000:]
    assert "aws-" not in result.stdout.split("PLAY RECAP")[-1], "no box's play may have run"
    assert instances(cloud, "ben") == []  # not launched again under another name
    for name in ("ana", "cal"):
        assert len(instances(cloud, name)) == 1


def test_a_run_where_every_box_fails_still_names_them(cloud, launched) -> None:
    # dan alone: every box of this run fails (Ansible would end a run whose play has
    # failed all its hosts before the closing list).
    result = play(cloud, "launch.yml", "-e", f"spotbox_box={NO_CAPACITY}")
    out = text(result)
    assert result.returncode == 2, result.stdout[-4000:]
    assert "no spot capacity" in out.split(f"NOT LAUNCHED {NO_CAPACITY}:")[1][:400], out[-3000:]
    assert f"1 of 1 box(es) did not launch: {NO_CAPACITY}" in out, out[-3000:]
    assert "skipping: no hosts matched" in out  # nothing to wait for or provision
    assert instances(cloud, NO_CAPACITY) == []


def test_ending_the_whole_list_must_be_asked_for(cloud, ben_ended) -> None:
    result = play(cloud, "playbooks/terminate.yml")
    assert result.returncode != 0
    assert ("terminate.yml would end 4 boxes (ana, ben, cal, dan). End one with -e "
            "spotbox_box=NAME, or all of them with -e spotbox_terminate_all=true") in text(result)
    for name in ("ana", "cal"):
        assert len(instances(cloud, name)) == 1
