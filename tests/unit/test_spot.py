"""Spot offer logic on a recorded-shape DescribeSpotPriceHistory answer."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
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
    with pytest.raises(spot.SpotError, match=r"spot_instance_max_price 0\.1 is below every "
                       r"current spot price; the cheapest is 0\.1986"):
        spot.choose(prices, ["g4dn.xlarge"], max_price=0.1)


def test_zone_without_offer(prices: dict) -> None:
    with pytest.raises(spot.SpotError, match="the data volume lives in us-east-2d"):
        spot.choose(prices, ["g4dn.xlarge"], zones=["us-east-2d"])
    with pytest.raises(spot.SpotError, match=r"no spot offer for p5\.48xlarge"):
        spot.choose(prices, ["p5.48xlarge"])


def test_gpu_check_refuses_gpu_less_types() -> None:
    described = [
        {"InstanceType": "g4dn.xlarge", "GpuInfo": {"Gpus": [
            {"Name": "T4", "Manufacturer": "NVIDIA", "Count": 1}]}},
        {"InstanceType": "t2.micro"},
    ]
    assert spot.gpu_check(described, ["g4dn.xlarge"]) == {"g4dn.xlarge": "1x NVIDIA T4"}
    with pytest.raises(spot.SpotError, match=r"spot_instance_types: t2\.micro has no GPU"):
        spot.gpu_check(described, ["g4dn.xlarge", "t2.micro"])


def test_table_lines(prices: dict) -> None:
    lines = spot.format_table(spot.choose(prices, ["g4dn.xlarge"], zones=["us-east-2b"])["table"])
    assert lines[0].split() == ["type", "zone", "spot", "$/h", "on-demand", "saving"]
    assert "(not eligible)" in lines[1]  # 2c is cheaper but not the volume's zone
    assert "us-east-2b" in lines[2] and "61%" in lines[2]
