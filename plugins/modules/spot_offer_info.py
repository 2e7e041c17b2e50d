#!/usr/bin/python
"""Ansible module: current spot prices of GPU instance types, and the cheapest offer."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_offer_info
short_description: Read spot prices of GPU instance types and choose the cheapest (type, zone)
description:
  - Checks with DescribeInstanceTypes that every requested type exists in the region and has
    a GPU (GpuInfo); fails before anything is created otherwise.
  - Reads the current Linux/UNIX spot price of every type in every availability zone, adds the
    on-demand price and the saving, and chooses the cheapest (type, zone).
  - When a volume matches I(volume_filters), only its zone qualifies (EBS volumes live in one zone).
  - Changes nothing; runs in check mode. No amazon.aws module reads spot prices.
options:
  instance_types:
    description: Acceptable instance types, in order of preference for equal prices.
    type: list
    elements: str
    required: true
  max_price:
    description: Highest acceptable price in USD per hour; empty for none.
    type: float
  volume_filters:
    description: EC2 filters that find this box's data volume, if it exists.
    type: dict
  on_demand_prices:
    description: On-demand USD/hour per type, to override the recorded table.
    type: dict
    default: {}
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
author: spotbox
"""

EXAMPLES = r"""
- name: Choose the cheapest GPU offer
  spot_offer_info:
    region: us-east-2
    instance_types: [g4dn.xlarge, g5.xlarge]
    max_price: 0.5
  register: offer
"""

RETURN = r"""
choice:
  description: The chosen offer.
  returned: success
  type: dict
  sample: {"instance_type": "g4dn.xlarge", "zone": "us-east-2b", "spot_price": 0.2236,
           "on_demand_price": 0.526, "saving_percent": 57.5, "eligible": true}
table:
  description: Every offer, cheapest first, with eligible false for those excluded.
  returned: success
  type: list
  elements: dict
table_lines:
  description: The same as a printable table.
  returned: success
  type: list
  elements: str
gpus:
  description: GPU description per type (1x NVIDIA T4).
  returned: success
  type: dict
volume:
  description: The existing data volume (id, zone, size, state), or null.
  returned: always
  type: dict
"""

import contextlib
from datetime import UTC, datetime

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

from ansible.module_utils.spotbox_spot import (
    ON_DEMAND_USD_PER_HOUR,
    SpotError,
    choose,
    format_table,
    gpu_check,
    latest_prices,
)
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

NO_CREDENTIALS = (
    "no AWS credentials found. Configure them with `aws configure` (or set AWS_PROFILE, or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) for an IAM user allowed to use EC2"
)


def describe_types(module, client, types: list[str]) -> list[dict]:
    try:
        return client.describe_instance_types(InstanceTypes=types, aws_retry=True)["InstanceTypes"]
    except botocore.exceptions.ClientError as exc:
        if exc.response["Error"]["Code"] == "InvalidInstanceType":
            module.fail_json(msg=f"spot_instance_types: {exc.response['Error']['Message']} "
                             f"in region {module.region}; check the names (like g4dn.xlarge) "
                             "or choose another region")
        raise


def find_volume(client, filters: dict | None) -> dict | None:
    if not filters:
        return None
    ec2_filters = [{"Name": k, "Values": v if isinstance(v, list) else [str(v)]}
                   for k, v in filters.items()]
    volumes = client.describe_volumes(Filters=ec2_filters, aws_retry=True)["Volumes"]
    volumes = [v for v in volumes if v["State"] != "deleting"]
    if len(volumes) > 1:
        ids = ", ".join(v["VolumeId"] for v in volumes)
        raise SpotError(f"several data volumes match {filters}: {ids}; keep one")
    if not volumes:
        return None
    vol = volumes[0]
    return {"id": vol["VolumeId"], "zone": vol["AvailabilityZone"], "size": vol["Size"],
            "state": vol["State"]}


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "instance_types": {"type": "list", "elements": "str", "required": True},
            "max_price": {"type": "float"},
            "volume_filters": {"type": "dict"},
            "on_demand_prices": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    types = module.params["instance_types"]
    max_price = module.params["max_price"]
    if not types:
        module.fail_json(msg="spot_instance_types is empty; give at least one GPU instance type")
    if max_price is not None and max_price <= 0:
        module.fail_json(msg=f"spot_instance_max_price must be a positive USD/hour price "
                         f"(like 0.5) or empty, not {max_price}")
    client = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    try:
        gpus = gpu_check(describe_types(module, client, types), types)
        volume = find_volume(client, module.params["volume_filters"])
        history = client.describe_spot_price_history(
            InstanceTypes=types, StartTime=datetime.now(UTC),
            ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"], aws_retry=True,
        )["SpotPriceHistory"]
        on_demand = {**ON_DEMAND_USD_PER_HOUR,
                     **{k: float(v) for k, v in module.params["on_demand_prices"].items()}}
        result = choose(latest_prices(history), types,
                        zones=[volume["zone"]] if volume else None,
                        max_price=max_price, on_demand=on_demand)
    except SpotError as exc:
        module.fail_json(msg=str(exc))
    except botocore.exceptions.NoCredentialsError:
        module.fail_json(msg=NO_CREDENTIALS)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        module.fail_json_aws(exc, msg="could not read instance types or spot prices")
    module.exit_json(changed=False, choice=result["choice"], table=result["table"],
                     table_lines=format_table(result["table"]), gpus=gpus, volume=volume)


if __name__ == "__main__":
    main()
