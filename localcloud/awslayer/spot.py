"""Spot requests for RunInstances launches, and the rules of their lifecycle.

moto creates no spot request for RunInstances with InstanceMarketOptions and
does not mark a launch template's spot instance as spot. The layer records
a request ``sir-…`` per spot instance and keeps it in the states the EC2 User
Guide gives (spot-requests.html, spot-request-status.html):

* "active": fulfilled, its instance runs; "disabled": "You stopped the Spot
  Instance"; "open" again after the instance of a persistent request is
  terminated ("If you terminate a running or stopped Spot Instance that was
  launched by a persistent Spot Instance request, the Spot Instance request
  transitions to the open state so that a new Spot Instance can be
  launched"); "closed" when a one-time request's instance ends;
  "cancelled" after CancelSpotInstanceRequests.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from typing import Any

from . import core, launch

STATUS = {
    # code: its description in the EC2 User Guide (spot-request-status.md, "Spot
    # request status codes"); AWS's own status messages may be worded otherwise.
    "fulfilled": "The Spot request is active, and Amazon EC2 is launching your Spot Instances.",
    "pending-evaluation": "After you make a Spot Instance request, it goes into the "
                          "pending-evaluation state while the system evaluates the parameters "
                          "of your request.",
    "instance-stopped-by-user": "Your instance was stopped because a user stopped the instance "
                                "or ran the shutdown command from the instance.",
    "instance-terminated-by-user": "You terminated a Spot Instance that had been fulfilled, so "
                                   "the request state is closed (unless it's a persistent "
                                   "request) and the instance state is terminated.",
    "instance-terminated-by-service": "Your instance was terminated from a stopped state.",
    "request-canceled-and-instance-running": "You canceled the Spot request while the Spot "
                                             "Instances are still running. The request is "
                                             "cancelled, but the instances remain running.",
    "canceled-before-fulfillment": "The user canceled the Spot request before it was "
                                   "fulfilled.",
    "instance-stopped-no-capacity": "Your instance was stopped due to EC2 capacity management "
                                    "needs.",
    "instance-terminated-no-capacity": "Your instance was terminated due to standard capacity "
                                       "management processes.",
}


def book(layer: core.Layer) -> dict[str, dict[str, Any]]:
    """The layer's spot requests by id (kept in memory; a moto reset empties it)."""
    return layer.memory.setdefault("spot", {})


def instance_ids(layer: core.Layer) -> dict[str, str]:
    """Instance id -> request id, for the requests the layer keeps."""
    with layer.lock:
        return {r["InstanceId"]: rid for rid, r in book(layer).items() if r.get("InstanceId")}


def open_requests(layer: core.Layer, region: str) -> list[dict[str, Any]]:
    with layer.lock:
        return [r for r in book(layer).values() if r["region"] == region and r["State"] == "open"]


def set_state(record: dict[str, Any], state: str, code: str) -> None:
    record["State"] = state
    record["Status"] = {"Code": code, "Message": STATUS[code], "UpdateTime": core.now()}


# ------------------------------------------------------------ launch rules

# "For RunInstances, persistent Spot Instance requests are only supported
# when the instance interruption behavior is either hibernate or stop."
# (botocore ec2 SpotMarketOptions.SpotInstanceType). EC2 User Guide: "the
# default is Terminate, which is not valid for a persistent Spot Instance
# request. If you keep the default and try to launch a persistent Spot
# Instance request, you'll get an error" (spot-requests.md). The text AWS
# answers: "The terminate InstanceInterruptionBehavior is not supported when
# requestType is set to persistent." (pahud/cdk-spot-one#206); its sibling
# "The request with type 'one-time' is not supported when
# instanceInterruptionBehavior is set to 'stop'." comes as
# InvalidParameterCombination (harmony-one/harmony-ops#285).
@launch.check(order=10)
def request_type_fits_behaviour(layer: core.Layer, call: core.Call,
                                spec: dict[str, Any]) -> None:
    options = launch.market_options(spec)
    if options is None:
        return
    kind, behaviour = options["SpotInstanceType"], options["InstanceInterruptionBehavior"]
    if kind == "persistent" and behaviour == "terminate":
        raise core.AwsError(
            "InvalidParameterCombination",
            "The terminate InstanceInterruptionBehavior is not supported when requestType is "
            "set to persistent.")
    if kind == "one-time" and behaviour in ("stop", "hibernate"):
        raise core.AwsError(
            "InvalidParameterCombination",
            f"The request with type 'one-time' is not supported when "
            f"instanceInterruptionBehavior is set to '{behaviour}'.")


