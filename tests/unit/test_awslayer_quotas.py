"""Rule 2: spot vCPU quotas in Service Quotas, obeyed by RunInstances."""

from __future__ import annotations

import pytest

from localcloud.awslayer import quotas
from localcloud.awslayer.testing import error_of, fixtures, run_dlami, spot_options

aws, fresh_account = fixtures()

G, P, STANDARD = "L-3819A6DF", "L-7212CCBC", "L-34B43A08"


@pytest.mark.parametrize(("instance_type", "code"), [
    ("g4dn.xlarge", G), ("g6e.xlarge", G), ("vt1.3xlarge", G), ("p3.2xlarge", P),
    ("p5.48xlarge", P), ("t3.micro", STANDARD), ("m5.large", STANDARD), ("c7i.xlarge", STANDARD),
    ("inf2.xlarge", None), ("x2idn.16xlarge", None), ("dl1.24xlarge", None),
    ("trn1.2xlarge", None), ("f1.2xlarge", None)])
def test_instance_families_map_to_their_quota(instance_type, code) -> None:
    assert quotas.quota_code(instance_type) == code


def test_a_new_account_has_aws_defaults(aws) -> None:
    sq = aws.client("service-quotas")
    values = {code: sq.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
              for code in (G, P, STANDARD)}
    assert values == {G: 0.0, P: 0.0, STANDARD: 5.0}
    quota = sq.get_service_quota(ServiceCode="ec2", QuotaCode=G)["Quota"]
    assert quota["QuotaName"] == "All G and VT Spot Instance Requests"
    assert quota["QuotaArn"] == f"arn:aws:servicequotas:us-east-2:123456789012:ec2/{G}"


def test_set_values_answer_and_defaults_stay(aws) -> None:
    aws.set(quotas={G: 8})
    sq = aws.client("service-quotas")
    assert sq.get_service_quota(ServiceCode="ec2", QuotaCode=G)["Quota"]["Value"] == 8.0
    default = sq.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=G)["Quota"]
    assert default["Value"] == 0.0
    assert default["QuotaArn"] == f"arn:aws:servicequotas:us-east-2::ec2/{G}"


def test_a_new_account_cannot_launch_a_gpu_spot_instance(aws) -> None:
    ec2 = aws.client("ec2")
    error = error_of(run_dlami, ec2, InstanceMarketOptions=spot_options())
    assert (error["Code"], error["Message"]) == ("MaxSpotInstanceCountExceeded",
                                                 "Max spot instance count exceeded")
    run_dlami(ec2)  # on-demand has its own quota, which the layer leaves open


def test_running_spot_instances_count_against_the_quota(aws) -> None:
    aws.set(quotas={G: 8})
    ec2 = aws.client("ec2")
    first = run_dlami(ec2, InstanceMarketOptions=spot_options())  # 4 vCPUs
    run_dlami(ec2, InstanceMarketOptions=spot_options())  # 8
    assert error_of(run_dlami, ec2, InstanceMarketOptions=spot_options())[
        "Code"] == "MaxSpotInstanceCountExceeded"
    assert error_of(run_dlami, ec2, InstanceType="g4dn.2xlarge",
                    InstanceMarketOptions=spot_options())["Code"] == "MaxSpotInstanceCountExceeded"
    ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    run_dlami(ec2, InstanceMarketOptions=spot_options())


def test_a_dry_run_checks_permissions_only(aws) -> None:
    error = error_of(run_dlami, aws.client("ec2"), InstanceMarketOptions=spot_options(),
                     DryRun=True)
    assert error["Code"] == "DryRunOperation"


def test_min_count_asks_for_its_vcpus_at_once(aws) -> None:
    aws.set(quotas={G: 8})
    ec2 = aws.client("ec2")
    assert error_of(run_dlami, ec2, MinCount=3, MaxCount=3,
                    InstanceMarketOptions=spot_options())["Code"] == "MaxSpotInstanceCountExceeded"


def test_families_have_separate_quotas(aws) -> None:
    aws.set(quotas={G: 4})
    ec2 = aws.client("ec2")
    run_dlami(ec2, InstanceMarketOptions=spot_options())
    assert error_of(run_dlami, ec2, InstanceType="p4d.24xlarge",
                    InstanceMarketOptions=spot_options())["Code"] == "MaxSpotInstanceCountExceeded"
    run_dlami(ec2, InstanceType="t3.micro", InstanceMarketOptions=spot_options())  # 2 of 5


def test_through_a_launch_template_with_market_options(aws) -> None:
    ec2 = aws.client("ec2")
    ec2.create_launch_template(LaunchTemplateName="spot", LaunchTemplateData={
        "InstanceMarketOptions": spot_options()})
    error = error_of(run_dlami, ec2, LaunchTemplate={"LaunchTemplateName": "spot"})
    assert error["Code"] == "MaxSpotInstanceCountExceeded"


def test_other_quotas_go_to_moto(aws) -> None:
    # moto serves Service Quotas in a few regions only; its own answer comes back.
    error = error_of(aws.client("service-quotas").get_service_quota, ServiceCode="ec2",
                     QuotaCode="L-1216C47A")
    assert error["Code"] == "NoSuchResourceException"
    assert "not available in the current Region" in error["Message"]
