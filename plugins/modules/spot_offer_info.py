#!/usr/bin/python
"""Ansible module: everything the launch decides before it creates anything on AWS."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_offer_info
short_description: Read what a spot GPU launch needs and choose the offer, creating nothing
description:
  - Resolves the region (the given one, else the environment's or the AWS profile's, as every
    AWS tool does) and the caller's identity (STS), whose ARN tags and scopes the box.
  - Checks with DescribeInstanceTypes that every requested type exists in the region, has an
    NVIDIA GPU, has the AMI's architecture and is sold as spot.
  - Finds the AMI (by id, or the newest matching a name pattern) and its root snapshot's size;
    the root volume asked for is raised to it (EC2 refuses a smaller one).
  - Finds the network (the given subnet, else the default VPC; refuses clearly without one).
  - Finds the box's existing instance (any state but terminated - its type and zone are kept)
    and data volume (only its zone then qualifies).
  - Reads the current Linux/UNIX spot price of every type in every zone and orders the
    eligible offers, cheapest first; the launch tries them in that order.
  - Reads the spot vCPU quota of each offer's family (Service Quotas) and refuses, before
    anything is created, when none fits; a warning when the caller may not read quotas.
  - Changes nothing; runs in check mode. No amazon.aws module reads spot prices or quotas.
options:
  name:
    description: The box's name (tag spotbox:box).
    type: str
    required: true
  owner:
    description: The owner tag value; empty for the caller's ARN (STS GetCallerIdentity).
    type: str
    default: ""
  instance_types:
    description: Acceptable instance types, in order of preference for equal prices.
    type: list
    elements: str
    required: true
  architecture:
    description: The AMI's architecture; every type must support it.
    type: str
    default: x86_64
  max_price:
    description: Highest acceptable price in USD per hour; empty for none.
    type: float
  on_demand_prices:
    description: On-demand USD/hour per type, to override the recorded table.
    type: dict
    default: {}
  ami_id:
    description: An explicit AMI id; empty to search by I(ami_name_pattern).
    type: str
    default: ""
  ami_name_pattern:
    description: Name pattern of the AMI (newest wins).
    type: str
    default: ""
  ami_owner:
    description: Owner of the AMI searched by name.
    type: str
    default: amazon
  root_volume_size:
    description: Root volume asked for, in GiB; raised to the AMI's root snapshot size.
    type: int
    default: 100
  subnet_id:
    description: Launch into this subnet (and its VPC) instead of the default VPC.
    type: str
    default: ""
  check_quota:
    description: Read the spot vCPU quotas (Service Quotas) and refuse offers they do not allow.
    type: bool
    default: true
  key_name:
    description: The key pair to look for.
    type: str
    default: ""
  key_file:
    description: >-
      The private key file to look for on the machine the module runs on (the controller), with
      its folder; empty for ~/.ssh/spotbox-REGION-NAME.pem.
    type: str
    default: ""
extends_documentation_fragment:
  - spotbox_aws
  - spotbox_names
author: spotbox
"""

EXAMPLES = r"""
- name: Plan the launch of box course
  spot_offer_info:
    name: course
    instance_types: [g4dn.xlarge, g5.xlarge]
    ami_name_pattern: "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) *"
    max_price: 0.5
  register: offer
"""

