#!/usr/bin/python
"""Ansible module: launch the box's spot instance from its launch template, or find it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_instance_launch
short_description: Launch a box's spot instance from its launch template, trying offers in order
description:
  - Finds the box's instance by its tags (name and owner, matched exactly), in any state but
    terminated. A running one is returned as it is (its type and zone are never changed, as EC2
    cannot change a spot instance's type). A stopped one is started when the user stopped it;
    one that AWS stopped (a spot interruption) is left to AWS, which restarts it when capacity
    returns, and the module says so. Several instances are an error (none is picked or ended).
  - Otherwise launches one instance from the launch template with the first offer (type, zone)
    of I(offers); when AWS has no capacity there (InsufficientInstanceCapacity, Unsupported) it
    tries the next. Other errors stop it with one line that says what to do.
  - Waits until the instance runs. In check mode it says what it would do and launches nothing.
  - amazon.aws's ec2_instance cannot do this - it changes a running instance's type when the
    offer moves (stop, modify, start, which EC2 refuses for spot instances), and it counts
    only pending and running instances, so a stopped box would get a twin.
options:
  name:
    description: The box's name (tag spotbox:box).
    type: str
    required: true
  owner:
    description: The owner tag value (the caller's ARN).
    type: str
    required: true
  launch_template:
    description: Name of the launch template to launch from (its latest version).
    type: str
    required: true
  offers:
    description: Offers to try in order, each with instance_type and zone.
    type: list
    elements: dict
    required: true
  subnet_id:
    description: The template launches into this subnet; the zone is the subnet's.
    type: str
    default: ""
  wait_timeout:
    description: Seconds to wait for the instance to run.
    type: int
    default: 600
  names:
    description:
      - What the messages call the settings, a mapping from setting to name; one not given is
        called by its own name. Besides I(subnet_id), a launch error may name the
        settings the offers came from (spot_offer_info's I(instance_types),
        I(max_price), I(root_volume_size)). The roles pass their variable names.
    type: dict
    default: {}
extends_documentation_fragment:
  - spotbox_aws
author: spotbox
"""

EXAMPLES = r"""
- name: Launch the box
  spot_instance_launch:
    region: us-east-2
    name: course
    owner: arn:aws:iam::123456789012:user/alice
    launch_template: spotbox-course
    offers:
      - {instance_type: g4dn.xlarge, zone: us-east-2b}
      - {instance_type: g4dn.xlarge, zone: us-east-2a}
"""

RETURN = r"""
instance:
  description: The instance as DescribeInstances answers it, in snake_case; empty in check mode.
  returned: success
  type: dict
action:
  description: What was done, found, started or launched.
  returned: success
  type: str
  sample: launched
tried:
  description: Offers that AWS refused for capacity, with its answer.
  returned: success
  type: list
  elements: dict
msg:
  description: What happened, in a sentence.
  returned: always
  type: str
"""

import contextlib
import functools

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore
    import botocore.config

from ansible.module_utils.common.dict_transformations import camel_dict_to_snake_dict
from ansible.module_utils.spotbox_aws import (
    box_instances,
    error_code,
    error_message,
    retry_throttled,
)
from ansible.module_utils.spotbox_names import NAMES_SPEC, name_messages
from ansible.module_utils.spotbox_spot import CAPACITY_ERRORS, launch_error_message
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

# Spot request status codes of an instance AWS stopped (EC2 User Guide, "Spot
# request status": instance-stopped-by-price, -no-capacity, -by-experiment);
# "Only Amazon EC2 can restart an interrupted stopped Spot Instance".
STOPPED_BY_USER = "instance-stopped-by-user"


def snake(instance: dict) -> dict:
    return camel_dict_to_snake_dict(instance, ignore_list=["Tags"])


