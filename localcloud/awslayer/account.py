"""Account-wide facts: the default VPC and the spot service-linked role.

The switches say what the account should look like; the layer makes moto
match them lazily, on the first call per region after a change (moto makes
a region's default VPC when the region is first used).
"""

from __future__ import annotations

import json
from typing import Any

from . import core, iam, launch

SPOT_SERVICE = "spot.amazonaws.com"
SPOT_ROLE = "AWSServiceRoleForEC2Spot"


# ------------------------------------------------------------ default VPC

def delete_default_vpc(layer: core.Layer, region: str) -> None:
    """Really remove the region's default VPC from moto: subnets, gateways, groups, the VPC."""
    ec2 = layer.moto.client("ec2", region)
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    for vpc in vpcs:
        vpc_id = vpc["VpcId"]
        scoped = [{"Name": "vpc-id", "Values": [vpc_id]}]
        for subnet in ec2.describe_subnets(Filters=scoped)["Subnets"]:
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
        gateways = ec2.describe_internet_gateways(
            Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}])["InternetGateways"]
        for gateway in gateways:
            ec2.detach_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"],
                                        VpcId=vpc_id)
            ec2.delete_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"])
        for group in ec2.describe_security_groups(Filters=scoped)["SecurityGroups"]:
            if group["GroupName"] != "default":
                ec2.delete_security_group(GroupId=group["GroupId"])
        ec2.delete_vpc(VpcId=vpc_id)


def has_default_vpc(layer: core.Layer, region: str) -> bool:
    ec2 = layer.moto.client("ec2", region)
    return bool(ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"])


def reconcile(layer: core.Layer, call: core.Call) -> None:
    """Make moto match the account switches (once per change and region)."""
    switches = layer.switches()
    generation = switches.get("generation", 0)
    with layer.lock:
        done = layer.memory.setdefault("account_done", set())
        scope = (generation, call.region if call.service == "ec2" else "account")
        if scope in done:
            return
        deleted = layer.memory.setdefault("vpc_deleted", set())
        if call.service != "ec2":
            pass  # VPCs are EC2's, per region; an IAM call must not build a region in moto
        elif not switches["default_vpc"] and has_default_vpc(layer, call.region):
            delete_default_vpc(layer, call.region)
            deleted.add(call.region)
        elif switches["default_vpc"] and call.region in deleted:
            # Only a VPC the layer deleted comes back (CreateDefaultVpc).
            layer.moto.client("ec2", call.region).create_default_vpc()
            deleted.discard(call.region)
        wanted = switches.get("spot_role")
        if wanted is not None and spot_role_exists(layer) != wanted:
            if wanted:
                create_spot_role(layer)
            else:
                layer.moto.client("iam", "us-east-1").delete_role(RoleName=SPOT_ROLE)
        done.add(scope)


core.GUARDS.append(reconcile)


def default_vpc_missing(layer: core.Layer, region: str) -> bool:
    return not layer.switches()["default_vpc"]


# "VpcId: [Default VPC] The ID of the VPC. Required for a nondefault VPC."
# (botocore ec2 CreateSecurityGroupRequest.VpcId). Without a default VPC AWS
# answers VPCIdNotSpecified "No default VPC for this user" (seen in
# rancher-archives/quickstart#126).
@core.before("ec2", "CreateSecurityGroup")
def security_group_needs_vpc(layer: core.Layer, call: core.Call) -> None:
    if not call.form.get("VpcId") and default_vpc_missing(layer, call.region):
        raise core.AwsError("VPCIdNotSpecified", "No default VPC for this user")


# RunInstances without a subnet launches into the default VPC's default
# subnet; without one AWS answers VPCIdNotSpecified "No default VPC for this
# user. GroupName is only supported for EC2-Classic and default VPC."
# (google/cloud-forensics-utils#316; moto raises the same text).
@launch.check(order=30)
def run_needs_vpc(layer: core.Layer, call: core.Call, spec: dict[str, Any]) -> None:
    has_subnet = spec.get("SubnetId") or any(
        nic.get("SubnetId") or nic.get("NetworkInterfaceId")
        for nic in spec.get("NetworkInterfaces") or [])
    if not has_subnet and default_vpc_missing(layer, call.region):
        raise core.AwsError(
            "VPCIdNotSpecified",
            "No default VPC for this user. GroupName is only supported for EC2-Classic "
            "and default VPC.")


# ------------------------------------------------ spot service-linked role

def spot_role_exists(layer: core.Layer) -> bool:
    try:
        layer.moto.client("iam", "us-east-1").get_role(RoleName=SPOT_ROLE)
        return True
    except Exception:
        return False


def create_spot_role(layer: core.Layer) -> dict:
    """Make AWSServiceRoleForEC2Spot in moto, named and placed as AWS does.

    moto's own CreateServiceLinkedRole names it "AWSServiceRoleForspot"; AWS's
    name is AWSServiceRoleForEC2Spot, path /aws-service-role/spot.amazonaws.com/
    (EC2 User Guide, spot-requests, "Service-linked role for Spot Instance
    requests").
    """
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": [SPOT_SERVICE]},
        "Action": ["sts:AssumeRole"]}]}
    return layer.moto.client("iam", "us-east-1").create_role(
        RoleName=SPOT_ROLE, Path=f"/aws-service-role/{SPOT_SERVICE}/",
        AssumeRolePolicyDocument=json.dumps(trust),
        Description="Default EC2 Spot Service Linked Role")["Role"]


# A second CreateServiceLinkedRole for the same service: AWS answers
# InvalidInput "Service role name AWSServiceRoleForEC2Spot has been taken in
# this account, please try a different suffix." (chanzuckerberg/cztack#897).
@core.before("iam", "CreateServiceLinkedRole")
def create_service_linked_role(layer: core.Layer, call: core.Call) -> core.Reply | None:
    if call.form.get("AWSServiceName") != SPOT_SERVICE:
        return None  # moto makes the other services' roles
    if spot_role_exists(layer):
        raise core.AwsError(
            "InvalidInput",
            f"Service role name {SPOT_ROLE} has been taken in this account, please try a "
            "different suffix.")
    return core.query_answer("iam", "CreateServiceLinkedRole", {"Role": create_spot_role(layer)})


# "If you use the AWS CLI or an API to request a Spot Instance, you must first
# ensure that this role exists" (EC2 User Guide, spot-requests, "Service-linked
# role for Spot Instance requests"). In practice EC2 creates it with the
# caller's rights when they allow iam:CreateServiceLinkedRole, and otherwise
# answers AuthFailure.ServiceLinkedRoleCreationNotPermitted with HTTP 403
# (determined-ai/determined#1830, kubernetes/kops#16475, dstackai/dstack#886).
@launch.check(order=50)
def spot_needs_role(layer: core.Layer, call: core.Call, spec: dict[str, Any]) -> None:
    if launch.market_options(spec) is None or spot_role_exists(layer):
        return
    context = {"iam:awsservicename": [SPOT_SERVICE], "aws:requestedregion": [call.region]}
    if not iam.allowed(call.caller, "iam:CreateServiceLinkedRole", context):
        raise core.AwsError(
            "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
            "The provided credentials do not have permission to create the service-linked "
            "role for EC2 Spot Instances.", 403)
    create_spot_role(layer)
