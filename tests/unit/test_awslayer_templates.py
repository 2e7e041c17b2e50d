"""A launch template's tags: given at creation, kept out of its data, answered as they are now."""

from __future__ import annotations

from localcloud.awslayer.testing import DLAMI, fixtures

aws, fresh_account = fixtures()

OWNER = {"Key": "spotbox:owner", "Value": "arn:aws:iam::123456789012:user/a"}


def tags_of(ec2, name: str) -> dict[str, str]:
    [template] = ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
    return {t["Key"]: t["Value"] for t in template["Tags"]}


def test_tags_given_at_creation_tag_the_template_not_its_data(aws) -> None:
    ec2 = aws.client("ec2")
    made = ec2.create_launch_template(
        LaunchTemplateName="box", LaunchTemplateData={"ImageId": DLAMI},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": [OWNER]}])
    assert tags_of(ec2, "box") == {"spotbox:owner": OWNER["Value"]}
    [version] = ec2.describe_launch_template_versions(LaunchTemplateName="box")[
        "LaunchTemplateVersions"]
    assert version["LaunchTemplateData"] == {"ImageId": DLAMI}
    assert made["LaunchTemplate"]["LaunchTemplateName"] == "box"


def test_tags_added_or_removed_later_are_answered(aws) -> None:
    ec2 = aws.client("ec2")
    template_id = ec2.create_launch_template(
        LaunchTemplateName="box", LaunchTemplateData={"ImageId": DLAMI})[
        "LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template(LaunchTemplateName="other", LaunchTemplateData={"ImageId": DLAMI})
    assert tags_of(ec2, "box") == {}
    ec2.create_tags(Resources=[template_id], Tags=[OWNER, {"Key": "team", "Value": "x"}])
    assert tags_of(ec2, "box") == {"spotbox:owner": OWNER["Value"], "team": "x"}
    assert tags_of(ec2, "other") == {}, "another template's tags are its own"
    ec2.delete_tags(Resources=[template_id], Tags=[{"Key": "team"}])
    assert tags_of(ec2, "box") == {"spotbox:owner": OWNER["Value"]}
    found = ec2.describe_launch_templates(
        Filters=[{"Name": "tag:spotbox:owner", "Values": [OWNER["Value"]]}])["LaunchTemplates"]
    assert [t["LaunchTemplateName"] for t in found] == ["box"]
