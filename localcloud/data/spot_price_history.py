"""Write spot-price-history.json: a synthetic, AWS-shaped spot price history.

AWS is not reachable from where the local cloud runs, so the history the
AWS layer serves is made here, once, and kept: per instance type and zone a
price that differs between zones and moves every one to three days over 90
days (a bounded random walk around a level near the real us-east prices of
late 2025). Entries carry their age in seconds; the layer dates them back
from the moment it answers. Re-run to regenerate (seeded: same output).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# Level (USD/hour, Linux/UNIX) near public us-east spot prices of late 2025.
LEVELS = {"g4dn.xlarge": 0.22, "g4dn.2xlarge": 0.32, "g5.xlarge": 0.41, "g6.xlarge": 0.37,
          "g6e.xlarge": 0.78, "p3.2xlarge": 0.95}
WINDOWS_EXTRA = {"g4dn.xlarge": 0.184, "g5.xlarge": 0.184}  # Windows licence per hour
REGIONS = {"us-east-1": 1.0, "us-east-2": 0.97}
ZONES = {"a": 1.00, "b": 0.93, "c": 1.06}
DAYS = 90


def series(rng: random.Random, level: float) -> list[tuple[int, float]]:
    """(age in seconds, price) changes, oldest first, the newest within the last day."""
    changes, age = [], DAYS * 86400 - rng.randrange(3600, 7200)
    price = level * rng.uniform(0.9, 1.1)
    while age > 0:
        changes.append((age, round(price, 4)))
        price = min(level * 1.35, max(level * 0.7, price * rng.uniform(0.94, 1.06)))
        age -= rng.randrange(86400, 3 * 86400)
    changes.append((rng.randrange(600, 20000), round(price * rng.uniform(0.97, 1.03), 4)))
    return changes


def main() -> None:
    rng = random.Random(20251129)  # noqa: S311 (a seeded walk, not secrets)
    history = []
    for region, region_factor in REGIONS.items():
        for zone, zone_factor in ZONES.items():
            for instance_type, level in LEVELS.items():
                products = {"Linux/UNIX": 0.0}
                if instance_type in WINDOWS_EXTRA:
                    products["Windows"] = WINDOWS_EXTRA[instance_type]
                for product, extra in products.items():
                    base = level * region_factor * zone_factor * rng.uniform(0.95, 1.05) + extra
                    for age, price in series(rng, base):
                        history.append({"AvailabilityZone": f"{region}{zone}",
                                        "InstanceType": instance_type,
                                        "ProductDescription": product,
                                        "SpotPrice": f"{price:.6f}", "AgeSeconds": age})
    out = Path(__file__).with_name("spot-price-history.json")
    out.write_text(json.dumps({
        "about": __doc__.strip().splitlines()[0] + " See spot_price_history.py.",
        "history": history}, indent=0) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
