"""Rule 7: an account without a default VPC."""

from __future__ import annotations

from localcloud.awslayer.testing import error_of, fixtures, run_dlami

aws, fresh_account = fixtures()

DEFAULT = [{"Name": "isDefault", "Values": ["true"]}]


def test_a_new_account_has_a_default_vpc(aws) -> None:
    ec2 = aws.client("ec2")
    assert len(ec2.describe_vpcs(Filters=DEFAULT)["Vpcs"]) == 1
    ec2.create_security_group(GroupName="ssh", Description="ssh")
    run_dlami(ec2)


def test_the_switch_really_deletes_it(aws) -> None:
    ec2 = aws.client("ec2")
    vpc_id = ec2.describe_vpcs(Filters=DEFAULT)["Vpcs"][0]["VpcId"]
    aws.set(default_vpc=False)
    assert ec2.describe_vpcs(Filters=DEFAULT)["Vpcs"] == []
    assert ec2.describe_vpcs(VpcIds=[])["Vpcs"] == [] or all(
        v["VpcId"] != vpc_id for v in ec2.describe_vpcs()["Vpcs"])
    scoped = [{"Name": "vpc-id", "Values": [vpc_id]}]
    assert ec2.describe_subnets(Filters=scoped)["Subnets"] == []
    assert ec2.describe_internet_gateways(Filters=[
        {"Name": "attachment.vpc-id", "Values": [vpc_id]}])["InternetGateways"] == []


def test_without_it_groups_and_launches_need_a_vpc(aws) -> None:
    aws.set(default_vpc=False)
    ec2 = aws.client("ec2")
    error = error_of(ec2.create_security_group, GroupName="ssh", Description="ssh")
    assert (error["Code"], error["Message"]) == ("VPCIdNotSpecified",
                                                 "No default VPC for this user")
    error = error_of(run_dlami, ec2)
    assert error["Code"] == "VPCIdNotSpecified"
    assert error["Message"].startswith("No default VPC for this user")
    vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.1.1.0/24",
                               AvailabilityZone="us-east-2b")["Subnet"]["SubnetId"]
    ec2.create_security_group(GroupName="ssh", Description="ssh", VpcId=vpc)
    assert run_dlami(ec2, SubnetId=subnet)["Placement"]["AvailabilityZone"] == "us-east-2b"


def test_every_region_used_loses_it(aws) -> None:
    aws.set(default_vpc=False)
    assert aws.client("ec2", region="us-east-1").describe_vpcs(Filters=DEFAULT)["Vpcs"] == []


def test_it_comes_back_when_switched_on(aws) -> None:
    aws.set(default_vpc=False)
    ec2 = aws.client("ec2")
    assert ec2.describe_vpcs(Filters=DEFAULT)["Vpcs"] == []
    aws.set(default_vpc=True)
    assert len(ec2.describe_vpcs(Filters=DEFAULT)["Vpcs"]) == 1
    run_dlami(ec2)


def test_an_iam_call_first_does_not_spare_a_region(aws) -> None:
    aws.set(default_vpc=False)
    aws.client("iam", region="us-east-1").list_users()  # IAM is signed for us-east-1
    assert aws.client("ec2", region="us-east-1").describe_vpcs(Filters=DEFAULT)["Vpcs"] == []