@core.after("ec2", "RunInstances")
def record_requests(layer: core.Layer, call: core.Call, reply: core.Reply) -> core.Reply:
    spec = launch.launch_spec(layer, call)
    options = launch.market_options(spec)
    if options is None:
        return reply
    root = core.parse_xml(reply.body)
    instances = root.find(core.q("instancesSet"))
    for item in instances if instances is not None else []:
        instance_id = item.findtext(core.q("instanceId"))
        rid = new_request(layer, call, spec, options, instance_id)
        mark_spot(item, rid)
    return core.Reply(reply.status, core.xml_bytes(root), reply.headers)


def new_request(layer: core.Layer, call: core.Call, spec: dict[str, Any],
                options: dict[str, Any], instance_id: str) -> str:
    rid = f"sir-{secrets.token_hex(4)}"
    tags = [tag for ts in spec.get("TagSpecifications") or []
            if ts.get("ResourceType") == "spot-instances-request" for tag in ts.get("Tags") or []]
    relaunch = {k: v for k, v in copy.deepcopy(call.params()).items() if k != "ClientToken"}
    relaunch["MinCount"] = relaunch["MaxCount"] = 1
    if "Placement" not in relaunch:
        relaunch["Placement"] = {"AvailabilityZone": spec["_zone"]}
    launch_spec = {"ImageId": spec.get("ImageId"), "KeyName": spec.get("KeyName"),
                   "InstanceType": spec.get("InstanceType") or "m1.small",
                   "Placement": {"AvailabilityZone": spec["_zone"]}}
    record = {
        "SpotInstanceRequestId": rid,
        "SpotPrice": options.get("MaxPrice"),
        "Type": options["SpotInstanceType"],
        "InstanceInterruptionBehavior": options["InstanceInterruptionBehavior"],
        "ValidUntil": options.get("ValidUntil"),
        "LaunchSpecification": {k: v for k, v in launch_spec.items() if v},
        "InstanceId": instance_id,
        "CreateTime": core.now(),
        "ProductDescription": "Linux/UNIX",
        "LaunchedAvailabilityZone": spec["_zone"],
        "Tags": tags,
        "region": call.region,
        "instance_type": launch_spec["InstanceType"],
        "relaunch": relaunch,
    }
    set_state(record, "active", "fulfilled")
    with layer.lock:
        book(layer)[rid] = record
    return rid


def mark_spot(item, rid: str) -> None:
    """Give an instance element the lifecycle and request id AWS shows for spot."""
    for name, value in (("instanceLifecycle", "spot"), ("spotInstanceRequestId", rid)):
        elem = item.find(core.q(name))
        if elem is None:
            elem = core.ET.SubElement(item, core.q(name))
        elem.text = value


SPOT_FILTERS = ("instance-lifecycle", "spot-instance-request-id")


@core.before("ec2", "DescribeInstances")
def take_spot_filters(layer: core.Layer, call: core.Call) -> None:
    """Apply the spot filters after moto answers: moto does not know the layer's spot instances."""
    filters = call.params().get("Filters") or []
    taken = [f for f in filters if f["Name"] in SPOT_FILTERS]
    if not taken:
        return
    call.notes["spot_filters"] = taken
    kept = {k: v for k, v in call.form.items() if not k.startswith("Filter.")}
    for index, flt in enumerate([f for f in filters if f["Name"] not in SPOT_FILTERS], 1):
        kept[f"Filter.{index}.Name"] = flt["Name"]
        for number, value in enumerate(flt.get("Values") or [], 1):
            kept[f"Filter.{index}.Value.{number}"] = value
    call.form.clear()
    call.form.update(kept)
    call.notes["form_changed"] = True


@core.after("ec2", "DescribeInstances")
def show_spot_instances(layer: core.Layer, call: core.Call, reply: core.Reply) -> core.Reply:
    ours = instance_ids(layer)
    taken = call.notes.get("spot_filters")
    if not ours and not taken:
        return reply
    root = core.parse_xml(reply.body)
    for item in root.iter(core.q("item")):
        instance_id = item.findtext(core.q("instanceId"))
        if instance_id in ours and item.find(core.q("instanceState")) is not None:
            mark_spot(item, ours[instance_id])
    if taken:
        keep_matching(root, taken)
    return core.Reply(reply.status, core.xml_bytes(root), reply.headers)


