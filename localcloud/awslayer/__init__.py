"""The local cloud's AWS layer: a proxy between the AWS clients and moto.

moto answers the API; the layer enforces the rules of AWS that a spotbox
user meets on a real account and moto does not model (see
localcloud/README.md for each rule, the AWS sentence it models and the error
AWS answers). Start it with ``python -m localcloud.awslayer --port P
--moto-port M --state DIR`` (``localcloud.moto.start`` does).
"""

from __future__ import annotations

import importlib

RULE_MODULES = ("iam", "account", "amis", "quotas", "capacity", "spot", "prices")


def load_rules() -> None:
    """Import the rule modules: each registers its hooks with core."""
    for name in RULE_MODULES:
        importlib.import_module(f"{__name__}.{name}")
