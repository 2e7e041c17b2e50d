"""What a box has cost and what it still costs: spot compute over a price
history, EBS storage per GB-month, and the status table. Pure functions, tested
on recorded DescribeSpotPriceHistory answers (tests/unit/test_cost.py).

Compute: Linux spot instances pay the spot price in effect while they run,
"billed to the nearest second" (AWS whitepaper "Overview of Amazon EC2 Spot
Instances", How Spot Instances Work; the EC2 User Guide's "Billing for
interrupted Spot Instances" table: Linux, stopped or terminated by you,
"Charged for the seconds used"). The cost so far is therefore the integral of
the price over the running time, whole seconds, the price changing at the
history's timestamps. DescribeSpotPriceHistory "also returns the last price
change before the start time, which is the effective price as of the start
time" (botocore's documentation of the operation), so a history asked for
from the launch time covers the whole run.
"""

from __future__ import annotations

from datetime import UTC, datetime

# USD per GB-month in us-east-1, recorded 2026-11-29 (AWS's pricing pages
# cannot be reached from here; each figure with where AWS publishes it):
# - gp3 0.08, gp2 0.10: the Amazon EBS pricing page, as quoted with AWS's
#   Storage Blog "Migrate your Amazon EBS volumes from gp2 to gp3 and save up
#   to 20% on costs" (gp3 "up to 20% lower per GB compared to gp2").
# - snapshot 0.05 (standard tier): Amazon EBS User Guide, "Pricing and billing
#   for archiving Amazon EBS snapshots": "the standard rate for snapshots of
#   $0.05 per GB-month"; archive tier 0.0125 (same page).
# Other regions differ by a few percent; the figures label the order of size.
STORAGE_USD_PER_GB_MONTH = {
    "gp3": 0.08,
    "gp2": 0.10,
    "snapshot": 0.05,
    "snapshot-archive": 0.0125,
}
STORAGE_PRICES_SOURCE = "us-east-1 prices recorded 2026-11-29"
# An average month: 365 * 24 / 12 hours.
HOURS_PER_MONTH = 730
# Things spotbox leaves that have no price of their own: AWS's pricing
# whitepaper ("How AWS Pricing Works", Amazon EC2 and Amazon EBS) prices
# instances, volumes, snapshots, data transfer and addresses, and names no
# charge for security groups, key pairs or launch templates. (No AWS page
# saying "free" in so many words was found from here.)
FREE_KINDS = ("security group", "key pair", "launch template")