def keep_matching(root, taken: list[dict[str, Any]]) -> None:
    """Drop instances (and emptied reservations) the spot filters do not match."""
    fields = {"instance-lifecycle": "instanceLifecycle",
              "spot-instance-request-id": "spotInstanceRequestId"}
    reservations = root.find(core.q("reservationSet"))
    for reservation in list(reservations if reservations is not None else []):
        instances = reservation.find(core.q("instancesSet"))
        for item in list(instances if instances is not None else []):
            for flt in taken:
                have = item.findtext(core.q(fields[flt["Name"]])) or ""
                if not any(_glob(v, have) for v in flt.get("Values") or []):
                    instances.remove(item)
                    break
        if instances is None or len(instances) == 0:
            reservations.remove(reservation)


# ---------------------------------------------------- instance lifecycle

def listed(form: dict[str, str], name: str) -> list[str]:
    values, index = [], 1
    while f"{name}.{index}" in form:
        values.append(form[f"{name}.{index}"])
        index += 1
    return values


def requests_of(layer: core.Layer, instance_list: list[str]) -> list[dict[str, Any]]:
    ours = instance_ids(layer)
    with layer.lock:
        return [book(layer)[ours[i]] for i in instance_list if i in ours]


# "You can't stop the Spot Instance 'i-…' because it is associated with a
# one-time Spot Instance request. You can only stop Spot Instances associated
# with persistent Spot Instance requests." (UnsupportedOperation, quoted in
# diodonfrost/terraform-aws-lambda-scheduler-stop-start#8). EC2 User Guide:
# "You can only stop a Spot Instance if the Spot Instance was launched from a
# persistent Spot Instance request" (spot-requests.md).
@core.before("ec2", "StopInstances")
def one_time_cannot_stop(layer: core.Layer, call: core.Call) -> None:
    for record in requests_of(layer, listed(call.form, "InstanceId")):
        if record["Type"] == "one-time":
            raise core.AwsError(
                "UnsupportedOperation",
                f"You can't stop the Spot Instance '{record['InstanceId']}' because it is "
                "associated with a one-time Spot Instance request. You can only stop Spot "
                "Instances associated with persistent Spot Instance requests.")


@core.after("ec2", "StopInstances")
def stopped_is_disabled(layer: core.Layer, call: core.Call, reply: core.Reply) -> None:
    with layer.lock:
        for record in requests_of(layer, listed(call.form, "InstanceId")):
            if record["State"] == "active":
                set_state(record, "disabled", "instance-stopped-by-user")


@core.after("ec2", "StartInstances")
def started_is_active(layer: core.Layer, call: core.Call, reply: core.Reply) -> None:
    with layer.lock:
        for record in requests_of(layer, listed(call.form, "InstanceId")):
            if record["State"] == "disabled":
                set_state(record, "active", "fulfilled")


@core.after("ec2", "TerminateInstances")
def terminated(layer: core.Layer, call: core.Call, reply: core.Reply) -> None:
    with layer.lock:
        for record in requests_of(layer, listed(call.form, "InstanceId")):
            if record["State"] in ("cancelled", "closed"):
                record["Status"]["Code"] = "instance-terminated-by-user"
                record["Status"]["Message"] = STATUS["instance-terminated-by-user"]
                continue
            if record["Type"] == "one-time":
                set_state(record, "closed", "instance-terminated-by-user")
                continue
            set_state(record, "open", "pending-evaluation")
            record["InstanceId"] = None
            delay = layer.switches()["spot_relaunch_delay"]
            threading.Thread(target=relaunch, args=(layer, record["SpotInstanceRequestId"], delay),
                             daemon=True).start()


def relaunch(layer: core.Layer, rid: str, delay: float) -> None:
    """Fulfil an open persistent request again: a new instance from its launch spec."""
    time.sleep(delay)
    with layer.lock:
        record = book(layer).get(rid)
        if record is None or record["State"] != "open":
            return  # cancelled meanwhile
        ec2 = layer.moto.client("ec2", record["region"])
        launched = ec2.run_instances(**record["relaunch"])
        record["InstanceId"] = launched["Instances"][0]["InstanceId"]
        set_state(record, "active", "fulfilled")


