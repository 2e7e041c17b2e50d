#!/usr/bin/python
"""Ansible module: what the caller's boxes are, what they have cost and what still bills."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_status_info
short_description: The caller's spotbox boxes, their cost so far and what still bills
description:
  - Read-only. For every region given (the regions the boxes were launched in), lists the
    resources tagged with the caller's owner tag (spotbox:owner, the caller's ARN as
    spot_instance tags them), matched exactly.
  - For each box with an instance (pending, running, stopping or stopped) - state, type, zone,
    uptime since its last start (LaunchTime), the spot price now, the average over the uptime
    and the compute cost so far (DescribeSpotPriceHistory since the launch, integrated per
    second), its volumes and snapshots with their monthly cost, its spot requests.
  - What bills without a box - unattached volumes, snapshots, spot requests with no instance.
    What is left but free - security groups, key pairs and launch templates.
  - Totals - USD per hour now, and per month if left as it is. Storage prices come from the
    recorded us-east-1 table in plugins/module_utils/spotbox_cost.py.
options:
  regions:
    description: Regions to look in; the module's region (or us-east-2) is added.
    type: list
    elements: str
    default: []
  inventory_sources:
    description:
      - Inventory paths (files or folders); the regions of every spotbox inventory file
        (C(*aws_ec2.yml), written by launch) found there are added.
    type: list
    elements: str
    default: []
  owner:
    description: The owner tag value; empty for the caller's ARN.
    type: str
    default: ""
extends_documentation_fragment:
  - spotbox_aws
author: spotbox
"""

EXAMPLES = r"""
- name: Say what runs and what it costs
  spot_status_info:
    inventory_sources: "{{ ansible_inventory_sources }}"
  register: status
"""

RETURN = r"""
regions:
  description: The regions looked in.
  returned: always
  type: list
  elements: str
boxes:
  description: One row per box with an instance (name, region, state, type, zone, seconds,
    now, average, cost, disks, storage_monthly, volumes, snapshots, requests, notes).
  returned: always
  type: list
  elements: dict
loose:
  description: What bills (or may start billing) without a box (kind, id, region, box, what,
    monthly).
  returned: always
  type: list
  elements: dict
free:
  description: Security groups, key pairs and launch templates of boxes without an instance
    (they are not billed).
  returned: always
  type: list
  elements: dict
totals:
  description: per_hour (USD now), per_month (USD if left as it is), compute_per_hour,
    storage_per_month.
  returned: always
  type: dict
lines:
  description: The table and the totals, as lines.
  returned: always
  type: list
  elements: str
"""

import contextlib
import glob
import os
from datetime import UTC, datetime

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

with contextlib.suppress(ImportError):  # the controller's PyYAML (Ansible needs it)
    import yaml

from ansible.module_utils.spotbox_aws import (
    BOX_TAG,
    LIVE_STATES,
    OWNER_TAG,
    ROLE_TAG,
    denied_line,
    error_code,
    error_message,
    owner_of,
    tags_of,
)
from ansible.module_utils.spotbox_cost import (
    compute_cost,
    snapshot_size_gib,
    status_lines,
    storage_monthly,
    summarise,
    usd,
)
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

# The course's region, spot_offer_info's fallback when none is configured.
FALLBACK_REGION = "us-east-2"
LIVE_REQUEST_STATES = ["open", "active", "disabled"]


def inventory_regions(sources: list[str]) -> list[str]:
    """Regions named by the spotbox inventory files (*aws_ec2.yml) in the sources."""
    files = []
    for source in sources:
        if os.path.isdir(source):
            files += sorted(glob.glob(os.path.join(source, "*aws_ec2.yml")))
        elif source.endswith("aws_ec2.yml") and os.path.isfile(source):
            files.append(source)
    regions = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError):
            continue  # not ours to judge: the inventory plugin says what is wrong with it
        if isinstance(data, dict) and data.get("plugin") in ("amazon.aws.aws_ec2", "aws_ec2"):
            regions += [r for r in data.get("regions") or [] if isinstance(r, str)]
    return regions


