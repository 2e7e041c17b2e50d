"""Cost logic (plugins/module_utils/spotbox_cost.py) on a recorded-shape
DescribeSpotPriceHistory answer: newest first, several pools and products,
and the price in effect at the start time included, as AWS answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import spotbox_cost as cost

FIXTURE = Path(__file__).parent / "fixtures" / "cost" / "us-east-2-history.json"
POOL = ("g4dn.xlarge", "us-east-2a")
LAUNCH = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def history() -> list[dict]:
    entries = json.loads(FIXTURE.read_text())["SpotPriceHistory"]
    for entry in entries:  # boto3 hands datetimes over
        entry["Timestamp"] = datetime.fromisoformat(entry["Timestamp"])
    return entries


def test_the_cost_is_the_price_integrated_over_the_running_time(history) -> None:
    # 10:00-11:30:10 at 0.2812 (the change at 09:12:44 is in effect at launch),
    # 11:30:10-12:47:03 at 0.2954, 12:47:03-13:12:00 at 0.2890.
    run = cost.compute_cost(history, *POOL, LAUNCH, LAUNCH + timedelta(hours=3, minutes=12))
    expected = (0.2812 * 5410 + 0.2954 * 4613 + 0.2890 * 1497) / 3600
    assert run["seconds"] == 11520
    assert run["cost"] == pytest.approx(expected, abs=1e-9)
    assert round(run["cost"], 2) == 0.92
    assert run["average"] == pytest.approx(expected / 3.2)
    assert run["now"] == 0.289
    assert run["covered"] is True


def test_other_zones_types_and_operating_systems_do_not_count(history) -> None:
    # Windows (0.5123) and SUSE (0.4029) in the same zone, g5 and us-east-2b are other pools.
    run = cost.compute_cost(history, *POOL, datetime(2026, 11, 29, 12, 50, tzinfo=UTC),
                            datetime(2026, 11, 29, 13, 50, tzinfo=UTC))
    assert run["cost"] == pytest.approx(0.289)
    other = cost.compute_cost(history, "g4dn.xlarge", "us-east-2b", LAUNCH,
                              LAUNCH + timedelta(hours=4))
    # 0.2018 until 12:01:40, then 0.1971.
    assert other["cost"] == pytest.approx((0.2018 * 7300 + 0.1971 * 7100) / 3600)


def test_a_run_between_two_changes_pays_the_price_in_effect(history) -> None:
    start = datetime(2026, 11, 29, 11, 40, tzinfo=UTC)
    run = cost.compute_cost(history, *POOL, start, start + timedelta(minutes=30))
    assert run["cost"] == pytest.approx(0.2954 / 2)
    assert run["average"] == pytest.approx(0.2954)


def test_billing_is_per_whole_second(history) -> None:
    start = datetime(2026, 11, 29, 11, 40, tzinfo=UTC)
    run = cost.compute_cost(history, *POOL, start, start + timedelta(seconds=100.9))
    assert run["seconds"] == 100
    assert run["cost"] == pytest.approx(0.2954 * 100 / 3600)


def test_a_history_that_begins_after_the_launch_is_said(history) -> None:
    start = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)  # before the first change we hold
    run = cost.compute_cost(history, *POOL, start, datetime(2026, 11, 29, 9, 0, tzinfo=UTC))
    assert run["covered"] is False
    assert run["cost"] == pytest.approx(0.2812)  # the first known price, taken back


def test_no_price_means_unknown_not_zero(history) -> None:
    run = cost.compute_cost(history, "p4d.24xlarge", "us-east-2a", LAUNCH,
                            LAUNCH + timedelta(hours=1))
    assert (run["cost"], run["average"], run["now"], run["seconds"]) == (None, None, None, 3600)


def test_storage_prices_per_gb_month() -> None:
    assert cost.storage_monthly(100, "gp3") == pytest.approx(8.0)
    assert cost.storage_monthly(75, "gp3") == pytest.approx(6.0)
    assert cost.storage_monthly(100, "snapshot") == pytest.approx(5.0)
    assert cost.storage_monthly(100, "io2") is None  # not in the table: not guessed


def test_a_snapshot_bills_for_what_was_written_at_most() -> None:
    assert cost.snapshot_size_gib({"VolumeSize": 100}) == 100
    assert cost.snapshot_size_gib({"VolumeSize": 100,
                                   "FullSnapshotSizeInBytes": 12 * 2**30}) == 12


@pytest.mark.parametrize(("seconds", "text"), [
    (45, "45 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h 00 min"),
    (11520, "3 h 12 min"), (47 * 3600 + 59 * 60, "47 h 59 min"), (50 * 3600, "2 d 2 h")])
def test_durations_read_as_a_person_says_them(seconds, text) -> None:
    assert cost.duration(seconds) == text


def test_terminates_closing_line() -> None:
    assert cost.closing_line("course", 11520, 0.94, 8.0, 1) == (
        "this box (course) ran 3 h 12 min, about 0.94 USD; its data volume keeps costing "
        "8.00 USD a month")
    assert cost.closing_line("course", 600, None, 0.0, 0) == (
        "this box (course) ran 10 min, cost unknown (no spot price for its type and zone); "
        "nothing of it bills any more")
    assert cost.closing_line("course", None, 0.0, 8.0, 1, check_mode=True).startswith(
        "box course had no running instance; its data volume")
    assert cost.closing_line("course", 60, 0.01, 0, 0, check_mode=True).startswith(
        "box course has run 1 min")


BOXES = [
    {"name": "alpha", "region": "us-east-2", "state": "running", "type": "g4dn.xlarge",
     "zone": "us-east-2a", "seconds": 11520, "now": 0.289, "average": 0.2879, "cost": 0.92,
     "disks": "root 75 + data 100", "storage_monthly": 14.0, "notes": []},
    {"name": "keep", "region": "us-east-2", "state": "stopped", "type": "g4dn.xlarge",
     "zone": "us-east-2b", "seconds": 0, "now": None, "average": None, "cost": None,
     "disks": "root 75 + data 100", "storage_monthly": 14.0,
     "notes": ["stopped: no compute charge, its volumes still bill"]},
]
LOOSE = [
    {"kind": "volume", "id": "vol-1", "region": "us-east-2", "box": "beta",
     "what": "kept data volume", "monthly": 8.0, "hint": "launch.yml attaches it again"},
    {"kind": "spot request", "id": "sir-1", "region": "us-east-2", "box": "",
     "what": "open one-time request with no instance", "monthly": None},
]


def test_totals_now_and_per_month_if_left_as_it_is() -> None:
    totals = cost.summarise(BOXES, LOOSE)
    assert totals["compute_per_hour"] == pytest.approx(0.289)  # the stopped box costs no compute
    assert totals["storage_per_month"] == pytest.approx(36.0)
    assert totals["per_hour"] == pytest.approx(0.289 + 36.0 / 730)
    assert totals["per_month"] == pytest.approx(0.289 * 730 + 36.0)


def test_the_table_flags_what_bills_without_a_box_and_says_what_is_free() -> None:
    free = [{"kind": "security group", "id": "sg-1", "region": "us-east-2", "box": "beta"}]
    lines = cost.status_lines(BOXES, LOOSE, free, cost.summarise(BOXES, LOOSE))
    text = "\n".join(lines)
    assert lines[0].split() == ["box", "state", "type", "zone", "uptime", "$/h", "now", "$/h",
                                "avg", "so", "far", "$", "disks", "GiB", "$/month"]
    assert lines[1].split() == ["alpha", "running", "g4dn.xlarge", "us-east-2a", "3", "h", "12",
                                "min", "0.2890", "0.2879", "0.92", "root", "75", "+", "data",
                                "100", "14.00"]
    assert lines[2].split()[:5] == ["keep", "stopped", "g4dn.xlarge", "us-east-2b", "-"]
    assert "! volume vol-1 (us-east-2, box beta): 8.00 USD/month; kept data volume" in text
    assert "! spot request sir-1 (us-east-2): no charge by itself;" in text
    assert "  - launch.yml attaches it again" in lines
    assert "security group, key pair, launch template are not billed" in text
    assert "  security group sg-1 (us-east-2, box beta)" in text
    assert "total: 0.3383 USD/hour now; 246.97 USD/month if left as it is" in text
    assert "us-east-1 prices recorded 2026-11-29" in text


def test_no_box_is_said() -> None:
    lines = cost.status_lines([], [], [], cost.summarise([], []))
    assert "(no box of yours has an instance)" in lines
    assert "total: 0.0000 USD/hour now; 0.00 USD/month if left as it is" in lines