def wait_running(module, client, instance_id: str) -> dict:
    waiter = client.get_waiter("instance_running")
    delay = 5
    waiter.wait(InstanceIds=[instance_id],
                WaiterConfig={"Delay": delay, "MaxAttempts": max(1, module.params["wait_timeout"]
                                                                  // delay)})
    instance = client.describe_instances(
        InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return require_imdsv2(client, instance)


def require_imdsv2(client, instance: dict) -> dict:
    """IMDSv2 only on the instance, should it lack it (the template asks for it; the
    emulator ignores a template's MetadataOptions)."""
    if instance.get("MetadataOptions", {}).get("HttpTokens") == "required":
        return instance
    client.modify_instance_metadata_options(
        InstanceId=instance["InstanceId"], HttpTokens="required", HttpEndpoint="enabled",
        HttpPutResponseHopLimit=2)
    instance["MetadataOptions"] = {**instance.get("MetadataOptions", {}),
                                   "HttpTokens": "required", "HttpEndpoint": "enabled",
                                   "HttpPutResponseHopLimit": 2}
    return instance


def stopped_box(module, client, instance: dict) -> None:
    """Start a box its user stopped; explain one AWS stopped (and exit)."""
    request_id = instance.get("SpotInstanceRequestId")
    status = ""
    if request_id:
        requests = client.describe_spot_instance_requests(
            SpotInstanceRequestIds=[request_id])["SpotInstanceRequests"]
        status = requests[0]["Status"]["Code"] if requests else ""
    name, iid = module.params["name"], instance["InstanceId"]
    if request_id and status != STOPPED_BY_USER:
        module.fail_json(msg=(
            f"box {name} ({iid}) was stopped by AWS (spot interruption: {status or 'unknown'}); "
            "AWS restarts it when capacity returns, with its disks and the data volume. Wait and "
            "run launch.yml again, or end it with playbooks/terminate.yml and launch again "
            "(the data volume is kept)"))
    if module.check_mode:
        module.exit_json(changed=True, action="would start", instance=snake(instance),
                         tried=[], msg=f"would start the stopped box {name} ({iid})")
    client.start_instances(InstanceIds=[iid])
    module.exit_json(changed=True, action="started", tried=[],
                     instance=snake(wait_running(module, client, iid)),
                     msg=f"started the stopped box {name} ({iid})")


def launch(module, client) -> None:
    params = module.params
    tried = []
    # EC2 answers InsufficientInstanceCapacity with HTTP 500, which botocore
    # retries for seconds: the next offer is the better retry.
    runner = module.client("ec2", config=botocore.config.Config(retries={"total_max_attempts": 1}))
    for offer in params["offers"]:
        label = f"{offer['instance_type']} in {offer['zone']}"
        if module.check_mode:
            module.exit_json(changed=True, action="would launch", instance={}, tried=[],
                             msg=f"would launch {label}")
        request = {"LaunchTemplate": {"LaunchTemplateName": params["launch_template"],
                                      "Version": "$Latest"},
                   "InstanceType": offer["instance_type"], "MinCount": 1, "MaxCount": 1}
        if not params["subnet_id"]:  # the template's subnet decides the zone otherwise
            request["Placement"] = {"AvailabilityZone": offer["zone"]}
        try:
            # Many boxes launched at once share RunInstances' small bucket.
            answer = retry_throttled(functools.partial(runner.run_instances, **request))
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if code in CAPACITY_ERRORS:
                tried.append({"offer": label, "code": code, "message": error_message(exc)})
                continue
            module.fail_json(msg=launch_error_message(code, error_message(exc), label),
                             tried=tried)
        instance = wait_running(module, client, answer["Instances"][0]["InstanceId"])
        module.exit_json(changed=True, action="launched", instance=snake(instance), tried=tried,
                         msg=f"launched {label}" + (
                             f" (no capacity for {', '.join(t['offer'] for t in tried)})"
                             if tried else ""))
    labels = ", ".join(t["offer"] for t in tried)
    module.fail_json(msg=(
        f"AWS has no spot capacity for any offer right now ({labels}: "
        "InsufficientInstanceCapacity). Add types to O(instance_types), or try again later"
        + ("; the data volume pins the zone: a snapshot restored in another zone frees it"
           if len({t['offer'].split(' in ')[1] for t in tried}) == 1 else "")), tried=tried)


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "owner": {"type": "str", "required": True},
            "launch_template": {"type": "str", "required": True},
            "offers": {"type": "list", "elements": "dict", "required": True},
            "subnet_id": {"type": "str", "default": ""},
            "wait_timeout": {"type": "int", "default": 600},
            **NAMES_SPEC,
        },
        supports_check_mode=True,
    )
    name_messages(module)
    client = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    name = module.params["name"]
    try:
        found = box_instances(client, name, module.params["owner"])
        if len(found) > 1:
            module.fail_json(msg=f"box {name} has several instances "
                             f"({', '.join(i['InstanceId'] for i in found)}); terminate the extra "
                             "ones (spotbox never picks one for you)")
        if found:
            instance, state = found[0], found[0]["State"]["Name"]
            if state in ("pending", "running"):
                if state == "pending" and not module.check_mode:
                    instance = wait_running(module, client, instance["InstanceId"])
                elif not module.check_mode:
                    instance = require_imdsv2(client, instance)
                module.exit_json(changed=False, action="found", instance=snake(instance),
                                 tried=[], msg=f"box {name} runs ({instance['InstanceId']})")
            if state == "stopping":
                module.fail_json(msg=f"box {name} ({instance['InstanceId']}) is stopping; run "
                                 "launch.yml again once it has stopped")
            stopped_box(module, client, instance)
        if not module.params["offers"]:
            module.fail_json(msg="no offer to launch")
        launch(module, client)
    except botocore.exceptions.WaiterError as exc:
        module.fail_json(msg=f"the instance did not come up: {exc}")
    except botocore.exceptions.ClientError as exc:
        module.fail_json(msg=launch_error_message(error_code(exc), error_message(exc),
                                                  f"box {name}"))
    except botocore.exceptions.BotoCoreError as exc:
        module.fail_json(msg=f"AWS could not be asked: {exc}")


if __name__ == "__main__":
    main()
