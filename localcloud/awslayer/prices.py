"""DescribeSpotPriceHistory from a recorded, AWS-shaped history (data/spot-price-history.json).

moto prices every offer alike; spotbox chooses the cheapest zone, so the
layer serves prices that differ by type and zone and move over time. The
history is synthetic (AWS is not reachable here) and dated back from the
moment of the call, so it always spans the last 90 days.

"When you specify a start and end time, the operation returns the prices of
the instance types within that time range. It also returns the last price
change before the start time, which is the effective price as of the start
time." (botocore ec2 DescribeSpotPriceHistory). StartTime: "up to the past
90 days"; EndTime: "up to the current date".
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import functools
import json
from pathlib import Path
from typing import Any

from . import core

HISTORY = Path(__file__).resolve().parent.parent / "data" / "spot-price-history.json"
KEPT = dt.timedelta(days=90)
DEFAULT_PAGE = 1000


@functools.cache
def recorded() -> list[dict[str, Any]]:
    return json.loads(HISTORY.read_text(encoding="utf-8"))["history"]


def _time(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        when = value
    else:
        text = str(value).replace("Z", "+00:00")
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            when = dt.datetime.fromtimestamp(float(text), dt.UTC)
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _wanted(entry: dict[str, Any], params: dict[str, Any], region: str) -> bool:
    zone = entry["AvailabilityZone"]
    if not zone.startswith(region) or zone[len(region):] not in ("a", "b", "c", "d", "e", "f"):
        return False
    if params.get("InstanceTypes") and entry["InstanceType"] not in params["InstanceTypes"]:
        return False
    if (params.get("ProductDescriptions")
            and entry["ProductDescription"] not in params["ProductDescriptions"]):
        return False
    if params.get("AvailabilityZone") and zone != params["AvailabilityZone"]:
        return False
    fields = {"availability-zone": "AvailabilityZone", "instance-type": "InstanceType",
              "product-description": "ProductDescription", "spot-price": "SpotPrice"}
    for flt in params.get("Filters") or []:
        field = fields.get(flt["Name"])
        if field and not any(fnmatch.fnmatchcase(entry[field], v) for v in flt.get("Values", [])):
            return False
    return True


def history(params: dict[str, Any], region: str, anchor: dt.datetime) -> list[dict[str, Any]]:
    """The answer's entries, newest first, for a call made at anchor."""
    end = min(_time(params["EndTime"]), anchor) if params.get("EndTime") else anchor
    start = _time(params["StartTime"]) if params.get("StartTime") else anchor - KEPT
    start = max(start, anchor - KEPT)
    series: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for entry in recorded():
        if _wanted(entry, params, region):
            key = (entry["InstanceType"], entry["AvailabilityZone"], entry["ProductDescription"])
            series.setdefault(key, []).append(entry)
    answer = []
    for entries in series.values():
        dated = sorted(({**{k: e[k] for k in ("AvailabilityZone", "InstanceType",
                                              "ProductDescription", "SpotPrice")},
                         "Timestamp": anchor - dt.timedelta(seconds=e["AgeSeconds"])}
                        for e in entries), key=lambda e: e["Timestamp"])
        in_force = [e for e in dated if e["Timestamp"] <= start]
        if in_force:
            answer.append(in_force[-1])  # the price in effect at the start time
        answer += [e for e in dated if start < e["Timestamp"] <= end]
    answer.sort(key=lambda e: e["Timestamp"], reverse=True)
    return answer


@core.before("ec2", "DescribeSpotPriceHistory")
def describe_spot_price_history(layer: core.Layer, call: core.Call) -> core.Reply:
    params = call.params()
    offset, anchor = 0, core.now().replace(microsecond=0)
    if params.get("NextToken"):
        try:
            token = json.loads(base64.urlsafe_b64decode(params["NextToken"]))
            offset, anchor = int(token["offset"]), _time(token["anchor"])
        except (ValueError, KeyError, TypeError):
            raise core.AwsError("InvalidNextToken", "The specified NextToken is not valid.") \
                from None
    page = int(params.get("MaxResults") or DEFAULT_PAGE)
    entries = history(params, call.region, anchor)
    data: dict[str, Any] = {"SpotPriceHistory": entries[offset:offset + page]}
    if offset + page < len(entries):
        token = {"offset": offset + page, "anchor": anchor.isoformat()}
        data["NextToken"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
    else:
        data["NextToken"] = ""
    return core.ec2_answer("DescribeSpotPriceHistory", data)
