"""Rule 6: a (type, zone) without capacity answers InsufficientInstanceCapacity."""

from __future__ import annotations

from localcloud.awslayer import capacity
from localcloud.awslayer.testing import DLAMI, error_of, fixtures, run_dlami

aws, fresh_account = fixtures()


def test_the_message_names_the_zone_and_the_others() -> None:
    assert capacity.shortage_message("g4dn.xlarge", "us-east-2a", ["us-east-2b", "us-east-2c"]) == (
        "We currently do not have sufficient g4dn.xlarge capacity in the Availability Zone you "
        "requested (us-east-2a). Our system will be working on provisioning additional "
        "capacity. You can currently get g4dn.xlarge capacity by not specifying an "
        "Availability Zone in your request or choosing us-east-2b, us-east-2c.")


def test_a_zone_without_capacity_refuses_the_launch(aws) -> None:
    aws.set(capacity_off=[["g4dn.xlarge", "us-east-2a"]])
    ec2 = aws.client("ec2")
    error = error_of(run_dlami, ec2, Placement={"AvailabilityZone": "us-east-2a"})
    assert (error["Code"], error["Status"]) == ("InsufficientInstanceCapacity", 500)
    assert error["Message"].startswith(
        "We currently do not have sufficient g4dn.xlarge capacity in the Availability Zone you "
        "requested (us-east-2a).")
    assert error["Message"].endswith("or choosing us-east-2b, us-east-2c.")
    run_dlami(ec2, Placement={"AvailabilityZone": "us-east-2b"})
    run_dlami(ec2, InstanceType="g5.xlarge", Placement={"AvailabilityZone": "us-east-2a"})


def test_the_zone_of_a_subnet_counts(aws) -> None:
    ec2 = aws.client("ec2")
    subnet = ec2.describe_subnets(Filters=[
        {"Name": "availability-zone", "Values": ["us-east-2c"]},
        {"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]["SubnetId"]
    aws.set(capacity_off=[["g4dn.xlarge", "us-east-2c"]])
    assert error_of(run_dlami, ec2, SubnetId=subnet)["Code"] == "InsufficientInstanceCapacity"
    nics = [{"DeviceIndex": 0, "SubnetId": subnet}]
    assert error_of(run_dlami, ec2, NetworkInterfaces=nics)["Code"] == (
        "InsufficientInstanceCapacity")


def test_the_zone_of_a_launch_template_counts(aws) -> None:
    ec2 = aws.client("ec2")
    ec2.create_launch_template(LaunchTemplateName="in-b", LaunchTemplateData={
        "ImageId": DLAMI, "Placement": {"AvailabilityZone": "us-east-2b"}})
    launched = ec2.run_instances(MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                                 LaunchTemplate={"LaunchTemplateName": "in-b"})["Instances"][0]
    assert launched["Placement"]["AvailabilityZone"] == "us-east-2b"  # as EC2 (moto: 2a)
    aws.set(capacity_off=[["g4dn.xlarge", "us-east-2b"]])
    error = error_of(ec2.run_instances, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                     LaunchTemplate={"LaunchTemplateName": "in-b"})
    assert "(us-east-2b)" in error["Message"]


def test_without_a_zone_ec2_places_it_where_there_is_capacity(aws) -> None:
    aws.set(capacity_off=[["g4dn.xlarge", "us-east-2a"]])
    ec2 = aws.client("ec2")
    launched = run_dlami(ec2)
    assert launched["Placement"]["AvailabilityZone"] == "us-east-2b"
    aws.set(capacity_off=[["g4dn.xlarge", z] for z in ("us-east-2a", "us-east-2b", "us-east-2c")])
    assert error_of(run_dlami, ec2)["Code"] == "InsufficientInstanceCapacity"


def test_capacity_comes_back(aws) -> None:
    aws.set(capacity_off=[["g4dn.xlarge", "us-east-2a"]])
    aws.set(capacity_off=[])
    run_dlami(aws.client("ec2"), Placement={"AvailabilityZone": "us-east-2a"})
