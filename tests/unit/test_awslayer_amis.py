"""Rule 1: the stand-in Deep Learning AMI's 75 GiB root snapshot, shown and enforced."""

from __future__ import annotations

import re

from localcloud.awslayer.testing import DLAMI, error_of, fixtures, run_dlami

aws, fresh_account = fixtures()

SMALL_ROOT = [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50, "VolumeType": "gp3"}}]


def test_describe_images_shows_the_real_root_size(aws) -> None:
    image = aws.client("ec2").describe_images(ImageIds=[DLAMI])["Images"][0]
    root = image["BlockDeviceMappings"][0]
    assert root["DeviceName"] == image["RootDeviceName"] == "/dev/sda1"
    assert root["Ebs"]["VolumeSize"] == 75
    assert root["Ebs"]["SnapshotId"].startswith("snap-")


def test_the_snapshot_has_that_size_too(aws) -> None:
    ec2 = aws.client("ec2")
    snapshot_id = ec2.describe_images(ImageIds=[DLAMI])["Images"][0][
        "BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["VolumeSize"] == 75


def test_a_smaller_root_volume_is_refused_as_aws_refuses_it(aws) -> None:
    ec2 = aws.client("ec2")
    error = error_of(run_dlami, ec2, BlockDeviceMappings=SMALL_ROOT)
    assert error["Code"] == "InvalidBlockDeviceMapping"
    assert re.fullmatch(r"Volume of size 50GB is smaller than  snapshot 'snap-[0-9a-f]+', "
                        r"expect size >= 75GB", error["Message"])
    assert error["Status"] == 400
    assert ec2.describe_instances()["Reservations"] == []


def test_through_a_launch_template_too(aws) -> None:
    ec2 = aws.client("ec2")
    ec2.create_launch_template(LaunchTemplateName="box", LaunchTemplateData={
        "ImageId": DLAMI, "BlockDeviceMappings": SMALL_ROOT})
    error = error_of(ec2.run_instances, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                     LaunchTemplate={"LaunchTemplateName": "box", "Version": "$Latest"})
    assert error["Code"] == "InvalidBlockDeviceMapping"
    # The request's own mappings override the template's (RunInstances' rule).
    big = [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 100}}]
    ec2.run_instances(MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                      LaunchTemplate={"LaunchTemplateName": "box"}, BlockDeviceMappings=big)


def test_equal_larger_or_unsized_roots_and_other_amis_launch(aws) -> None:
    ec2 = aws.client("ec2")
    run_dlami(ec2, BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 75}}])
    run_dlami(ec2, BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 100}}])
    run_dlami(ec2)
    run_dlami(ec2, BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10}}])
    run_dlami(ec2, ImageId="ami-0ubuntu0000000005", BlockDeviceMappings=SMALL_ROOT)
