#!/usr/bin/python
"""Ansible module: the box's security group, SSH only from one network."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: spot_box_security_group
short_description: The box's security group - SSH (tcp/22) from one IPv4 network, nothing else in
description:
  - Finds the group by name in the VPC, or creates it (with its tags, in one call), then makes
    its inbound rules exactly one - tcp/22 from I(cidr) - adding the rule and removing any other.
    Outbound rules are left as EC2 makes them.
  - amazon.aws's ec2_security_group does the same but sleeps 3 s after creating a group (waiting
    for the default egress rule to show), a tenth of the launch's time budget.
  - Check mode says what would change.
options:
  name:
    description: The group's name.
    type: str
    required: true
  description:
    description: The group's description (set at creation).
    type: str
    required: true
  vpc_id:
    description: The VPC the group belongs to.
    type: str
    required: true
  cidr:
    description: The IPv4 network allowed to SSH in.
    type: str
    required: true
  tags:
    description: Tags given at creation.
    type: dict
    default: {}
extends_documentation_fragment:
  - spotbox_aws
author: spotbox
"""

EXAMPLES = r"""
- name: SSH from this controller only
  spot_box_security_group:
    name: spotbox-course
    description: "spotbox course - SSH only"
    vpc_id: vpc-0123456789abcdef0
    cidr: 203.0.113.7/32
"""

RETURN = r"""
group_id:
  description: The group's id (empty in check mode for a group not yet made).
  returned: always
  type: str
"""

import contextlib

with contextlib.suppress(ImportError):  # AnsibleAWSModule reports a missing botocore
    import botocore

from ansible.module_utils.spotbox_aws import denied_line, error_code, error_message
from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

RULE_DESCRIPTION = "SSH"


def ssh_rule(cidr: str) -> dict:
    return {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
            "IpRanges": [{"CidrIp": cidr, "Description": RULE_DESCRIPTION}]}


def others(permissions: list[dict], cidr: str) -> list[dict]:
    """Inbound permissions other than tcp/22 from cidr (to be removed)."""
    extra = []
    for perm in permissions:
        is_ssh = (perm.get("IpProtocol"), perm.get("FromPort"), perm.get("ToPort")) == (
            "tcp", 22, 22)
        ranges = [r for r in perm.get("IpRanges", []) if not (is_ssh and r["CidrIp"] == cidr)]
        rest = {k: perm[k] for k in ("UserIdGroupPairs", "Ipv6Ranges", "PrefixListIds")
                if perm.get(k)}
        if ranges or rest:
            extra.append({k: v for k, v in {
                "IpProtocol": perm["IpProtocol"], "FromPort": perm.get("FromPort"),
                "ToPort": perm.get("ToPort"), "IpRanges": ranges, **rest}.items()
                if v is not None and v != []})
    return extra


def has_ssh(permissions: list[dict], cidr: str) -> bool:
    return any((p.get("IpProtocol"), p.get("FromPort"), p.get("ToPort")) == ("tcp", 22, 22)
               and any(r["CidrIp"] == cidr for r in p.get("IpRanges", [])) for p in permissions)


def main() -> None:
    module = AnsibleAWSModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "description": {"type": "str", "required": True},
            "vpc_id": {"type": "str", "required": True},
            "cidr": {"type": "str", "required": True},
            "tags": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    params = module.params
    client = module.client("ec2", retry_decorator=AWSRetry.jittered_backoff())
    try:
        groups = client.describe_security_groups(aws_retry=True, Filters=[
            {"Name": "group-name", "Values": [params["name"]]},
            {"Name": "vpc-id", "Values": [params["vpc_id"]]}])["SecurityGroups"]
        groups = [g for g in groups if g["GroupName"] == params["name"]]
        if not groups:
            if module.check_mode:
                module.exit_json(changed=True, group_id="", msg=f"would create {params['name']}")
            tags = [{"Key": k, "Value": str(v)} for k, v in params["tags"].items()]
            created = client.create_security_group(
                GroupName=params["name"], Description=params["description"],
                VpcId=params["vpc_id"], aws_retry=True,
                **({"TagSpecifications": [{"ResourceType": "security-group", "Tags": tags}]}
                   if tags else {}))
            group = {"GroupId": created["GroupId"], "IpPermissions": []}
            changed = True
        else:
            group, changed = groups[0], False
        stale = others(group.get("IpPermissions", []), params["cidr"])
        missing = not has_ssh(group.get("IpPermissions", []), params["cidr"])
        if (stale or missing) and not module.check_mode:
            if missing:
                client.authorize_security_group_ingress(
                    GroupId=group["GroupId"], IpPermissions=[ssh_rule(params["cidr"])],
                    aws_retry=True)
            if stale:
                client.revoke_security_group_ingress(
                    GroupId=group["GroupId"], IpPermissions=stale, aws_retry=True)
        module.exit_json(changed=changed or bool(stale) or missing, group_id=group["GroupId"])
    except botocore.exceptions.ClientError as exc:
        module.fail_json(msg=denied_line(exc, f"manage the security group {params['name']}")
                         or f"AWS answered {error_code(exc)}: {error_message(exc)}")
    except botocore.exceptions.BotoCoreError as exc:
        module.fail_json(msg=f"AWS could not be asked: {exc}")


if __name__ == "__main__":
    main()
