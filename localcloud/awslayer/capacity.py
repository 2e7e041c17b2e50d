"""Capacity a (type, zone) does not have, switched off with ``capacity off TYPE ZONE``.

"If you get this error when you try to launch an instance or restart a
stopped instance, AWS does not currently have enough available On-Demand
capacity to fulfill your request." and, among the remedies, "If you're
launching an instance, submit a new request without specifying an
Availability Zone." (EC2 User Guide, troubleshooting-launch.html,
"Insufficient instance capacity"). The answer's text, seen verbatim in public reports
(runs-on/runs-on#73, scylladb/scylla-cluster-tests#5119,
red-hat-storage/ocs-ci#9263, which also shows HTTP 500): "We currently do not
have sufficient m6i.xlarge capacity in the Availability Zone you requested
(us-east-2a). Our system will be working on provisioning additional capacity.
You can currently get m6i.xlarge capacity by not specifying an Availability
Zone in your request or choosing us-east-2b, us-east-2c."
"""

from __future__ import annotations

from typing import Any

from . import core, launch


def is_off(layer: core.Layer, instance_type: str, zone: str) -> bool:
    return [instance_type, zone] in layer.switches()["capacity_off"]


def zones(layer: core.Layer, region: str) -> list[str]:
    key = ("zones", region)
    with layer.lock:
        if key not in layer.memory:
            found = layer.moto.client("ec2", region).describe_availability_zones()
            layer.memory[key] = sorted(z["ZoneName"] for z in found["AvailabilityZones"])
        return layer.memory[key]


def shortage_message(instance_type: str, zone: str, others: list[str]) -> str:
    text = (f"We currently do not have sufficient {instance_type} capacity in the Availability "
            f"Zone you requested ({zone}). Our system will be working on provisioning "
            "additional capacity.")
    if others:
        text += (f" You can currently get {instance_type} capacity by not specifying an "
                 f"Availability Zone in your request or choosing {', '.join(others)}.")
    return text


@launch.check(order=40)
def capacity(layer: core.Layer, call: core.Call, spec: dict[str, Any]) -> None:
    instance_type = spec.get("InstanceType") or "m1.small"
    zone = spec["_zone"]
    if not is_off(layer, instance_type, zone):
        return
    others = [z for z in zones(layer, call.region)
              if z != zone and not is_off(layer, instance_type, z)]
    if not spec["_zone_given"] and others:
        # No zone asked for: EC2 places the instance where there is capacity.
        call.form["Placement.AvailabilityZone"] = others[0]
        call.notes["form_changed"] = True
        spec["_zone"] = others[0]
        return
    raise core.AwsError("InsufficientInstanceCapacity",
                        shortage_message(instance_type, zone, others), 500, sender=False)
