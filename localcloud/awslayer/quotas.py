"""Spot vCPU quotas: Service Quotas answers them, RunInstances obeys them.

"Spot Instance quotas are managed in terms of the number of virtual central
processing units (vCPUs) that your running Spot Instances are either using
or will use pending the fulfillment of open Spot Instance requests." (EC2
User Guide, using-spot-limits.html). Its table gives the defaults: "All G
and VT Spot Instance Requests | 0", "All Standard (A, C, D, H, I, M, R, T,
Z) Spot Instance Requests | 5", P: 0. Over the quota RunInstances answers
"the error Max spot instance count exceeded" (same page):
MaxSpotInstanceCountExceeded.
"""

from __future__ import annotations

import re
from typing import Any

from . import core, launch

# Quota code -> (name, AWS default, family test). Others pass to moto.
SPOT_QUOTAS: dict[str, tuple[str, float]] = {
    "L-3819A6DF": ("All G and VT Spot Instance Requests", 0.0),
    "L-7212CCBC": ("All P Spot Instance Requests", 0.0),
    "L-34B43A08": ("All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests", 5.0),
}
USAGE_CLASS = {"L-3819A6DF": "G/Spot", "L-7212CCBC": "P/Spot", "L-34B43A08": "Standard/Spot"}
SERVICE_NAME = "Amazon Elastic Compute Cloud (Amazon EC2)"


def quota_code(instance_type: str) -> str | None:
    """The spot quota an instance type counts against (None: one the layer does not model)."""
    family = re.match(r"[a-z]+", instance_type or "")
    letters = family.group(0) if family else ""
    if letters.startswith(("dl", "inf", "trn")) or letters.startswith(("f", "x", "u", "mac")):
        return None  # DL, Inf, Trn, F, X, high-memory: quotas the layer leaves open
    if letters.startswith(("g", "vt")):
        return "L-3819A6DF"
    if letters.startswith("p"):
        return "L-7212CCBC"
    if letters[:1] in set("acdhimrtz"):
        return "L-34B43A08"
    return None


def quota_value(layer: core.Layer, code: str) -> float:
    values = layer.switches()["quotas"]
    return float(values.get(code, SPOT_QUOTAS[code][1]))


def vcpus(layer: core.Layer, region: str, instance_type: str) -> int | None:
    """DescribeInstanceTypes' DefaultVCpus from moto; None for a type moto does not offer."""
    key = ("vcpus", region, instance_type)
    with layer.lock:
        if key not in layer.memory:
            try:
                found = layer.moto.client("ec2", region).describe_instance_types(
                    InstanceTypes=[instance_type])["InstanceTypes"]
            except Exception:
                found = []
            layer.memory[key] = found[0]["VCpuInfo"]["DefaultVCpus"] if found else None
        return layer.memory[key]


def spot_vcpus_in_use(layer: core.Layer, region: str, code: str) -> int:
    """vCPUs of the region's pending/running spot instances and open requests under a quota."""
    from . import spot

    ec2 = layer.moto.client("ec2", region)
    live = ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    ours = spot.instance_ids(layer)
    used = 0
    for reservation in live["Reservations"]:
        for instance in reservation["Instances"]:
            is_spot = (instance.get("InstanceLifecycle") == "spot"
                       or instance["InstanceId"] in ours)
            if is_spot and quota_code(instance["InstanceType"]) == code:
                used += vcpus(layer, region, instance["InstanceType"]) or 0
    for request in spot.open_requests(layer, region):
        if quota_code(request["instance_type"]) == code:
            used += vcpus(layer, region, request["instance_type"]) or 0
    return used


@launch.check(order=60)
def spot_quota(layer: core.Layer, call: core.Call, spec: dict[str, Any]) -> None:
    if launch.market_options(spec) is None:
        return
    instance_type = spec.get("InstanceType") or "m1.small"
    code, each = quota_code(instance_type), vcpus(layer, call.region, instance_type)
    if code is None or each is None:
        return  # a type moto does not offer: moto answers the launch itself
    wanted = each * launch.instance_count(spec)
    in_use = spot_vcpus_in_use(layer, call.region, code)
    if in_use + wanted > quota_value(layer, code):
        raise core.AwsError("MaxSpotInstanceCountExceeded", "Max spot instance count exceeded")


def quota_answer(layer: core.Layer, call: core.Call, code: str, default: bool) -> dict[str, Any]:
    name, aws_default = SPOT_QUOTAS[code]
    account = "" if default else _account(layer)
    return {"Quota": {
        "ServiceCode": "ec2",
        "ServiceName": SERVICE_NAME,
        "QuotaArn": f"arn:aws:servicequotas:{call.region}:{account}:ec2/{code}",
        "QuotaCode": code,
        "QuotaName": name,
        "Value": aws_default if default else quota_value(layer, code),
        "Unit": "None",
        "Adjustable": True,
        "GlobalQuota": False,
        "UsageMetric": {
            "MetricNamespace": "AWS/Usage",
            "MetricName": "ResourceCount",
            "MetricDimensions": {"Class": USAGE_CLASS[code], "Resource": "vCPU",
                                 "Service": "EC2", "Type": "Resource"},
            "MetricStatisticRecommendation": "Maximum",
        },
    }}


def _account(layer: core.Layer) -> str:
    from . import iam

    return iam.account_id(layer)


# GetServiceQuota: "Retrieves the applied quota value for the specified
# account-level or resource-level quota. For some quotas, only the default
# values are available." (botocore service-quotas GetServiceQuota). EC2's
# vCPU quotas are applied in every account, so the layer answers the
# account's value, never NoSuchResourceException, for the three it models.
@core.before("servicequotas", "GetServiceQuota")
def get_service_quota(layer: core.Layer, call: core.Call) -> core.Reply | None:
    body = call.json_body
    if body.get("ServiceCode") == "ec2" and body.get("QuotaCode") in SPOT_QUOTAS:
        return core.json_reply(quota_answer(layer, call, body["QuotaCode"], default=False))
    return None  # moto answers the others


# GetAWSDefaultServiceQuota: "Retrieves the default value for the specified
# quota. The default value does not reflect any quota increases."
@core.before("servicequotas", "GetAWSDefaultServiceQuota")
def get_default_quota(layer: core.Layer, call: core.Call) -> core.Reply | None:
    body = call.json_body
    if body.get("ServiceCode") == "ec2" and body.get("QuotaCode") in SPOT_QUOTAS:
        return core.json_reply(quota_answer(layer, call, body["QuotaCode"], default=True))
    return None
