"""Rule 4: access keys and IAM policies of moto's users, and AWS's denial errors."""

from __future__ import annotations

import re

import pytest

from localcloud.awslayer import iam
from localcloud.awslayer.testing import error_of, fixtures, run_dlami

aws, fresh_account = fixtures()


def policy(*statements) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action, **extra) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": "*", **extra}


def deny(action, **extra) -> dict:
    return {"Effect": "Deny", "Action": action, "Resource": "*", **extra}


# ------------------------------------------------------------ pure logic

@pytest.mark.parametrize(("statements", "action", "decision"), [
    ([allow("ec2:RunInstances")], "ec2:RunInstances", "allow"),
    ([allow("ec2:Describe*")], "ec2:DescribeImages", "allow"),
    ([allow("ec2:Describe*")], "ec2:RunInstances", "implicit-deny"),
    ([allow("ec2:*"), deny("ec2:Run*")], "ec2:RunInstances", "explicit-deny"),
    ([allow("*")], "servicequotas:GetServiceQuota", "allow"),
    ([allow(["iam:GetRole", "ec2:run?nstances"])], "ec2:RunInstances", "allow"),
    ([{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}], "iam:GetRole",
     "implicit-deny"),
    ([{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}], "ec2:RunInstances", "allow"),
    ([], "ec2:DescribeInstances", "implicit-deny"),
])
def test_policy_evaluation(statements, action, decision) -> None:
    assert iam.evaluate([policy(*statements)], action, {}) == decision