def owned(resources: list[dict], owner: str) -> list[dict]:
    """Those whose owner tag equals owner (EC2 filter values are wildcards)."""
    return [r for r in resources if tags_of(r).get(OWNER_TAG) == owner]


def paginate(client, operation: str, key: str, **kwargs) -> list[dict]:
    found = []
    for page in client.get_paginator(operation).paginate(**kwargs):
        found += page[key]
    return found


def look(client, owner: str) -> dict:
    """Every resource of the owner in the client's region, by kind."""
    mine = [{"Name": f"tag:{OWNER_TAG}", "Values": [owner]}]
    live = [*mine, {"Name": "instance-state-name", "Values": LIVE_STATES}]
    instances = [i for r in paginate(client, "describe_instances", "Reservations", Filters=live)
                 for i in r["Instances"]]
    instances = owned(instances, owner)
    open_ones = [*mine, {"Name": "state", "Values": LIVE_REQUEST_STATES}]
    requests = owned(client.describe_spot_instance_requests(Filters=open_ones)[
        "SpotInstanceRequests"], owner)
    known = {r["SpotInstanceRequestId"] for r in requests}
    if instances:  # requests made before they were tagged: found by their instance
        requests += [r for r in client.describe_spot_instance_requests(Filters=[
            {"Name": "instance-id", "Values": [i["InstanceId"] for i in instances]},
            {"Name": "state", "Values": LIVE_REQUEST_STATES}])["SpotInstanceRequests"]
            if r["SpotInstanceRequestId"] not in known]
    volumes = owned(paginate(client, "describe_volumes", "Volumes", Filters=mine), owner)
    # Untagged volumes of its instances (a root volume made without tags), as the
    # instances' block device mappings name them.
    mapped = {b["Ebs"]["VolumeId"] for i in instances for b in i.get("BlockDeviceMappings", [])
              if "Ebs" in b} - {v["VolumeId"] for v in volumes}
    if mapped:
        volumes += paginate(client, "describe_volumes", "Volumes", VolumeIds=sorted(mapped))
    return {
        "instances": instances,
        "volumes": volumes,
        "snapshots": owned(paginate(client, "describe_snapshots", "Snapshots", OwnerIds=["self"],
                                    Filters=mine), owner),
        "requests": requests,
        "groups": owned(client.describe_security_groups(Filters=mine)["SecurityGroups"], owner),
        "keys": owned(client.describe_key_pairs(Filters=mine)["KeyPairs"], owner),
        # A template listed without its tags (moto's answer; AWS gives them) is taken on the
        # filter's word: an ARN has no wildcard characters.
        "templates": [t for t in paginate(client, "describe_launch_templates", "LaunchTemplates",
                                          Filters=mine)
                      if not t.get("Tags") or tags_of(t).get(OWNER_TAG) == owner],
    }


def price_history(client, instance_type: str, zone: str, start: datetime,
                  now: datetime) -> list[dict]:
    """The pool's Linux/UNIX price changes since start, with the one in effect at start."""
    return paginate(client, "describe_spot_price_history", "SpotPriceHistory",
                    InstanceTypes=[instance_type], AvailabilityZone=zone,
                    ProductDescriptions=["Linux/UNIX"], StartTime=start, EndTime=now)


def volume_row(volume: dict, root_devices: dict) -> dict:
    """root_devices: instance id -> its root device name (a root volume without tags)."""
    role = tags_of(volume).get(ROLE_TAG, "") or next(
        ("root" for a in volume.get("Attachments", [])
         if root_devices.get(a["InstanceId"]) == a.get("Device")), "")
    return {"id": volume["VolumeId"], "role": role or "other", "size": volume["Size"],
            "type": volume.get("VolumeType", ""), "zone": volume["AvailabilityZone"],
            "attached_to": [a["InstanceId"] for a in volume.get("Attachments", [])],
            "monthly": storage_monthly(volume["Size"], volume.get("VolumeType", ""))}