RETURN = r"""
region:
  description: The region used (given, or resolved from the environment or profile).
  returned: success
  type: str
  sample: us-east-2
region_source:
  description: Where the region came from.
  returned: success
  type: str
  sample: "the AWS profile or environment"
owner:
  description: The owner tag value (the caller's ARN unless given).
  returned: success
  type: str
  sample: arn:aws:iam::123456789012:user/alice
choice:
  description: The chosen offer (the existing instance's type and zone when there is one).
  returned: success
  type: dict
  sample: {"instance_type": "g4dn.xlarge", "zone": "us-east-2b", "spot_price": 0.2236,
           "on_demand_price": 0.526, "saving_percent": 57.5, "eligible": true}
offers:
  description: The offers a launch may try, in order (the choice first).
  returned: success
  type: list
  elements: dict
table_lines:
  description: Every offer as a printable table, cheapest first.
  returned: success
  type: list
  elements: str
types:
  description: Per type, its GPU description and vCPUs.
  returned: success
  type: dict
  sample: {"g4dn.xlarge": {"gpu": "1x NVIDIA T4", "vcpus": 4}}
ami:
  description: The AMI (image_id, name, root_device_name, root_snapshot_size).
  returned: success
  type: dict
root_volume_size:
  description: The root volume size to ask for (GiB).
  returned: success
  type: int
notes:
  description: Things the user should read (a raised root size, a skipped quota check).
  returned: success
  type: list
  elements: str
network:
  description: vpc_id and subnet_id (empty for the default VPC's subnet of the zone).
  returned: success
  type: dict
instance:
  description: The box's existing instance (id, state, type, zone, spot request id), or null.
  returned: always
  type: dict
volume:
  description: The existing data volume (id, zone, size, state), or null.
  returned: always
  type: dict
key:
  description: >-
    The key pair and its file - pair_exists, file (the path), file_exists, file_mode ("0400"),
    folder_exists - so
    that the role decides before anything is created.
  returned: success
  type: dict
spot_role_exists:
  description: Whether AWSServiceRoleForEC2Spot exists; null when the caller may not tell.
  returned: success
  type: bool
"""

import contextlib
import os
from datetime import UTC, datetime

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import boto3
    import botocore

from ansible.module_utils.spotbox_aws import (
    box_instances,
    box_volumes,
    denied_line,
    error_code,
    error_message,
    owner_of,
)
from ansible.module_utils.spotbox_names import NAMES_SPEC, name_messages
from ansible.module_utils.spotbox_spot import (
    ON_DEMAND_USD_PER_HOUR,
    SPOT_QUOTAS,
    SpotError,
    check_types,
    choose,
    format_table,
    latest_prices,
    quota_refusal,
    root_volume_size,
    spot_quota_family,
)
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

NO_CREDENTIALS = (
    "no AWS credentials found. Configure them with `aws configure` (or set AWS_PROFILE, or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) for an IAM user with the policy in "
    "docs/iam-policy.json"
)
# What every AWS command line tool does without a region is fail; spotbox falls
# back to the course's region and says so.
FALLBACK_REGION = "us-east-2"


def known_regions() -> set[str]:
    """Every EC2 region botocore knows, in every partition."""
    session = boto3.session.Session()
    return {region for partition in session.get_available_partitions()
            for region in session.get_available_regions("ec2", partition_name=partition)}


def resolve_region(module) -> tuple[str, str]:
    """The region and where it came from; SpotError for one AWS does not have."""
    region = module.region
    source = "the region option, the AWS profile or environment"
    if not region:
        region, source = FALLBACK_REGION, ("none configured (O(region), AWS_REGION or "
                                           "`aws configure set region`): the course's")
    if region not in known_regions():
        raise SpotError(f"O(region) {region!r} is not an AWS region; use one like "
                        "us-east-2 or eu-west-1 (`aws ec2 describe-regions` lists yours)")
    return region, source


def describe_types(client, types: list[str], region: str) -> list[dict]:
    try:
        return client.describe_instance_types(InstanceTypes=types, aws_retry=True)["InstanceTypes"]
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "InvalidInstanceType":
            raise SpotError(f"O(instance_types): {error_message(exc)} in region {region}; "
                            "check the names (like g4dn.xlarge) or choose another region") from exc
        if error_code(exc) == "OptInRequired":
            raise SpotError(f"O(region) {region} is not enabled for this account "
                            f"({error_message(exc)}); enable it in the console (Account, AWS "
                            "Regions) or choose another") from exc
        raise