def _utc(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def price_steps(history: list[dict], instance_type: str, zone: str,
                product: str = "Linux/UNIX") -> list[tuple[datetime, float]]:
    """The (time, price) changes of one spot pool, oldest first.

    The product is matched by its start: older answers name the same pool
    "Linux/UNIX (Amazon VPC)".
    """
    steps = {}
    for entry in history:
        if (entry["InstanceType"] != instance_type or entry["AvailabilityZone"] != zone
                or not entry["ProductDescription"].startswith(product)):
            continue
        steps[_utc(entry["Timestamp"])] = float(entry["SpotPrice"])
    return sorted(steps.items())


def compute_cost(history: list[dict], instance_type: str, zone: str, start: datetime,
                 end: datetime) -> dict:
    """What a spot instance running from start to end cost, per second.

    Returns {"seconds", "cost", "average", "now", "covered"}: cost in USD, the
    average and the price at end in USD/hour, covered False when the history
    begins after start (the first price known is taken back to start, and the
    figure is an estimate). With no price at all, cost/average/now are None.
    """
    start, end = _utc(start), _utc(end)
    seconds = max(0, int((end - start).total_seconds()))
    steps = price_steps(history, instance_type, zone)
    if not steps:
        return {"seconds": seconds, "cost": None, "average": None, "now": None,
                "covered": False}
    covered = steps[0][0] <= start
    cost = 0.0
    for index, (stamp, price) in enumerate(steps):
        begin = start if index == 0 else max(stamp, start)
        finish = steps[index + 1][0] if index + 1 < len(steps) else end
        finish = min(finish, end)
        if finish > begin:
            cost += price * (finish - begin).total_seconds() / 3600
    # Whole seconds, as billed: the fraction after the last whole second is dropped.
    exact = (end - start).total_seconds()
    if exact > 0:
        cost *= seconds / exact
    now = [price for stamp, price in steps if stamp <= end]
    return {
        "seconds": seconds,
        "cost": cost,
        "average": cost * 3600 / seconds if seconds else (now[-1] if now else steps[0][1]),
        "now": now[-1] if now else steps[0][1],
        "covered": covered,
    }


def storage_monthly(size_gib: float, kind: str) -> float | None:
    """USD per month for size GiB of a volume type or of snapshot storage; None if unknown."""
    price = STORAGE_USD_PER_GB_MONTH.get(kind)
    return None if price is None else size_gib * price


def snapshot_size_gib(snapshot: dict) -> float:
    """The size a snapshot bills for at most, in GiB.

    Standard-tier snapshots bill for the blocks stored, the first one in full
    and later ones incrementally (EBS User Guide, snapshot pricing): the full
    size written (FullSnapshotSizeInBytes, where AWS gives it) is an upper
    bound, else the source volume's size.
    """
    full = snapshot.get("FullSnapshotSizeInBytes")
    if full:
        return full / 2**30
    return float(snapshot.get("VolumeSize") or 0)


def duration(seconds: float) -> str:
    """'3 h 12 min', '2 d 4 h', '45 s'."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def usd(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def closing_line(name: str, seconds: int | None, cost: float | None, kept_monthly: float,
                 kept_count: int, check_mode: bool = False) -> str:
    """terminate's last word on a box: what it ran and cost, what still bills.

    seconds None: the box had no running instance.
    """
    if seconds is None:
        ran = f"box {name} had no running instance"
    else:
        ran = (f"box {name} has run {duration(seconds)}" if check_mode
               else f"this box ({name}) ran {duration(seconds)}")
        ran += (f", about {usd(cost)} USD" if cost is not None
                else ", cost unknown (no spot price for its type and zone)")
    if kept_count:
        rest = (f"; its data volume keeps costing {usd(kept_monthly)} USD a month"
                if kept_count == 1 else
                f"; its {kept_count} data volumes keep costing {usd(kept_monthly)} USD a month")
    else:
        rest = "; nothing of it bills any more"
    return ran + rest


def summarise(boxes: list[dict], loose: list[dict]) -> dict:
    """Totals: USD per hour now and per month if left as it is.

    boxes: rows with "now" (USD/h of a running instance, else None) and
    "storage_monthly"; loose: things without a box with "monthly".
    """
    compute_hour = sum(b["now"] for b in boxes if b.get("now"))
    storage_month = (sum(b.get("storage_monthly") or 0 for b in boxes)
                     + sum(item.get("monthly") or 0 for item in loose))
    return {
        "per_hour": compute_hour + storage_month / HOURS_PER_MONTH,
        "per_month": compute_hour * HOURS_PER_MONTH + storage_month,
        "compute_per_hour": compute_hour,
        "storage_per_month": storage_month,
    }


def status_lines(boxes: list[dict], loose: list[dict], free: list[dict],
                 totals: dict) -> list[str]:
    """The table a person reads at a glance, then what bills without a box,
    what is left but free, and the totals."""
    width = max([3] + [len(b["name"]) for b in boxes])
    lines = [f"{'box':<{width}}  {'state':<8} {'type':<12} {'zone':<12} {'uptime':>11} "
             f"{'$/h now':>8} {'$/h avg':>8} {'so far $':>9}  {'disks GiB':<20} {'$/month':>8}"]
    for b in boxes:
        running = b["state"] == "running"
        lines.append(
            f"{b['name']:<{width}}  {b['state']:<8} {b['type']:<12} {b['zone']:<12} "
            f"{duration(b['seconds']) if running else '-':>11} "
            f"{usd(b['now'], 4) if running else '-':>8} "
            f"{usd(b['average'], 4) if running else '-':>8} "
            f"{usd(b['cost']) if running else '-':>9}  "
            f"{b['disks']:<20} {usd(b['storage_monthly']):>8}")
        lines += [f"{'':<{width}}  - {note}" for note in b.get("notes", [])]
    if not boxes:
        lines.append("(no box of yours has an instance)")
    if loose:
        lines.append("")
        lines.append("bills without a box (!):")
        for item in loose:
            cost = (f"{usd(item['monthly'])} USD/month" if item.get("monthly") is not None
                    else "no charge by itself")
            lines.append(f"  ! {item['kind']} {item['id']} ({item['region']}"
                         f"{', box ' + item['box'] if item.get('box') else ''}): "
                         f"{cost}; {item['what']}")
        hints = [item["hint"] for item in loose if item.get("hint")]
        lines += [f"  - {hint}" for hint in dict.fromkeys(hints)]
    if free:
        lines.append("")
        lines.append("left behind, free (" + ", ".join(FREE_KINDS) + " are not billed):")
        lines += [f"  {item['kind']} {item['id']} ({item['region']}, box {item['box']})"
                  for item in free]
    lines.append("")
    lines.append(f"total: {usd(totals['per_hour'], 4)} USD/hour now; "
                 f"{usd(totals['per_month'])} USD/month if left as it is")
    lines.append(f"       (a month of {HOURS_PER_MONTH} h at today's spot prices; storage at "
                 f"{STORAGE_PRICES_SOURCE})")
    return lines
