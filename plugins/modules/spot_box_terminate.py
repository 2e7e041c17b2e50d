#!/usr/bin/python
"""Ansible module: end a box (its spot requests and instances), keep or snapshot or delete
its data volume, and report what still bills."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_box_terminate
short_description: Cancel a box's spot requests, terminate its instances, keep its data volume
description:
  - Finds the box's resources by its tags, matched exactly (EC2 filter values are wildcards,
    so a name like C(*) would otherwise match every box); the name must be a box name.
  - Cancels its spot requests in every state that can still launch or hold an instance
    (open, active, disabled) first. The EC2 User Guide ("Cancel a Spot Instance request") -
    terminating an instance of a persistent request re-opens the request, "To ensure that no
    new Spot Instance is launched, you must first cancel the Spot Instance request"; cancelling
    a disabled request terminates its stopped instance. amazon.aws's ec2_spot_instance cancels
    only open and active requests.
  - Snapshots the data volume first when asked, terminates the instances (any state but
    terminated) and waits, then deletes the data volume only when asked.
  - Finds the data volumes by their tags, attached or not.
  - Reports what it did and what still bills, ending with the box's figures - how long its
    instance ran since its last start, about what that cost (the spot price history since
    then, per second), what its kept data volume costs a month (spotbox_cost's recorded
    table). Check mode says what it would do.
options:
  name:
    description: The box's name.
    type: str
    required: true
  owner:
    description: The owner tag value; empty for the caller's ARN.
    type: str
    default: ""
  data_volume:
    description: What happens to the data volume.
    type: str
    choices: [keep, snapshot, delete, snapshot-and-delete]
    default: keep
  wait_timeout:
    description: Seconds to wait for the instances to terminate.
    type: int
    default: 600
extends_documentation_fragment:
  - spotbox_aws
author: spotbox
"""

EXAMPLES = r"""
- name: End box course, keep its data volume
  spot_box_terminate:
    region: us-east-2
    name: course
"""

RETURN = r"""
terminated:
  description: Instance ids terminated.
  returned: always
  type: list
  elements: str
cancelled:
  description: Spot request ids cancelled, with the state they were in.
  returned: always
  type: list
  elements: dict
volumes:
  description: The data volumes (id, size, zone, action taken).
  returned: always
  type: list
  elements: dict
snapshots:
  description: Snapshot ids made.
  returned: always
  type: list
  elements: str
addresses:
  description: Public IPs the instances had (their known_hosts entries are stale now).
  returned: always
  type: list
  elements: str
figures:
  description: The closing figures - seconds (the instances' running time since their last
    start), cost (USD, null when no spot price is known), kept_monthly (USD a month of the
    data volumes kept), line.
  returned: always
  type: dict
report:
  description: What happened and what still bills, as lines.
  returned: always
  type: list
  elements: str
"""

import contextlib
import re
from datetime import UTC, datetime

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

from ansible.module_utils.spotbox_aws import (
    BOX_TAG,
    OWNER_TAG,
    box_instances,
    box_volumes,
    denied_line,
    error_code,
    error_message,
    exactly_ours,
    owner_of,
)
from ansible.module_utils.spotbox_cost import closing_line, compute_cost, storage_monthly
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

BOX_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
LIVE_REQUEST_STATES = ["open", "active", "disabled"]


def box_requests(client, name: str, owner: str, instance_ids: list[str]) -> list[dict]:
    """The box's spot requests that can still launch or hold an instance: tagged for the
    box, or holding one of its instances (requests made before they were tagged)."""
    found = {}
    state = {"Name": "state", "Values": LIVE_REQUEST_STATES}
    tagged = client.describe_spot_instance_requests(Filters=[
        {"Name": f"tag:{BOX_TAG}", "Values": [name]},
        {"Name": f"tag:{OWNER_TAG}", "Values": [owner]}, state])["SpotInstanceRequests"]
    for request in exactly_ours(tagged, name, owner):
        found[request["SpotInstanceRequestId"]] = request
    if instance_ids:
        for request in client.describe_spot_instance_requests(Filters=[
                {"Name": "instance-id", "Values": instance_ids}, state])["SpotInstanceRequests"]:
            found[request["SpotInstanceRequestId"]] = request
    return list(found.values())


def figures(client, name: str, instances: list[dict], volumes: list[dict], mode: str,
            check_mode: bool) -> dict:
    """How long the box's running instances ran since their last start, about what that
    cost, and what its kept data volumes cost a month."""
    now = datetime.now(UTC)
    seconds, cost, running = 0, 0.0, False
    for instance in instances:
        if instance["State"]["Name"] != "running":
            continue  # a stopped instance's compute was billed up to its stop, not counted here
        pool = (instance["InstanceType"], instance["Placement"]["AvailabilityZone"])
        history = []
        for page in client.get_paginator("describe_spot_price_history").paginate(
                InstanceTypes=[pool[0]], AvailabilityZone=pool[1],
                ProductDescriptions=["Linux/UNIX"], StartTime=instance["LaunchTime"], EndTime=now):
            history += page["SpotPriceHistory"]
        run = compute_cost(history, *pool, instance["LaunchTime"], now)
        running = True
        seconds += run["seconds"]
        cost = None if cost is None or run["cost"] is None else cost + run["cost"]
    kept = [v for v in volumes if not mode.endswith("delete")]
    monthly = sum(storage_monthly(v["Size"], v.get("VolumeType", "")) or 0 for v in kept)
    return {"seconds": seconds, "cost": cost if running else 0.0, "kept_monthly": monthly,
            "line": closing_line(name, seconds if running else None, cost, monthly, len(kept),
                                 check_mode)}