def find_ami(client, params: dict, region: str) -> dict:
    """The AMI by id, or the newest available one matching the name pattern."""
    if params["ami_id"]:
        try:
            images = client.describe_images(ImageIds=[params["ami_id"]], aws_retry=True)["Images"]
        except botocore.exceptions.ClientError as exc:
            if not error_code(exc).startswith("InvalidAMIID"):
                raise
            images = []
        if not images:
            raise SpotError(f"no AMI {params['ami_id']} in {region}; leave O(ami_id) "
                            "empty to use the newest Deep Learning Base AMI")
    else:
        images = client.describe_images(
            Owners=[params["ami_owner"]], aws_retry=True,
            Filters=[{"Name": "name", "Values": [params["ami_name_pattern"]]},
                     {"Name": "architecture", "Values": [params["architecture"]]},
                     {"Name": "state", "Values": ["available"]}])["Images"]
        if not images:
            raise SpotError(
                f"no AMI in {region} is named like {params['ami_name_pattern']!r} (owner "
                f"{params['ami_owner']}, {params['architecture']}); set O(ami_id) or "
                "O(ami_name_pattern)")
    image = max(images, key=lambda i: i.get("CreationDate", ""))
    if image.get("Architecture", params["architecture"]) != params["architecture"]:
        raise SpotError(f"AMI {image['ImageId']} is {image['Architecture']}, not "
                        f"{params['architecture']} (O(architecture))")
    root = next((m for m in image.get("BlockDeviceMappings", [])
                 if m.get("DeviceName") == image.get("RootDeviceName")), {})
    return {"image_id": image["ImageId"], "name": image.get("Name", ""),
            "root_device_name": image.get("RootDeviceName", "/dev/sda1"),
            "root_snapshot_size": root.get("Ebs", {}).get("VolumeSize")}


def find_network(client, subnet_id: str, region: str) -> dict:
    """The VPC and subnet to launch into, and the zones that have a subnet for it."""
    if subnet_id:
        try:
            subnets = client.describe_subnets(SubnetIds=[subnet_id], aws_retry=True)["Subnets"]
        except botocore.exceptions.ClientError as exc:
            if not error_code(exc).startswith("InvalidSubnet"):
                raise
            subnets = []
        if not subnets:
            raise SpotError(f"no subnet {subnet_id} in {region} (O(subnet_id))")
        subnet = subnets[0]
        return {"vpc_id": subnet["VpcId"], "subnet_id": subnet_id,
                "zones": [subnet["AvailabilityZone"]]}
    vpcs = client.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}],
                                aws_retry=True)["Vpcs"]
    if not vpcs:
        raise SpotError(
            f"the account has no default VPC in {region}, so AWS has nowhere to put the box; "
            "set O(subnet_id) to a subnet of yours that gives public IPs "
            "(or `aws ec2 create-default-vpc`)")
    subnets = client.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]},
                 {"Name": "default-for-az", "Values": ["true"]}], aws_retry=True)["Subnets"]
    return {"vpc_id": vpcs[0]["VpcId"], "subnet_id": "",
            "zones": sorted(s["AvailabilityZone"] for s in subnets)}


