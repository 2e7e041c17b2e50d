"""Spot offer logic for the spot_instance role: latest prices, the cheapest
(type, zone), the table shown to the user. Pure functions, tested on
recorded describe_spot_price_history answers."""

from __future__ import annotations

from datetime import datetime

# On-demand Linux prices in USD/hour, us-east-1 and us-east-2 (AWS's public
# price list, recorded 2025-11). AWS's Pricing API is the live source; this
# table only labels the saving. Override with spot_instance_on_demand_prices.
ON_DEMAND_USD_PER_HOUR = {
    "p2.xlarge": 0.90,
    "p3.2xlarge": 3.06,
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g4ad.xlarge": 0.37853,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.12xlarge": 5.672,
    "g6.xlarge": 0.8048,
    "g6.2xlarge": 0.9776,
    "g6e.xlarge": 1.861,
    "p4d.24xlarge": 32.7726,
}


class SpotError(Exception):
    """A problem the user must act on; the message says what to do."""


def latest_prices(history: list[dict]) -> dict[tuple[str, str], float]:
    """The newest Linux/UNIX price per (instance type, zone) in a price history."""
    newest: dict[tuple[str, str], tuple[datetime, float]] = {}
    for entry in history:
        if not entry["ProductDescription"].startswith("Linux/UNIX"):
            continue
        key = (entry["InstanceType"], entry["AvailabilityZone"])
        stamp = entry["Timestamp"]
        if key not in newest or stamp > newest[key][0]:
            newest[key] = (stamp, float(entry["SpotPrice"]))
    return {key: price for key, (_, price) in newest.items()}


def gpu_check(described: list[dict], requested: list[str]) -> dict[str, str]:
    """GPU description per requested type; SpotError for GPU-less types."""
    by_type = {t["InstanceType"]: t for t in described}
    gpus, without = {}, []
    for name in requested:
        info = by_type[name].get("GpuInfo")
        if not info or not info.get("Gpus"):
            without.append(name)
            continue
        gpu = info["Gpus"][0]
        gpus[name] = f"{gpu.get('Count', 1)}x {gpu.get('Manufacturer', '')} {gpu['Name']}".strip()
    if without:
        raise SpotError(
            f"spot_instance_types: {', '.join(without)} has no GPU (AWS reports no GpuInfo); "
            "choose a GPU type such as g4dn.xlarge, g5.xlarge or g6.xlarge"
        )
    return gpus


def choose(
    prices: dict[tuple[str, str], float],
    types: list[str],
    zones: list[str] | None = None,
    max_price: float | None = None,
    on_demand: dict[str, float] | None = None,
) -> dict:
    """Pick the cheapest (type, zone); ties go to the earlier type, then the zone name.

    zones: when set, only these qualify (the data volume's zone).
    Returns {"choice": row, "table": rows} with rows sorted cheapest first.
    """
    on_demand = on_demand if on_demand is not None else ON_DEMAND_USD_PER_HOUR
    rows = []
    for (itype, zone), price in prices.items():
        if itype not in types:
            continue
        demand = on_demand.get(itype)
        rows.append({
            "instance_type": itype,
            "zone": zone,
            "spot_price": price,
            "on_demand_price": demand,
            "saving_percent": round(100 * (1 - price / demand), 1) if demand else None,
            "eligible": (not zones or zone in zones)
            and (max_price is None or price <= max_price),
        })
    rows.sort(key=lambda r: (r["spot_price"], types.index(r["instance_type"]), r["zone"]))
    if not rows:
        raise SpotError(f"no spot offer for {', '.join(types)} in this region; "
                        "try other spot_instance_types or another spot_instance_region")
    eligible = [r for r in rows if r["eligible"]]
    if not eligible:
        in_zone = [r for r in rows if not zones or r["zone"] in zones]
        if not in_zone:
            raise SpotError(
                f"the data volume lives in {', '.join(zones or [])}, where none of "
                f"{', '.join(types)} is offered as spot; add a type offered there"
            )
        cheapest = in_zone[0]
        raise SpotError(
            f"spot_instance_max_price {max_price} is below every current spot price; the "
            f"cheapest is {cheapest['spot_price']} for {cheapest['instance_type']} in "
            f"{cheapest['zone']}. Raise the max price or leave it empty (capped at on-demand)"
        )
    return {"choice": eligible[0], "table": rows}


def format_table(rows: list[dict]) -> list[str]:
    """Lines of a plain table: type, zone, spot, on-demand, saving."""
    lines = [f"{'type':<14} {'zone':<12} {'spot $/h':>9} {'on-demand':>10} {'saving':>7}"]
    for r in rows:
        demand = f"{r['on_demand_price']:.4f}" if r["on_demand_price"] else "n/a"
        saving = f"{r['saving_percent']:.0f}%" if r["saving_percent"] is not None else "n/a"
        mark = "" if r["eligible"] else "  (not eligible)"
        lines.append(f"{r['instance_type']:<14} {r['zone']:<12} {r['spot_price']:>9.4f} "
                     f"{demand:>10} {saving:>7}{mark}")
    return lines