@pytest.mark.parametrize(("condition", "context", "holds"), [
    ({"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
     {"iam:awsservicename": ["spot.amazonaws.com"]}, True),
    ({"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
     {"iam:awsservicename": ["autoscaling.amazonaws.com"]}, False),
    ({"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}, {}, False),
    ({"StringLike": {"aws:RequestTag/spotbox:box": "*"}},
     {"aws:requesttag/spotbox:box": ["course"]}, True),
    ({"StringLike": {"aws:RequestTag/spotbox:box": "c*"}},
     {"aws:requesttag/spotbox:box": ["demo"]}, False),
    ({"StringNotEquals": {"aws:RequestTag/team": "x"}}, {}, True),
    ({"StringEqualsIfExists": {"aws:RequestTag/team": "x"}}, {}, True),
    ({"Null": {"aws:RequestTag/team": "true"}}, {}, True),
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a", "b"]}}, {"aws:tagkeys": ["a"]}, True),
    ({"ForAllValues:StringEquals": {"aws:TagKeys": ["a"]}}, {"aws:tagkeys": ["a", "c"]}, False),
    ({"NumericLessThan": {"x": "1"}}, {"x": ["0"]}, False),  # unknown operators never grant
])
def test_conditions(condition, context, holds) -> None:
    assert iam.conditions_hold(condition, context) is holds


# ------------------------------------------------- through the layer

def test_the_admin_key_is_the_account_root(aws) -> None:
    sts = aws.client("sts")
    assert sts.get_caller_identity()["Arn"] == "arn:aws:iam::123456789012:root"
    run_dlami(aws.client("ec2"))


def test_unknown_access_keys_are_refused_per_protocol(aws) -> None:
    nobody = {"key": "AKIAUNKNOWN000000000", "secret": "x"}
    ec2 = error_of(aws.client("ec2", **nobody).describe_instances)
    assert (ec2["Code"], ec2["Status"]) == ("AuthFailure", 401)
    assert ec2["Message"] == "AWS was not able to validate the provided access credentials"
    for service in ("sts", "iam"):
        client = aws.client(service, **nobody)
        call = client.get_caller_identity if service == "sts" else client.list_users
        error = error_of(call)
        assert (error["Code"], error["Status"]) == ("InvalidClientTokenId", 403)
        assert error["Message"] == "The security token included in the request is invalid"
    quotas = error_of(aws.client("service-quotas", **nobody).get_service_quota,
                      ServiceCode="ec2", QuotaCode="L-3819A6DF")
    assert quotas["Code"] == "UnrecognizedClientException"


def test_ec2_denial_is_unauthorized_operation_with_iam_words(aws) -> None:
    key, secret = aws.user("viewer", policy(allow("ec2:Describe*")))
    ec2 = aws.client("ec2", key=key, secret=secret)
    ec2.describe_instances()
    error = error_of(run_dlami, ec2)
    assert (error["Code"], error["Status"]) == ("UnauthorizedOperation", 403)
    assert re.fullmatch(
        r"You are not authorized to perform this operation\. User: "
        r"arn:aws:iam::123456789012:user/viewer is not authorized to perform: ec2:RunInstances "
        r"on resource: arn:aws:ec2:us-east-2:123456789012:instance/\* because no "
        r"identity-based policy allows the ec2:RunInstances action\. Encoded authorization "
        r"failure message: [A-Za-z0-9_=-]+", error["Message"])
    assert ec2.describe_instances()["Reservations"] == []


def test_an_explicit_deny_wins_and_says_so(aws) -> None:
    key, secret = aws.user("nostop", policy(allow("ec2:*"), deny("ec2:TerminateInstances")))
    ec2 = aws.client("ec2", key=key, secret=secret)
    instance = run_dlami(ec2)
    error = error_of(ec2.terminate_instances, InstanceIds=[instance["InstanceId"]])
    assert error["Code"] == "UnauthorizedOperation"
    assert "with an explicit deny in an identity-based policy" in error["Message"]


def test_request_tag_conditions(aws) -> None:
    tagged_only = policy(allow("ec2:Describe*"), allow(
        "ec2:RunInstances", Condition={"StringLike": {"aws:RequestTag/spotbox:box": "*"}}))
    key, secret = aws.user("tagger", tagged_only)
    ec2 = aws.client("ec2", key=key, secret=secret)
    assert error_of(run_dlami, ec2)["Code"] == "UnauthorizedOperation"
    run_dlami(ec2, TagSpecifications=[{"ResourceType": "instance",
                                       "Tags": [{"Key": "spotbox:box", "Value": "course"}]}])


def test_service_quotas_and_iam_denials(aws) -> None:
    key, secret = aws.user("nobody", policy(allow("ec2:DescribeRegions")))
    sq = error_of(aws.client("service-quotas", key=key, secret=secret).get_service_quota,
                  ServiceCode="ec2", QuotaCode="L-3819A6DF")
    assert sq["Code"] == "AccessDeniedException"
    assert sq["Message"] == (
        "User: arn:aws:iam::123456789012:user/nobody is not authorized to perform: "
        "servicequotas:GetServiceQuota because no identity-based policy allows the "
        "servicequotas:GetServiceQuota action")
    role = error_of(aws.client("iam", key=key, secret=secret).create_service_linked_role,
                    AWSServiceName="spot.amazonaws.com")
    assert (role["Code"], role["Status"]) == ("AccessDenied", 403)
    assert "iam:CreateServiceLinkedRole on resource: arn:aws:iam::123456789012:role/" \
           "aws-service-role/spot.amazonaws.com/*" in role["Message"]


def test_get_caller_identity_needs_no_permission(aws) -> None:
    key, secret = aws.user("denied", policy(deny("*")))
    identity = aws.client("sts", key=key, secret=secret).get_caller_identity()
    assert identity["Arn"] == "arn:aws:iam::123456789012:user/denied"


def test_attached_and_group_policies_count(aws) -> None:
    admin = aws.client("iam")
    arn = admin.create_policy(PolicyName="quota-reader", PolicyDocument=__import__("json").dumps(
        policy(allow("servicequotas:Get*"))))["Policy"]["Arn"]
    key, secret = aws.user("member", policy(allow("ec2:DescribeRegions")))
    sq = aws.client("service-quotas", key=key, secret=secret)
    assert error_of(sq.get_service_quota, ServiceCode="ec2",
                    QuotaCode="L-3819A6DF")["Code"] == "AccessDeniedException"
    admin.attach_user_policy(UserName="member", PolicyArn=arn)
    sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-3819A6DF")
    admin.detach_user_policy(UserName="member", PolicyArn=arn)
    admin.create_group(GroupName="readers")
    admin.attach_group_policy(GroupName="readers", PolicyArn=arn)
    admin.add_user_to_group(GroupName="readers", UserName="member")
    sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-3819A6DF")


# The minimal policy the AWS review (../shared/reviews/2026-11-29-aws.md §8d) proposes for
# spotbox: enough for the whole spot launch, role creation included.
REVIEW_POLICY = policy(
    allow(["ec2:DescribeInstanceTypes", "ec2:DescribeSpotPriceHistory", "ec2:DescribeImages",
           "ec2:DescribeVolumes", "ec2:CreateVolume", "ec2:AttachVolume", "ec2:DeleteVolume",
           "ec2:DescribeKeyPairs", "ec2:CreateKeyPair", "ec2:DescribeSecurityGroups",
           "ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress",
           "ec2:RevokeSecurityGroupIngress", "ec2:DescribeLaunchTemplates",
           "ec2:DescribeLaunchTemplateVersions", "ec2:CreateLaunchTemplate",
           "ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate", "ec2:RunInstances",
           "ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceAttribute",
           "ec2:ModifyInstanceAttribute", "ec2:ModifyInstanceMetadataOptions",
           "ec2:TerminateInstances", "ec2:DescribeSpotInstanceRequests",
           "ec2:CancelSpotInstanceRequests", "ec2:CreateSnapshot", "ec2:DescribeSnapshots",
           "ec2:CreateTags", "ec2:DeleteTags", "ec2:DescribeTags",
           "servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota"]),
    allow("iam:CreateServiceLinkedRole",
          Condition={"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}))


def test_the_reviews_policy_launches_and_ends_a_spot_box(aws) -> None:
    aws.set(quotas={"L-3819A6DF": 8})
    key, secret = aws.user("spotbox", REVIEW_POLICY)
    ec2 = aws.client("ec2", key=key, secret=secret)
    aws.client("service-quotas", key=key, secret=secret).get_service_quota(
        ServiceCode="ec2", QuotaCode="L-3819A6DF")
    ec2.create_key_pair(KeyName="spotbox-course")
    ec2.create_security_group(GroupName="spotbox-course", Description="ssh")
    ec2.create_launch_template(LaunchTemplateName="spotbox-course", LaunchTemplateData={
        "ImageId": "ami-0dl22b0000000002", "KeyName": "spotbox-course",
        "InstanceMarketOptions": {"MarketType": "spot"}})
    launched = ec2.run_instances(MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                                 LaunchTemplate={"LaunchTemplateName": "spotbox-course"})
    instance_id = launched["Instances"][0]["InstanceId"]
    request_id = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
        "Instances"][0]["SpotInstanceRequestId"]
    ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[request_id])
    ec2.terminate_instances(InstanceIds=[instance_id])
    # What it does not allow stays refused.
    assert error_of(ec2.create_vpc, CidrBlock="10.9.0.0/16")["Code"] == "UnauthorizedOperation"
