"""Spot offer logic for the spot_instance role: latest prices, the cheapest
(type, zone), the table shown to the user. Pure functions, tested on
recorded describe_spot_price_history answers."""

from __future__ import annotations

import re
from datetime import datetime

# On-demand Linux prices in USD/hour, us-east-1 and us-east-2 (AWS's public
# price list, recorded 2025-11). AWS's Pricing API is the live source; this
# table only labels the saving. Override with spot_instance_on_demand_prices.
# Only types the Deep Learning Base OSS AMI supports (its release notes list
# G4dn, G5, G6, Gr6, G6e, P4, P4de, P5, P5e, P5en, P6-B200): not p2 (K80, no
# driver >= 470), p3 (dropped from the list) or g4ad (AMD GPUs).
ON_DEMAND_USD_PER_HOUR = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
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


def check_types(described: list[dict], requested: list[str],
                architecture: str = "x86_64") -> dict[str, dict]:
    """What spotbox needs to know of each requested type, from DescribeInstanceTypes.

    Returns {type: {"gpu": "1x NVIDIA T4", "vcpus": 4}}. SpotError, naming every
    type at fault, for a type without an NVIDIA GPU (the Deep Learning AMI's
    driver is NVIDIA's: g4ad's AMD GPUs would sit unused), of another
    architecture than the AMI's (RunInstances would refuse it), or not sold as
    spot (SupportedUsageClasses lacks "spot").
    """
    by_type = {t["InstanceType"]: t for t in described}
    info, problems = {}, []
    for name in requested:
        described_type = by_type[name]
        gpus = (described_type.get("GpuInfo") or {}).get("Gpus") or []
        if not gpus:
            problems.append(f"{name} has no GPU (AWS reports no GpuInfo)")
            continue
        gpu = gpus[0]
        if gpu.get("Manufacturer", "").upper() != "NVIDIA":
            problems.append(f"{name} has {gpu.get('Manufacturer', 'an unknown')} GPUs, "
                            "not NVIDIA's (the Deep Learning AMI's driver)")
            continue
        arches = described_type.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
        if arches and architecture not in arches:
            problems.append(f"{name} is {'/'.join(arches)}, not {architecture} like the AMI "
                            "(O(architecture))")
            continue
        classes = described_type.get("SupportedUsageClasses", [])
        if classes and "spot" not in classes:
            problems.append(f"{name} is not sold as spot")
            continue
        info[name] = {
            "gpu": f"{gpu.get('Count', 1)}x {gpu.get('Manufacturer', '')} {gpu['Name']}".strip(),
            "vcpus": int(described_type.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        }
    if problems:
        raise SpotError(f"O(instance_types): {'; '.join(problems)}. Choose NVIDIA GPU types "
                        "such as g4dn.xlarge, g5.xlarge or g6.xlarge")
    return info


# Spot vCPU quotas per instance family (Service Quotas, service code ec2). The
# EC2 User Guide's "Spot Instance quotas" page lists them; new accounts
# commonly start at 0 vCPUs for G/VT and P.
SPOT_QUOTAS = {
    "G": ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    "P": ("L-7212CCBC", "All P Spot Instance Requests"),
    "Standard": ("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
}


def spot_quota_family(instance_type: str) -> str | None:
    """The spot quota family of an instance type ("G", "P", "Standard"), or None."""
    letters = re.match(r"[a-z]+", instance_type.lower())
    prefix = letters.group(0) if letters else ""
    if prefix in ("g", "vt"):
        return "G"
    if prefix == "p":
        return "P"
    if len(prefix) == 1 and prefix in "acdhimrtz":
        return "Standard"
    return None  # F, Inf, Trn, X, ... have quotas of their own; GPU types are G or P


def quota_refusal(instance_type: str, vcpus: int, quota: float | None, in_use: int,
                  region: str) -> str | None:
    """Why the spot vCPU quota does not allow this type, with how to raise it; None if it does.

    quota: the applied (or default) value in vCPUs; in_use: vCPUs of the
    account's running spot instances of the same family.
    """
    family = spot_quota_family(instance_type)
    if family is None or quota is None:
        return None
    needed = in_use + vcpus
    if needed <= quota:
        return None
    code, name = SPOT_QUOTAS[family]
    wanted = max(needed, 4 * ((needed + 3) // 4))
    return (
        f"the spot vCPU quota \"{name}\" ({code}) in {region} is {quota:g} vCPUs; "
        f"{instance_type} needs {vcpus}" + (f" on top of the {in_use} your running spot "
                                            "instances use" if in_use else "")
        + f", so AWS would refuse the launch (MaxSpotInstanceCountExceeded). Ask for at least "
        f"{wanted}: https://console.aws.amazon.com/servicequotas/home/services/ec2/quotas/{code}"
        f"?region={region} or `aws service-quotas request-service-quota-increase "
        f"--service-code ec2 --quota-code {code} --desired-value {wanted} --region {region}` "
        "(new accounts often start at 0; AWS answers in hours to days). Nothing was created"
    )


def root_volume_size(requested: int, snapshot_size: int | None) -> tuple[int, str]:
    """The root volume size to ask for, and a note when the AMI's snapshot forced it up.

    EC2 refuses a root volume smaller than the AMI's snapshot
    (InvalidBlockDeviceMapping: botocore's EbsBlockDevice.VolumeSize: "you can
    specify a volume size that is equal to or larger than the snapshot size").
    """
    if snapshot_size and snapshot_size > requested:
        return snapshot_size, (f"O(root_volume_size) {requested} GiB is smaller than "
                               f"the AMI's root snapshot ({snapshot_size} GiB): using "
                               f"{snapshot_size} GiB")
    return requested, ""


# One line per launch error AWS answers, saying what to do. {detail} is AWS's
# own message. Codes: EC2 API reference, "Error codes for the Amazon EC2 API".
LAUNCH_ERRORS = {
    "InsufficientInstanceCapacity": "AWS has no spot capacity for {offer} right now "
    "(InsufficientInstanceCapacity). Add other types to O(instance_types), or try again later",
    "MaxSpotInstanceCountExceeded": "the account's spot vCPU quota does not allow {offer} "
    "(MaxSpotInstanceCountExceeded: {detail}). Ask for a higher \"All G and VT Spot Instance "
    "Requests\" (L-3819A6DF) or \"All P Spot Instance Requests\" (L-7212CCBC) quota in the "
    "Service Quotas console, or terminate another spot instance",
    "SpotMaxPriceTooLow": "O(max_price) is below the current spot price of {offer} "
    "(SpotMaxPriceTooLow: {detail}). Raise it, or leave it empty (capped at on-demand)",
    "VcpuLimitExceeded": "the account's vCPU limit does not allow {offer} (VcpuLimitExceeded: "
    "{detail}). Ask AWS for a higher quota in the Service Quotas console",
    "UnauthorizedOperation": "the AWS identity may not launch {offer} (UnauthorizedOperation: "
    "{detail}). Give it the policy in docs/iam-policy.json",
    "AuthFailure.ServiceLinkedRoleCreationNotPermitted": "the spot service-linked role "
    "AWSServiceRoleForEC2Spot does not exist and this identity may not create it. An "
    "administrator runs once: aws iam create-service-linked-role --aws-service-name "
    "spot.amazonaws.com",
    "InvalidBlockDeviceMapping": "AWS refused the disks of {offer} (InvalidBlockDeviceMapping: "
    "{detail}). Raise O(root_volume_size)",
    "VPCIdNotSpecified": "the region has no default VPC (VPCIdNotSpecified: {detail}). Set "
    "O(subnet_id) to a subnet of yours",
    "MissingInput": "AWS needs a subnet to launch {offer} (MissingInput: {detail}). Set "
    "O(subnet_id) to a subnet of yours",
    "InvalidParameterCombination": "AWS refused the spot settings for {offer} "
    "(InvalidParameterCombination: {detail})",
}
# Worth trying the next offer (another type or zone) for.
CAPACITY_ERRORS = {"InsufficientInstanceCapacity", "Unsupported"}


def launch_error_message(code: str, detail: str, offer: str) -> str:
    """One line for a RunInstances error: what happened and what to do."""
    template = LAUNCH_ERRORS.get(code)
    if template is None:
        return f"AWS refused to launch {offer} ({code}: {detail})"
    return template.format(offer=offer, detail=detail.rstrip("."))


def choose(
    prices: dict[tuple[str, str], float],
    types: list[str],
    zones: list[str] | None = None,
    max_price: float | None = None,
    on_demand: dict[str, float] | None = None,
) -> dict:
    """Pick the cheapest (type, zone); ties go to the earlier type, then the zone name.

    zones: when set, only these qualify (the data volume's zone).
    Returns {"choice": row, "table": rows, "offers": eligible rows} with rows sorted
    cheapest first: the offers are what a launch tries, in order, when AWS has no
    capacity for the first.
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
                        "try other O(instance_types) or another O(region)")
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
            f"O(max_price) {max_price} is below every current spot price; the "
            f"cheapest is {cheapest['spot_price']} for {cheapest['instance_type']} in "
            f"{cheapest['zone']}. Raise the max price or leave it empty (capped at on-demand)"
        )
    return {"choice": eligible[0], "table": rows, "offers": eligible}


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
