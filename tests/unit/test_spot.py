"""Spot offer logic on a recorded-shape DescribeSpotPriceHistory answer."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import spotbox_aws
import spotbox_spot as spot

FIXTURE = Path(__file__).parent / "fixtures" / "spot" / "us-east-2-history.json"


@pytest.fixture
def prices() -> dict:
    history = json.loads(FIXTURE.read_text())["SpotPriceHistory"]
    for entry in history:  # boto3 hands datetimes over
        entry["Timestamp"] = datetime.fromisoformat(entry["Timestamp"])
    return spot.latest_prices(history)


def test_latest_price_wins_and_other_products_are_ignored(prices: dict) -> None:
    assert prices[("g4dn.xlarge", "us-east-2a")] == 0.2198  # newest, not the older 0.19
    assert prices[("g4dn.xlarge", "us-east-2c")] == 0.1986  # not the SUSE entry
    assert len(prices) == 6


def test_cheapest_type_and_zone(prices: dict) -> None:
    result = spot.choose(prices, ["g4dn.xlarge", "g5.xlarge"])
    choice = result["choice"]
    # g4dn and g5 tie at 0.1986 in us-east-2c: the earlier type in the list wins.
    assert (choice["instance_type"], choice["zone"]) == ("g4dn.xlarge", "us-east-2c")
    assert choice["on_demand_price"] == 0.526
    assert choice["saving_percent"] == pytest.approx(62.2, abs=0.1)
    assert [r["spot_price"] for r in result["table"]] == sorted(
        r["spot_price"] for r in result["table"])


def test_preference_order_breaks_ties(prices: dict) -> None:
    choice = spot.choose(prices, ["g5.xlarge", "g4dn.xlarge"])["choice"]
    assert choice["instance_type"] == "g5.xlarge"


def test_existing_volume_pins_the_zone(prices: dict) -> None:
    result = spot.choose(prices, ["g4dn.xlarge", "g5.xlarge"], zones=["us-east-2a"])
    assert (result["choice"]["instance_type"], result["choice"]["zone"]) == (
        "g4dn.xlarge", "us-east-2a")
    assert not next(r for r in result["table"] if r["zone"] == "us-east-2c")["eligible"]


def test_max_price_filters_and_explains(prices: dict) -> None:
    assert spot.choose(prices, ["g5.xlarge"], max_price=0.39)["choice"]["zone"] == "us-east-2c"
    with pytest.raises(spot.SpotError, match=r"O\(max_price\) 0\.1 is below every "
                       r"current spot price; the cheapest is 0\.1986"):
        spot.choose(prices, ["g4dn.xlarge"], max_price=0.1)


def test_zone_without_offer(prices: dict) -> None:
    with pytest.raises(spot.SpotError, match="the data volume lives in us-east-2d"):
        spot.choose(prices, ["g4dn.xlarge"], zones=["us-east-2d"])
    with pytest.raises(spot.SpotError, match=r"no spot offer for p5\.48xlarge"):
        spot.choose(prices, ["p5.48xlarge"])


def described(name: str, gpu: dict | None = None, arches=("x86_64",), classes=("on-demand", "spot"),
              vcpus: int = 4) -> dict:
    """A DescribeInstanceTypes entry of the shape AWS answers."""
    entry = {"InstanceType": name, "ProcessorInfo": {"SupportedArchitectures": list(arches)},
             "SupportedUsageClasses": list(classes), "VCpuInfo": {"DefaultVCpus": vcpus}}
    if gpu:
        entry["GpuInfo"] = {"Gpus": [gpu]}
    return entry


T4 = {"Name": "T4", "Manufacturer": "NVIDIA", "Count": 1}


def test_check_types_keeps_nvidia_spot_types_of_the_amis_architecture() -> None:
    types = [described("g4dn.xlarge", T4), described("g5.2xlarge", {**T4, "Name": "A10G"}, vcpus=8)]
    assert spot.check_types(types, ["g4dn.xlarge", "g5.2xlarge"]) == {
        "g4dn.xlarge": {"gpu": "1x NVIDIA T4", "vcpus": 4},
        "g5.2xlarge": {"gpu": "1x NVIDIA A10G", "vcpus": 8}}


@pytest.mark.parametrize(("entry", "message"), [
    (described("t2.micro"), r"t2\.micro has no GPU"),
    (described("g4ad.xlarge", {"Name": "Radeon Pro V520", "Manufacturer": "AMD", "Count": 1}),
     r"g4ad\.xlarge has AMD GPUs, not NVIDIA's"),
    (described("g5g.xlarge", {**T4, "Name": "T4g"}, arches=("arm64",)),
     r"g5g\.xlarge is arm64, not x86_64 like the AMI"),
    (described("p4de.24xlarge", T4, classes=("on-demand",)), r"p4de\.24xlarge is not sold as spot"),
])
def test_check_types_refuses_what_the_dlami_cannot_use(entry: dict, message: str) -> None:
    with pytest.raises(spot.SpotError, match=rf"O\(instance_types\): {message}"):
        spot.check_types([described("g4dn.xlarge", T4), entry],
                         ["g4dn.xlarge", entry["InstanceType"]])


def test_quota_families() -> None:
    assert [spot.spot_quota_family(t) for t in (
        "g4dn.xlarge", "g6e.xlarge", "vt1.3xlarge", "p4d.24xlarge", "m5.large", "inf2.xlarge")] == [
        "G", "G", "G", "P", "Standard", None]


def test_quota_refusal_names_the_quota_and_how_to_raise_it() -> None:
    # A new account: 0 vCPUs for G and VT spot instances.
    line = spot.quota_refusal("g4dn.xlarge", 4, 0.0, 0, "us-east-2")
    assert '"All G and VT Spot Instance Requests" (L-3819A6DF) in us-east-2 is 0 vCPUs' in line
    assert "g4dn.xlarge needs 4" in line and "MaxSpotInstanceCountExceeded" in line
    assert ("aws service-quotas request-service-quota-increase --service-code ec2 "
            "--quota-code L-3819A6DF --desired-value 4 --region us-east-2") in line
    assert "servicequotas/home/services/ec2/quotas/L-3819A6DF?region=us-east-2" in line
    # What other spot instances of the family use counts too.
    assert "on top of the 4 your running" in spot.quota_refusal("g5.xlarge", 4, 4, 4, "us-east-1")
    assert spot.quota_refusal("g4dn.xlarge", 4, 8, 4, "us-east-2") is None
    assert spot.quota_refusal("p3.2xlarge", 8, 0, 0, "us-east-2").count("L-7212CCBC") == 3
    assert spot.quota_refusal("g4dn.xlarge", 4, None, 0, "us-east-2") is None  # unreadable


def test_root_volume_is_raised_to_the_amis_snapshot() -> None:
    assert spot.root_volume_size(50, 75) == (75, "O(root_volume_size) 50 GiB is "
                                                  "smaller than the AMI's root snapshot (75 GiB): "
                                                  "using 75 GiB")
    assert spot.root_volume_size(100, 75) == (100, "")
    assert spot.root_volume_size(100, None) == (100, "")


@pytest.mark.parametrize(("code", "expected"), [
    ("InsufficientInstanceCapacity", "no spot capacity for g4dn.xlarge in us-east-2a"),
    ("MaxSpotInstanceCountExceeded", "L-3819A6DF"),
    ("SpotMaxPriceTooLow", "O(max_price) is below the current spot price"),
    ("VcpuLimitExceeded", "vCPU limit"),
    ("UnauthorizedOperation", "docs/iam-policy.json"),
    ("AuthFailure.ServiceLinkedRoleCreationNotPermitted",
     "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"),
    ("InvalidBlockDeviceMapping", "O(root_volume_size)"),
    ("VPCIdNotSpecified", "O(subnet_id)"),
    ("SomethingNew", "AWS refused to launch g4dn.xlarge in us-east-2a (SomethingNew: why.)"),
])
def test_launch_errors_are_one_line_saying_what_to_do(code: str, expected: str) -> None:
    line = spot.launch_error_message(code, "why.", "g4dn.xlarge in us-east-2a")
    assert expected in line and "\n" not in line


def test_offers_are_the_eligible_rows_cheapest_first(prices: dict) -> None:
    result = spot.choose(prices, ["g4dn.xlarge", "g5.xlarge"], max_price=0.22)
    assert result["offers"][0] == result["choice"]
    assert all(o["eligible"] and o["spot_price"] <= 0.22 for o in result["offers"])
    assert [o["spot_price"] for o in result["offers"]] == sorted(
        o["spot_price"] for o in result["offers"])
    assert len(result["offers"]) < len(result["table"])


def test_table_lines(prices: dict) -> None:
    lines = spot.format_table(spot.choose(prices, ["g4dn.xlarge"], zones=["us-east-2b"])["table"])
    assert lines[0].split() == ["type", "zone", "spot", "$/h", "on-demand", "saving"]
    assert "(not eligible)" in lines[1]  # 2c is cheaper but not the volume's zone
    assert "us-east-2b" in lines[2] and "61%" in lines[2]


def test_a_throttled_run_instances_is_retried_with_growing_waits() -> None:
    from botocore.exceptions import ClientError

    def throttled(code="RequestLimitExceeded"):
        return ClientError({"Error": {"Code": code, "Message": "Request limit exceeded."}},
                           "RunInstances")

    answers, waits = [throttled(), throttled(), {"Instances": [{"InstanceId": "i-1"}]}], []

    def call():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    answer = spotbox_aws.retry_throttled(call, sleep=waits.append)
    assert answer == {"Instances": [{"InstanceId": "i-1"}]}
    assert len(waits) == 2 and 0.5 <= waits[0] <= 1 and 1 <= waits[1] <= 2
    with pytest.raises(ClientError):  # another error: at once
        spotbox_aws.retry_throttled(lambda: (_ for _ in ()).throw(throttled("Unsupported")),
                                    sleep=waits.append)
    assert len(waits) == 2
    with pytest.raises(ClientError):  # throttled every time: the last error
        spotbox_aws.retry_throttled(lambda: (_ for _ in ()).throw(throttled()), tries=3,
                                    sleep=waits.append)
    assert len(waits) == 4
