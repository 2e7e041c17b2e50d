"""Rule 8: DescribeSpotPriceHistory from the recorded, AWS-shaped history."""

from __future__ import annotations

import datetime as dt

import pytest

from localcloud.awslayer import prices
from localcloud.awslayer.testing import fixtures

aws, fresh_account = fixtures()

TYPES = ["g4dn.xlarge", "g4dn.2xlarge", "g5.xlarge", "g6.xlarge", "g6e.xlarge", "p3.2xlarge"]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_the_recording_covers_the_types_and_zones() -> None:
    have = {(e["InstanceType"], e["AvailabilityZone"]) for e in prices.recorded()}
    for region in ("us-east-1", "us-east-2"):
        for zone in "abc":
            for instance_type in TYPES:
                assert (instance_type, f"{region}{zone}") in have


def test_start_time_now_gives_the_current_price_per_zone(aws) -> None:
    ec2 = aws.client("ec2")
    answer = ec2.describe_spot_price_history(InstanceTypes=["g4dn.xlarge"], StartTime=now(),
                                             ProductDescriptions=["Linux/UNIX"])
    entries = answer["SpotPriceHistory"]
    assert sorted(e["AvailabilityZone"] for e in entries) == ["us-east-2a", "us-east-2b",
                                                              "us-east-2c"]
    assert len({e["SpotPrice"] for e in entries}) == 3, "zones must differ"
    assert all(e["Timestamp"] <= now() for e in entries)
    assert set(entries[0]) == {"AvailabilityZone", "InstanceType", "ProductDescription",
                               "SpotPrice", "Timestamp"}


def test_prices_move_over_ninety_days(aws) -> None:
    ec2 = aws.client("ec2")
    start = now() - dt.timedelta(days=90)
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=["g5.xlarge"], AvailabilityZone="us-east-2b", StartTime=start,
        ProductDescriptions=["Linux/UNIX"])
    entries = [e for page in pages for e in page["SpotPriceHistory"]]
    assert len(entries) > 20
    assert len({e["SpotPrice"] for e in entries}) > 10
    stamps = [e["Timestamp"] for e in entries]
    assert stamps == sorted(stamps, reverse=True), "newest first, as EC2 answers"
    assert stamps[-1] <= start + dt.timedelta(days=3)
    assert stamps[0] >= now() - dt.timedelta(days=1)


def test_a_window_has_its_changes_and_the_price_in_force_at_its_start(aws) -> None:
    ec2 = aws.client("ec2")
    start, end = now() - dt.timedelta(days=30), now() - dt.timedelta(days=20)
    entries = ec2.describe_spot_price_history(
        InstanceTypes=["g6.xlarge"], AvailabilityZone="us-east-2a", StartTime=start, EndTime=end,
        ProductDescriptions=["Linux/UNIX"])["SpotPriceHistory"]
    inside = [e for e in entries if start < e["Timestamp"] <= end]
    before = [e for e in entries if e["Timestamp"] <= start]
    assert inside and len(before) == 1
    assert len(inside) + len(before) == len(entries)


def test_filters(aws) -> None:
    ec2 = aws.client("ec2")
    entries = ec2.describe_spot_price_history(
        StartTime=now(), Filters=[{"Name": "instance-type", "Values": ["g5.*"]},
                                  {"Name": "product-description", "Values": ["Windows"]}])[
        "SpotPriceHistory"]
    assert {(e["InstanceType"], e["ProductDescription"]) for e in entries} == {
        ("g5.xlarge", "Windows")}
    east1 = aws.client("ec2", region="us-east-1").describe_spot_price_history(
        StartTime=now(), InstanceTypes=["p3.2xlarge"])["SpotPriceHistory"]
    assert {e["AvailabilityZone"] for e in east1} == {"us-east-1a", "us-east-1b", "us-east-1c"}
    assert aws.client("ec2", region="eu-west-1").describe_spot_price_history(
        StartTime=now())["SpotPriceHistory"] == []


def test_pages_follow_next_token(aws) -> None:
    ec2 = aws.client("ec2")
    first = ec2.describe_spot_price_history(InstanceTypes=["g4dn.xlarge"], MaxResults=5,
                                            ProductDescriptions=["Linux/UNIX"])
    assert len(first["SpotPriceHistory"]) == 5 and first["NextToken"]
    second = ec2.describe_spot_price_history(InstanceTypes=["g4dn.xlarge"], MaxResults=5,
                                             ProductDescriptions=["Linux/UNIX"],
                                             NextToken=first["NextToken"])
    assert second["SpotPriceHistory"][0]["Timestamp"] <= first["SpotPriceHistory"][-1][
        "Timestamp"]
    assert first["SpotPriceHistory"][-1] not in second["SpotPriceHistory"]


@pytest.mark.parametrize("token", ["garbage", "e30="])
def test_a_bad_token_is_an_error(aws, token) -> None:
    from localcloud.awslayer.testing import error_of

    error = error_of(aws.client("ec2").describe_spot_price_history, NextToken=token)
    assert error["Code"] == "InvalidNextToken"