# "You can't change the instance type of a Spot Instance" (EC2 User Guide,
# ec2-instance-resize.md; stop-spot-instances.md). AWS's code and text for it
# are not documented; the layer answers UnsupportedOperation in the shape EC2
# uses for the like refusal "Modifying 'disableApiTermination' is not
# supported for spot instances." (cloud-custodian/cloud-custodian#2083).
@core.before("ec2", "ModifyInstanceAttribute")
def spot_type_is_fixed(layer: core.Layer, call: core.Call) -> None:
    form = call.form
    changes_type = "InstanceType.Value" in form or form.get("Attribute") == "instanceType"
    if changes_type and requests_of(layer, [form.get("InstanceId", "")]):
        raise core.AwsError("UnsupportedOperation",
                            "Modifying 'instanceType' is not supported for spot instances.")


# -------------------------------------------------------- request API

def matches(record: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
    """DescribeSpotInstanceRequests filters the layer honours for its own requests."""
    tags = {t["Key"]: t.get("Value", "") for t in record["Tags"]}
    for flt in filters:
        name, values = flt["Name"], flt.get("Values") or []
        if name == "state":
            have = [record["State"]]
        elif name == "instance-id":
            have = [record.get("InstanceId") or ""]
        elif name == "spot-instance-request-id":
            have = [record["SpotInstanceRequestId"]]
        elif name == "type":
            have = [record["Type"]]
        elif name == "status-code":
            have = [record["Status"]["Code"]]
        elif name == "tag-key":
            have = list(tags)
        elif name.startswith("tag:"):
            key = name[4:]
            have = [tags[key]] if key in tags else []
        else:
            continue  # a filter the layer does not model narrows nothing
        if not any(_glob(v, h) for v in values for h in have):
            return False
    return True


def _glob(pattern: str, value: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(value, pattern)  # EC2 filters take * and ? wildcards


def public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v is not None and k[0].isupper()}


@core.before("ec2", "DescribeSpotInstanceRequests")
def describe_requests(layer: core.Layer, call: core.Call) -> core.Reply | None:
    params = call.params()
    asked = params.get("SpotInstanceRequestIds") or []
    with layer.lock:
        ours = [public(r) for r in book(layer).values()
                if r["region"] == call.region and (not asked or r["SpotInstanceRequestId"] in asked)
                and matches(r, params.get("Filters") or [])]
    call.notes["spot_ours"] = ours
    moto_ids = [i for i in asked if i not in book(layer)]
    if asked and not moto_ids:
        return core.ec2_answer("DescribeSpotInstanceRequests", {"SpotInstanceRequests": ours})
    if asked:
        for key in [k for k in call.form if k.startswith("SpotInstanceRequestId.")]:
            del call.form[key]
        for index, rid in enumerate(moto_ids, 1):
            call.form[f"SpotInstanceRequestId.{index}"] = rid
        call.notes["form_changed"] = True
    return None


@core.after("ec2", "DescribeSpotInstanceRequests")
def add_our_requests(layer: core.Layer, call: core.Call, reply: core.Reply) -> core.Reply:
    ours = call.notes.get("spot_ours") or []
    if not ours:
        return reply
    root = core.parse_xml(reply.body)
    found = root.find(core.q("spotInstanceRequestSet"))
    if found is None:
        found = core.ET.SubElement(root, core.q("spotInstanceRequestSet"))
    shape = core.service_model("ec2").shape_for("SpotInstanceRequest")
    for record in ours:
        found.append(core.to_xml(shape, record, "item"))
    return core.Reply(reply.status, core.xml_bytes(root), reply.headers)


# "If you cancel a disabled Spot Instance request that has a stopped Spot
# Instance, the stopped Spot Instance is automatically terminated"; "Canceling
# a Spot Instance request does not terminate running Spot Instances
# associated with the request." (EC2 User Guide, spot-requests.md and the
# CancelSpotInstanceRequests API reference).
@core.before("ec2", "CancelSpotInstanceRequests")
def cancel_requests(layer: core.Layer, call: core.Call) -> core.Reply | None:
    asked = listed(call.form, "SpotInstanceRequestId")
    cancelled = []
    with layer.lock:
        mine = [book(layer)[i] for i in asked if i in book(layer)]
        for record in mine:
            if record["State"] == "disabled":
                layer.moto.client("ec2", record["region"]).terminate_instances(
                    InstanceIds=[record["InstanceId"]])
                # "instance-terminated-by-service: Your instance was terminated from a
                # stopped state", request state cancelled (spot-request-status.md).
                set_state(record, "cancelled", "instance-terminated-by-service")
            elif record["State"] == "active":
                set_state(record, "cancelled", "request-canceled-and-instance-running")
            elif record["State"] == "open":
                set_state(record, "cancelled", "canceled-before-fulfillment")
            cancelled.append({"SpotInstanceRequestId": record["SpotInstanceRequestId"],
                              "State": record["State"]})
    others = [i for i in asked if i not in book(layer)]
    call.notes["spot_cancelled"] = cancelled
    if not others:
        return core.ec2_answer("CancelSpotInstanceRequests",
                               {"CancelledSpotInstanceRequests": cancelled})
    for key in [k for k in call.form if k.startswith("SpotInstanceRequestId.")]:
        del call.form[key]
    for index, rid in enumerate(others, 1):
        call.form[f"SpotInstanceRequestId.{index}"] = rid
    call.notes["form_changed"] = True
    return None


@core.after("ec2", "CancelSpotInstanceRequests")
def add_our_cancellations(layer: core.Layer, call: core.Call, reply: core.Reply) -> core.Reply:
    cancelled = call.notes.get("spot_cancelled") or []
    if not cancelled:
        return reply
    root = core.parse_xml(reply.body)
    found = root.find(core.q("spotInstanceRequestSet"))
    if found is None:
        found = core.ET.SubElement(root, core.q("spotInstanceRequestSet"))
    shape = core.service_model("ec2").shape_for("CancelledSpotInstanceRequest")
    for entry in cancelled:
        found.append(core.to_xml(shape, entry, "item"))
    return core.Reply(reply.status, core.xml_bytes(root), reply.headers)


# ------------------------------------------------------- interruptions

# What EC2 does when it interrupts a spot instance, for the local cloud's
# interruption stand-in (POST /localcloud-awslayer/interrupt {"instance_id",
# "action": "stop" | "hibernate" | "terminate", "region"}). EC2 User Guide,
# spot-request-status.md: "instance-stopped-no-capacity | disabled | stopped";
# "instance-terminated-no-capacity | closed (one-time), open (persistent) |
# terminated"; "When your Spot Instances are terminated (either by you or Amazon
# EC2), if the Spot request is a persistent request, it returns to the
# pending-evaluation state and then Amazon EC2 can launch a new Spot Instance".
# Hibernation is not modelled: it stops the instance (the review, §2: without its
# prerequisites "Amazon EC2 stops the instance instead").
def interrupt(layer: core.Layer, body: dict[str, Any]) -> dict[str, Any]:
    instance_id, action = body["instance_id"], body.get("action", "terminate")
    if action not in ("stop", "hibernate", "terminate"):
        raise ValueError(f"action must be stop, hibernate or terminate, not {action!r}")
    ours = instance_ids(layer)
    with layer.lock:
        record = book(layer).get(ours.get(instance_id, ""))
    region = record["region"] if record else body.get("region", "us-east-2")
    ec2 = layer.moto.client("ec2", region)
    if action == "terminate":
        ec2.terminate_instances(InstanceIds=[instance_id])
    else:
        ec2.stop_instances(InstanceIds=[instance_id])
    if record is None:
        return {"instance_id": instance_id, "action": action, "request": None}
    with layer.lock:
        if action != "terminate":
            set_state(record, "disabled", "instance-stopped-no-capacity")
        elif record["Type"] == "one-time":
            set_state(record, "closed", "instance-terminated-no-capacity")
        else:
            set_state(record, "open", "instance-terminated-no-capacity")
            record["InstanceId"] = None
            threading.Thread(target=relaunch, daemon=True, args=(
                layer, record["SpotInstanceRequestId"],
                layer.switches()["spot_relaunch_delay"])).start()
        request = {"id": record["SpotInstanceRequestId"], "state": record["State"],
                   "status": record["Status"]["Code"]}
    return {"instance_id": instance_id, "action": action, "request": request}


core.INTERNAL["interrupt"] = interrupt
