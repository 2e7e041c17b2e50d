"""Rule 3: the spot service-linked role AWSServiceRoleForEC2Spot."""

from __future__ import annotations

from localcloud.awslayer.testing import error_of, fixtures, run_dlami, spot_options

aws, fresh_account = fixtures()

ROLE = "AWSServiceRoleForEC2Spot"
EC2_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}
EC2_AND_SPOT_ROLE = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
    {"Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*",
     "Condition": {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}}]}
EC2_AND_OTHER_ROLE = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "ec2:*", "Resource": "*"},
    {"Effect": "Allow", "Action": "iam:CreateServiceLinkedRole", "Resource": "*",
     "Condition": {"StringLike": {"iam:AWSServiceName": "autoscaling.*"}}}]}


def role_exists(aws) -> bool:
    iam = aws.client("iam")
    try:
        iam.get_role(RoleName=ROLE)
        return True
    except iam.exceptions.NoSuchEntityException:
        return False


def test_a_new_account_has_no_spot_role(aws) -> None:
    error = error_of(aws.client("iam").get_role, RoleName=ROLE)
    assert error["Code"] == "NoSuchEntity"


def test_a_user_who_may_not_create_it_cannot_launch_spot(aws) -> None:
    aws.set(quotas={"L-3819A6DF": 64})
    key, secret = aws.user("ops", EC2_ONLY)
    ec2 = aws.client("ec2", key=key, secret=secret)
    error = error_of(run_dlami, ec2, InstanceMarketOptions=spot_options())
    assert error["Code"] == "AuthFailure.ServiceLinkedRoleCreationNotPermitted"
    assert error["Message"] == ("The provided credentials do not have permission to create the "
                                "service-linked role for EC2 Spot Instances.")
    assert error["Status"] == 403
    assert not role_exists(aws)
    run_dlami(ec2)  # on-demand needs no such role
    key, secret = aws.user("ops2", EC2_AND_OTHER_ROLE)  # allowed for another service only
    assert error_of(run_dlami, aws.client("ec2", key=key, secret=secret),
                    InstanceMarketOptions=spot_options())["Code"] == (
        "AuthFailure.ServiceLinkedRoleCreationNotPermitted")


def test_a_user_allowed_to_create_it_creates_it_by_launching(aws) -> None:
    aws.set(quotas={"L-3819A6DF": 64})
    key, secret = aws.user("builder", EC2_AND_SPOT_ROLE)
    run_dlami(aws.client("ec2", key=key, secret=secret), InstanceMarketOptions=spot_options())
    role = aws.client("iam").get_role(RoleName=ROLE)["Role"]
    assert role["Path"] == "/aws-service-role/spot.amazonaws.com/"


def test_once_the_role_exists_no_right_to_create_it_is_needed(aws) -> None:
    aws.set(quotas={"L-3819A6DF": 64})
    aws.client("iam").create_service_linked_role(AWSServiceName="spot.amazonaws.com")
    key, secret = aws.user("ops", EC2_ONLY)
    run_dlami(aws.client("ec2", key=key, secret=secret), InstanceMarketOptions=spot_options())


def test_create_service_linked_role_makes_it_once(aws) -> None:
    iam = aws.client("iam")
    role = iam.create_service_linked_role(AWSServiceName="spot.amazonaws.com")["Role"]
    assert role["RoleName"] == ROLE
    assert role["Arn"] == ("arn:aws:iam::123456789012:role/aws-service-role/spot.amazonaws.com/"
                           f"{ROLE}")
    error = error_of(iam.create_service_linked_role, AWSServiceName="spot.amazonaws.com")
    assert error["Code"] == "InvalidInput"
    assert error["Message"] == (f"Service role name {ROLE} has been taken in this account, "
                                "please try a different suffix.")


def test_the_account_switch_creates_and_deletes_it(aws) -> None:
    aws.set(spot_role=True)
    assert role_exists(aws)
    aws.set(spot_role=False)
    assert not role_exists(aws)