def end_box(module, client, name: str, owner: str) -> dict:
    mode = module.params["data_volume"]
    instances = box_instances(client, name, owner)
    instance_ids = [i["InstanceId"] for i in instances]
    requests = box_requests(client, name, owner, instance_ids)
    volumes = box_volumes(client, name, owner)
    result = {
        "terminated": instance_ids,
        "cancelled": [{"id": r["SpotInstanceRequestId"], "state": r["State"]} for r in requests],
        "volumes": [{"id": v["VolumeId"], "size": v["Size"], "zone": v["AvailabilityZone"],
                     "action": {"keep": "kept", "snapshot": "kept"}.get(mode, "deleted")}
                    for v in volumes],
        "snapshots": [],
        "addresses": [i["PublicIpAddress"] for i in instances if i.get("PublicIpAddress")],
        "changed": bool(instances or requests or (volumes and mode != "keep")),
        # Read before the instances end: the price history needs their launch times.
        "figures": figures(client, name, instances, volumes, mode, module.check_mode),
    }
    if module.check_mode:
        return result
    if requests:  # first: a persistent request would launch a new instance
        client.cancel_spot_instance_requests(
            SpotInstanceRequestIds=[r["SpotInstanceRequestId"] for r in requests])
    if mode.startswith("snapshot"):
        for volume in volumes:
            snap = client.create_snapshot(
                VolumeId=volume["VolumeId"], Description=f"spotbox {name} data before terminate",
                TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
                    {"Key": "Name", "Value": f"spotbox-{name}-data"},
                    {"Key": BOX_TAG, "Value": name}, {"Key": OWNER_TAG, "Value": owner}]}])
            result["snapshots"].append(snap["SnapshotId"])
    if instance_ids:
        client.terminate_instances(InstanceIds=instance_ids)
        delay = 5
        client.get_waiter("instance_terminated").wait(
            InstanceIds=instance_ids,
            WaiterConfig={"Delay": delay, "MaxAttempts": max(1, module.params["wait_timeout"]
                                                             // delay)})
    if mode.endswith("delete"):
        for volume in volumes:
            client.get_waiter("volume_available").wait(VolumeIds=[volume["VolumeId"]])
            client.delete_volume(VolumeId=volume["VolumeId"])
    return result


def report(name: str, region: str, result: dict, check_mode: bool) -> list[str]:
    """Lines saying what happened (or would) and what still bills."""
    would = "would " if check_mode else ""
    lines = []
    if result["cancelled"]:
        lines.append(f"{would}cancel spot requests " + ", ".join(
            f"{r['id']} ({r['state']})" for r in result["cancelled"]))
    if result["terminated"]:
        lines.append(f"{would}terminate {', '.join(result['terminated'])} (box {name}, "
                     f"{region})")
    if not (result["cancelled"] or result["terminated"]):
        lines.append(f"box {name} has no instance or spot request in {region}: nothing to end")
    if result["snapshots"]:
        lines.append(f"snapshot {', '.join(result['snapshots'])} of the data volume (it bills "
                     "per GiB-month until deleted)")
    for volume in result["volumes"]:
        if volume["action"] == "deleted":
            lines.append(f"{would}delete the data volume {volume['id']} ({volume['size']} GiB)")
        else:
            lines.append(f"kept the data volume {volume['id']} ({volume['size']} GiB in "
                         f"{volume['zone']}): it still bills; launch.yml with the same name "
                         "attaches it again, `-e spot_instance_delete_data_volume=true` on "
                         "terminate deletes it")
    if not result["volumes"]:
        lines.append(f"box {name} has no data volume in {region}")
    lines.append("kept (free): its security group, key pair and launch template")
    lines.append(result["figures"]["line"])
    return lines


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "owner": {"type": "str", "default": ""},
            "data_volume": {"type": "str", "default": "keep",
                            "choices": ["keep", "snapshot", "delete", "snapshot-and-delete"]},
            "wait_timeout": {"type": "int", "default": 600},
        },
        supports_check_mode=True,
    )
    name = module.params["name"]
    if not BOX_NAME.match(name):
        module.fail_json(msg=f"name must be a box name (1-31 lower-case letters, digits and "
                         f"dashes, no wildcards), not {name!r}")
    client = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    try:
        owner = module.params["owner"] or owner_of(
            module.client("sts").get_caller_identity())
        result = end_box(module, client, name, owner)
    except botocore.exceptions.WaiterError as exc:
        module.fail_json(msg=f"box {name}: AWS did not finish in time ({exc}); run terminate "
                         "again to see what is left")
    except botocore.exceptions.ClientError as exc:
        module.fail_json(msg=denied_line(exc, f"end box {name}")
                         or f"AWS answered {error_code(exc)}: {error_message(exc)}")
    except botocore.exceptions.BotoCoreError as exc:
        module.fail_json(msg=f"AWS could not be asked: {exc}")
    changed = result.pop("changed")
    module.exit_json(changed=changed, report=report(name, module.region, result,
                                                    module.check_mode), **result)


if __name__ == "__main__":
    main()
