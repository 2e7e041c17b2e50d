"""The local cloud's AWS layer: a proxy between the AWS clients and moto.

moto answers the API; the layer enforces the rules of AWS that a spotbox
user meets on a real account and moto does not model (see
localcloud/README.md for each rule, the AWS sentence it models and the error
AWS answers). Start it with ``python -m localcloud.awslayer --port P
--moto-port M --state DIR`` (``localcloud.moto.start`` does).
"""

from __future__ import annotations

import importlib

RULE_MODULES = ("iam", "account", "amis", "quotas", "capacity", "spot", "prices", "addresses",
                "templates", "shutdown")


def load_rules() -> None:
    """Import the rule modules: each registers its hooks with core."""
    for name in RULE_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def interrupt(record: dict, instance_id: str, action: str) -> dict:
    """Have the running layer interrupt a spot instance as EC2 does (stop/hibernate/terminate).

    record is the registry's moto record; the answer names the request's new state.
    """
    import json
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{record['port']}/localcloud-awslayer/interrupt", method="POST",
        data=json.dumps({"instance_id": instance_id, "action": action}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())