def spot_prices(client, types: list[str]) -> list[dict]:
    """The price in effect now of every type in every zone (DescribeSpotPriceHistory
    with StartTime now answers the last change before it, which is current)."""
    paginator = client.get_paginator("describe_spot_price_history")
    history = []
    for page in paginator.paginate(InstanceTypes=types, StartTime=datetime.now(UTC),
                                   ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"]):
        history += page["SpotPriceHistory"]
    return history


def quota_value(module, quotas, code: str, notes: list[str]) -> float | None:
    """The applied spot vCPU quota (else AWS's default); None when it cannot be read."""
    try:
        try:
            return quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "NoSuchResourceException":
                raise
            return quotas.get_aws_default_service_quota(
                ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        notes.append(f"could not read the spot vCPU quota {code} ({error_code(exc)}: "
                     f"{error_message(exc)}); if the launch fails with "
                     "MaxSpotInstanceCountExceeded, raise it in the Service Quotas console")
        return None


def spot_vcpus_in_use(client, family: str, exclude: str) -> int:
    """vCPUs of the account's pending and running spot instances of a quota family."""
    paginator = client.get_paginator("describe_instances")
    types = []
    for page in paginator.paginate(Filters=[
            {"Name": "instance-state-name", "Values": ["pending", "running"]}]):
        types += [i["InstanceType"] for r in page["Reservations"] for i in r["Instances"]
                  if i.get("InstanceLifecycle") == "spot" and i["InstanceId"] != exclude
                  and spot_quota_family(i["InstanceType"]) == family]
    if not types:
        return 0
    described = client.describe_instance_types(InstanceTypes=sorted(set(types)))["InstanceTypes"]
    vcpus = {t["InstanceType"]: t["VCpuInfo"]["DefaultVCpus"] for t in described}
    return sum(vcpus[t] for t in types)


def check_quotas(module, client, offers: list[dict], types: dict, region: str,
                 exclude: str, notes: list[str]) -> list[dict]:
    """The offers the spot vCPU quotas allow; SpotError (with how to raise it) if none."""
    quotas = module.client("service-quotas", region=region,
                           retry_decorator=AWSRetry.jittered_backoff())
    allowed, refusals, cache = [], [], {}
    for offer in offers:
        family = spot_quota_family(offer["instance_type"])
        if family is None:
            allowed.append(offer)
            continue
        if family not in cache:
            value = quota_value(module, quotas, SPOT_QUOTAS[family][0], notes)
            in_use = spot_vcpus_in_use(client, family, exclude) if value is not None else 0
            cache[family] = (value, in_use)
        value, in_use = cache[family]
        refusal = quota_refusal(offer["instance_type"], types[offer["instance_type"]]["vcpus"],
                                value, in_use, region)
        if refusal:
            refusals.append(refusal)
        else:
            allowed.append(offer)
    if not allowed:
        raise SpotError(refusals[0])
    return allowed


def key_state(client, params: dict, region: str) -> dict:
    """Whether the key pair exists in AWS and its private key on this machine."""
    path = os.path.expanduser(params["key_file"] or
                              f"~/.ssh/spotbox-{region}-{params['name']}.pem")
    pairs = []
    if params["key_name"]:
        try:
            pairs = client.describe_key_pairs(KeyNames=[params["key_name"]])["KeyPairs"]
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) != "InvalidKeyPair.NotFound":
                raise
    mode = f"{os.stat(path).st_mode & 0o7777:04o}" if os.path.exists(path) else ""
    return {"pair_exists": bool(pairs), "file": path, "file_exists": os.path.lexists(path),
            "file_mode": mode, "folder_exists": os.path.isdir(os.path.dirname(path))}


def spot_role_exists(module, region: str) -> bool | None:
    """Whether the spot service-linked role exists (None: this caller may not tell)."""
    try:
        module.client("iam", region=region).get_role(RoleName="AWSServiceRoleForEC2Spot")
        return True
    except botocore.exceptions.ClientError as exc:
        return False if error_code(exc) == "NoSuchEntity" else None


def instance_summary(instance: dict) -> dict:
    return {"id": instance["InstanceId"], "state": instance["State"]["Name"],
            "instance_type": instance["InstanceType"],
            "zone": instance["Placement"]["AvailabilityZone"],
            "lifecycle": instance.get("InstanceLifecycle", "on-demand"),
            "spot_request_id": instance.get("SpotInstanceRequestId", "")}


def plan(module, params: dict) -> dict:
    region, region_source = resolve_region(module)
    client = module.client("ec2", region=region, retry_decorator=AWSRetry.jittered_backoff())
    sts = module.client("sts", region=region)
    owner = params["owner"] or owner_of(sts.get_caller_identity())
    notes: list[str] = []
    requested = params["instance_types"]
    types = check_types(describe_types(client, requested, region), requested,
                        params["architecture"])
    ami = find_ami(client, params, region)
    root_size, raised = root_volume_size(params["root_volume_size"], ami["root_snapshot_size"])
    if raised:
        notes.append(raised)
    network = find_network(client, params["subnet_id"], region)
    instances = box_instances(client, params["name"], owner)
    if len(instances) > 1:
        ids = ", ".join(i["InstanceId"] for i in instances)
        raise SpotError(f"box {params['name']} has several instances ({ids}); terminate the "
                        "extra ones in the EC2 console (spotbox never picks one for you)")
    instance = instance_summary(instances[0]) if instances else None
    volumes = box_volumes(client, params["name"], owner)
    if len(volumes) > 1:
        ids = ", ".join(v["VolumeId"] for v in volumes)
        raise SpotError(f"box {params['name']} has several data volumes ({ids}); keep one "
                        "(delete or untag the others)")
    volume = ({"id": volumes[0]["VolumeId"], "zone": volumes[0]["AvailabilityZone"],
               "size": volumes[0]["Size"], "state": volumes[0]["State"]} if volumes else None)
    zones = set(network["zones"])
    if volume:
        zones &= {volume["zone"]}
    candidates = list(requested)
    if instance:  # an existing box keeps its type and zone (a spot type cannot change)
        zones &= {instance["zone"]}
        candidates = [instance["instance_type"]]
        if instance["instance_type"] not in types:
            types.update(check_types(describe_types(client, candidates, region), candidates,
                                     params["architecture"]))
    on_demand = {**ON_DEMAND_USD_PER_HOUR,
                 **{k: float(v) for k, v in params["on_demand_prices"].items()}}
    if not zones:
        where = volume["zone"] if volume else ", ".join(network["zones"]) or "(none)"
        raise SpotError(f"no zone qualifies: the data volume's zone {where} has no subnet "
                        "to launch into; set O(subnet_id) to a subnet in it")
    result = choose(latest_prices(spot_prices(client, candidates)), candidates,
                    zones=sorted(zones), max_price=params["max_price"], on_demand=on_demand)
    offers = result["offers"]
    if params["check_quota"] and (instance is None or instance["state"] != "running"):
        offers = check_quotas(module, client, offers, types, region,
                              instance["id"] if instance else "", notes)
    return {"region": region, "region_source": region_source, "owner": owner,
            "key": key_state(client, params, region),
            "spot_role_exists": spot_role_exists(module, region),
            "choice": offers[0], "offers": offers, "table": result["table"],
            "table_lines": format_table(result["table"]), "types": types, "ami": ami,
            "root_volume_size": root_size, "notes": notes, "network": network,
            "instance": instance, "volume": volume}


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "owner": {"type": "str", "default": ""},
            "instance_types": {"type": "list", "elements": "str", "required": True},
            "architecture": {"type": "str", "default": "x86_64"},
            "max_price": {"type": "float"},
            "on_demand_prices": {"type": "dict", "default": {}},
            "ami_id": {"type": "str", "default": ""},
            "ami_name_pattern": {"type": "str", "default": ""},
            "ami_owner": {"type": "str", "default": "amazon"},
            "root_volume_size": {"type": "int", "default": 100},
            "subnet_id": {"type": "str", "default": ""},
            "check_quota": {"type": "bool", "default": True},
            "key_name": {"type": "str", "default": ""},
            "key_file": {"type": "str", "default": ""},
            **NAMES_SPEC,
        },
        supports_check_mode=True,
    )
    name_messages(module)
    params = module.params
    if not params["instance_types"]:
        module.fail_json(msg="instance_types is empty; give at least one GPU instance type")
    if params["max_price"] is not None and params["max_price"] <= 0:
        module.fail_json(msg=f"max_price must be a positive USD/hour price (like 0.5) or "
                         f"empty, not {params['max_price']}")
    if not (params["ami_id"] or params["ami_name_pattern"]):
        module.fail_json(msg="give ami_id or ami_name_pattern")
    try:
        result = plan(module, params)
    except SpotError as exc:
        module.fail_json(msg=str(exc))
    except botocore.exceptions.NoCredentialsError:
        module.fail_json(msg=NO_CREDENTIALS)
    except botocore.exceptions.EndpointConnectionError as exc:
        module.fail_json(msg=f"could not reach AWS ({exc}); check the network and the region")
    except botocore.exceptions.ClientError as exc:
        module.fail_json(msg=denied_line(exc, "read what the launch needs")
                         or f"AWS answered {error_code(exc)}: {error_message(exc)}")
    except botocore.exceptions.BotoCoreError as exc:
        module.fail_json(msg=f"AWS could not be asked: {exc}")
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
