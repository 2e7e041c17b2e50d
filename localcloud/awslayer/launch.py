"""RunInstances as the rules see it: the request merged over its launch template.

Rule modules register checks with ``@check(order)``; one RunInstances hook
runs them in that order, as EC2 validates a launch before it places it:
parameters first, then the image and network, then capacity, the spot
service-linked role and the quota.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from . import core

CHECKS: list[tuple[int, Callable[..., Any]]] = []


def check(order: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        CHECKS.append((order, func))
        CHECKS.sort(key=lambda pair: pair[0])
        return func
    return register


@core.before("ec2", "RunInstances")
def run_checks(layer: core.Layer, call: core.Call) -> core.Reply | None:
    if call.params().get("DryRun"):
        return None  # a dry run checks permissions only (the IAM guard); moto answers it
    spec = launch_spec(layer, call)
    for _, func in CHECKS:
        func(layer, call, spec)
    params = call.params()
    zone = (spec.get("Placement") or {}).get("AvailabilityZone")
    if zone and params.get("LaunchTemplate") and not (params.get("Placement") or {}).get(
            "AvailabilityZone") and not spec.get("SubnetId"):
        # moto ignores a launch template's Placement; EC2 launches in its zone.
        call.form["Placement.AvailabilityZone"] = zone
        call.notes["form_changed"] = True
    if params.get("LaunchTemplate") and spec.get("NetworkInterfaces") and not params.get(
            "NetworkInterfaces"):
        # moto ignores a launch template's NetworkInterfaces (it then asks for a
        # default VPC); EC2 launches into the template's subnet and groups.
        flat = core.ec2_form("RunInstances", {"MinCount": 1, "MaxCount": 1,
                                              "NetworkInterfaces": spec["NetworkInterfaces"]})
        call.form.update({k: v for k, v in flat.items() if k.startswith("NetworkInterface.")})
        call.notes["form_changed"] = True
    return None


def template_data(layer: core.Layer, region: str, template: dict[str, Any]) -> dict[str, Any]:
    """The launch template version RunInstances names, as moto stores it ({} if none)."""
    args: dict[str, Any] = {"Versions": [str(template.get("Version") or "$Default")]}
    if template.get("LaunchTemplateId"):
        args["LaunchTemplateId"] = template["LaunchTemplateId"]
    elif template.get("LaunchTemplateName"):
        args["LaunchTemplateName"] = template["LaunchTemplateName"]
    else:
        return {}
    try:
        versions = layer.moto.client("ec2", region).describe_launch_template_versions(**args)
    except Exception:
        return {}  # moto answers the unknown template itself when the call goes on
    found = versions.get("LaunchTemplateVersions") or [{}]
    return found[0].get("LaunchTemplateData", {})


def launch_spec(layer: core.Layer, call: core.Call) -> dict[str, Any]:
    """The launch as EC2 carries it out: template values, overridden by the request's.

    RunInstances: "Any additional parameters that you specify for the new
    instance overwrite the corresponding parameters included in the launch
    template" (botocore RunInstancesRequest.LaunchTemplate). Tags merge.
    """
    if "spec" in call.notes:
        return call.notes["spec"]
    params = call.params()
    spec = copy.deepcopy(template_data(layer, call.region, params.get("LaunchTemplate") or {}))
    template_tags = spec.get("TagSpecifications", [])
    spec.update({k: copy.deepcopy(v) for k, v in params.items() if k != "LaunchTemplate"})
    if template_tags and params.get("TagSpecifications"):
        spec["TagSpecifications"] = template_tags + params["TagSpecifications"]
    spec["_zone"], spec["_zone_given"] = zone_of(layer, call.region, spec)
    call.notes["spec"] = spec
    return spec


def zone_of(layer: core.Layer, region: str, spec: dict[str, Any]) -> tuple[str, bool]:
    """The zone the instance lands in, and whether the request chose it."""
    zone = (spec.get("Placement") or {}).get("AvailabilityZone")
    if zone:
        return zone, True
    subnets = [spec.get("SubnetId")] + [nic.get("SubnetId")
                                        for nic in spec.get("NetworkInterfaces") or []]
    for subnet in filter(None, subnets):
        try:
            found = layer.moto.client("ec2", region).describe_subnets(SubnetIds=[subnet])
            return found["Subnets"][0]["AvailabilityZone"], True
        except Exception:
            break  # moto answers the unknown subnet itself
    # Neither: moto places the instance in the region's first zone.
    return f"{region}a", False


def market_options(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The spot options of a spot launch (with EC2's defaults), None for on-demand."""
    market = spec.get("InstanceMarketOptions") or {}
    if market.get("MarketType") != "spot":
        return None
    options = dict(market.get("SpotOptions") or {})
    options.setdefault("SpotInstanceType", "one-time")
    options.setdefault("InstanceInterruptionBehavior", "terminate")
    return options


def instance_count(spec: dict[str, Any]) -> int:
    # moto launches MinCount instances; so does EC2 when only that many fit.
    return int(spec.get("MinCount") or 1)