def snapshot_row(snapshot: dict) -> dict:
    size = snapshot_size_gib(snapshot)
    return {"id": snapshot["SnapshotId"], "size": round(size, 1),
            "monthly": storage_monthly(size, "snapshot-archive"
                                       if snapshot.get("StorageTier") == "archive" else "snapshot")}


def region_status(client, owner: str, region: str, now: datetime) -> dict:
    found = look(client, owner)
    by_box = {}
    for instance in sorted(found["instances"], key=lambda i: i["LaunchTime"]):
        by_box.setdefault(tags_of(instance).get(BOX_TAG, "?"), []).append(instance)
    boxes, loose, free = [], [], []
    pools = {}
    for instances in by_box.values():
        for instance in instances:
            if instance["State"]["Name"] == "running":
                pool = (instance["InstanceType"], instance["Placement"]["AvailabilityZone"])
                pools[pool] = min(pools.get(pool, instance["LaunchTime"]), instance["LaunchTime"])
    histories = {pool: price_history(client, *pool, start, now) for pool, start in pools.items()}
    box_of_instance = {}
    for name, instances in by_box.items():
        for instance in instances:
            box_of_instance[instance["InstanceId"]] = name
            state = instance["State"]["Name"]
            pool = (instance["InstanceType"], instance["Placement"]["AvailabilityZone"])
            figures = (compute_cost(histories[pool], *pool, instance["LaunchTime"], now)
                       if state == "running" else {"seconds": 0, "cost": None, "average": None,
                                                   "now": None, "covered": True})
            notes = []
            if state == "running" and figures["now"] is None:
                notes.append(f"no spot price for {pool[0]} in {pool[1]}: compute cost unknown")
            elif not figures["covered"]:
                notes.append("the price history begins after the launch: its first price is "
                             "taken for the time before")
            if state == "stopped":
                notes.append("stopped: no compute charge, its volumes still bill")
            boxes.append({"name": name, "region": region, "state": state,
                          "instance_id": instance["InstanceId"],
                          "type": instance["InstanceType"], "zone": pool[1],
                          "launch_time": instance["LaunchTime"].isoformat(),
                          **figures, "volumes": [], "snapshots": [], "requests": [],
                          "notes": notes})
    rows = {b["name"]: b for b in boxes}  # several instances of one name: the newest row wins
    root_devices = {i["InstanceId"]: i.get("RootDeviceName") for i in found["instances"]}
    for volume in found["volumes"]:
        row = volume_row(volume, root_devices)
        name = tags_of(volume).get(BOX_TAG, "")
        attached = [box_of_instance[i] for i in row["attached_to"] if i in box_of_instance]
        target = rows.get(attached[0] if attached else name)
        if target is not None:
            target["volumes"].append(row)
            if not row["attached_to"]:
                target["notes"].append(f"{row['role']} volume {row['id']} is not attached")
        elif row["attached_to"]:
            continue  # attached to an instance that is not a box of yours: its owner's to show
        elif row["role"] == "data":
            loose.append({"kind": "volume", "id": row["id"], "region": region, "box": name,
                          "what": f"kept data volume, {row['size']} GiB {row['type']}, no "
                                  "instance",
                          "hint": "a kept data volume: launch.yml with its box's name attaches "
                                  "it again; terminate.yml with that name and -e "
                                  "spot_instance_delete_data_volume=true deletes it",
                          "monthly": row["monthly"]})
        else:
            loose.append({"kind": "volume", "id": row["id"], "region": region, "box": name,
                          "what": f"stray volume, {row['size']} GiB {row['type']}, unattached "
                                  f"(role {row['role']})",
                          "hint": "a stray volume: delete it (EC2 console or `aws ec2 "
                                  "delete-volume`) when nothing on it is needed",
                          "monthly": row["monthly"]})
    for snapshot in found["snapshots"]:
        row = snapshot_row(snapshot)
        name = tags_of(snapshot).get(BOX_TAG, "")
        if name in rows:
            rows[name]["snapshots"].append(row)
        else:
            loose.append({"kind": "snapshot", "id": row["id"], "region": region, "box": name,
                          "what": f"snapshot of {row['size']} GiB at most",
                          "hint": "a snapshot bills for the blocks it stores, at most its "
                                  "volume's size; delete it when it is not needed",
                          "monthly": row["monthly"]})
    for request in found["requests"]:
        instance = request.get("InstanceId")
        name = box_of_instance.get(instance) or tags_of(request).get(BOX_TAG, "")
        entry = {"id": request["SpotInstanceRequestId"], "state": request["State"],
                 "type": request.get("Type", ""), "instance_id": instance or ""}
        if instance in box_of_instance:
            rows[name]["requests"].append(entry)
        else:
            loose.append({"kind": "spot request", "id": entry["id"], "region": region, "box": name,
                          "what": f"{entry['state']} {entry['type']} request with no instance",
                          "hint": "a spot request with no instance: AWS starts an instance "
                                  "(billed) when it is fulfilled; terminate.yml with its box's "
                                  "name cancels it",
                          "monthly": None})
    for kind, key, id_key in (("security group", "groups", "GroupId"),
                              ("key pair", "keys", "KeyName"),
                              ("launch template", "templates", "LaunchTemplateName")):
        for item in found[key]:
            name = tags_of(item).get(BOX_TAG) or item[id_key].removeprefix("spotbox-")
            if name not in rows:
                free.append({"kind": kind, "id": item[id_key], "region": region, "box": name})
    for row in boxes:
        row["volumes"].sort(key=lambda v: {"root": 0, "data": 1}.get(v["role"], 2))
        row["storage_monthly"] = sum(v["monthly"] or 0 for v in row["volumes"]) + sum(
            s["monthly"] or 0 for s in row["snapshots"])
        row["disks"] = " + ".join(f"{v['role']} {v['size']}" for v in row["volumes"]) or "-"
        if row["snapshots"]:
            row["disks"] += f" + {len(row['snapshots'])} snap"
            row["notes"] += [f"snapshot {s['id']}: {s['size']} GiB at most, "
                             f"{usd(s['monthly'])} USD/month at most" for s in row["snapshots"]]
        row["notes"] += [f"spot request {r['id']} ({r['state']}, {r['type']})"
                         for r in row["requests"]]
    return {"boxes": boxes, "loose": loose, "free": free}


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "regions": {"type": "list", "elements": "str", "default": []},
            "inventory_sources": {"type": "list", "elements": "str", "default": []},
            "owner": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    regions = []
    for region in ([module.region or FALLBACK_REGION] + module.params["regions"]
                   + inventory_regions(module.params["inventory_sources"])):
        if region and region not in regions:
            regions.append(region)
    now = datetime.now(UTC)
    result = {"regions": regions, "boxes": [], "loose": [], "free": []}
    try:
        owner = module.params["owner"] or owner_of(module.client("sts").get_caller_identity())
        for region in regions:
            client = module.client("ec2", region=region,
                                   retry_decorator=AWSRetry.jittered_backoff())
            for key, rows in region_status(client, owner, region, now).items():
                result[key] += rows
    except botocore.exceptions.NoCredentialsError:
        module.fail_json(msg="no AWS credentials found. Configure them with `aws configure` (or "
                         "set AWS_PROFILE) for an IAM user with the policy in docs/iam-policy.json")
    except botocore.exceptions.ClientError as exc:
        module.fail_json(msg=denied_line(exc, "read what its boxes are")
                         or f"AWS answered {error_code(exc)}: {error_message(exc)}")
    except botocore.exceptions.BotoCoreError as exc:
        module.fail_json(msg=f"AWS could not be asked: {exc}")
    result["totals"] = summarise(result["boxes"], result["loose"])
    result["lines"] = status_lines(result["boxes"], result["loose"], result["free"],
                                   result["totals"])
    module.exit_json(changed=False, owner=owner, **result)


if __name__ == "__main__":
    main()
