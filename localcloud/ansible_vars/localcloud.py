"""Ansible vars plugin: what the local cloud knows about the box behind an inventory host.

``python -m localcloud ansible-env`` enables it (ANSIBLE_VARS_PLUGINS,
ANSIBLE_VARS_ENABLED). For a host whose ansible_host is the address of an
instance in this local cloud (the aws_ec2 inventory that launch.yml writes
sets it), it gives ``spotbox_imds_endpoint``: the box's IMDS stand-in on
127.0.0.1, which roles/spot_watch uses instead of AWS's 169.254.169.254. So the
provisioning play needs no flag for it. Elsewhere (no local cloud, an address
no instance here has) it gives nothing.
"""

from __future__ import annotations

DOCUMENTATION = """
name: localcloud
short_description: the local cloud's facts about the box behind a host (spotbox_imds_endpoint)
description:
  - For a host whose ansible_host is the address of an instance in the local cloud named by
    SPOTBOX_LOCALCLOUD_STATE, sets spotbox_imds_endpoint to the box's IMDS stand-in.
options: {}
"""

import os  # noqa: E402 (Ansible reads DOCUMENTATION first)
import time  # noqa: E402

from ansible.plugins.vars import BaseVarsPlugin  # noqa: E402

_found: dict[str, str] = {}
# Ansible asks for a host's vars at every task: an address no instance has is
# looked up again only after a while (it may be a box still being launched).
_missing: dict[str, float] = {}
MISSING_TTL = 5.0


def endpoint_for(address: str) -> str | None:
    """The IMDS stand-in of the box whose instance has address (cached when found)."""
    if address in _found:
        return _found[address]
    if not os.environ.get("SPOTBOX_LOCALCLOUD_STATE"):
        return None
    if time.monotonic() - _missing.get(address, -MISSING_TTL) < MISSING_TTL:
        return None
    _missing[address] = time.monotonic()
    try:
        from localcloud import sshproxy
        from localcloud.registry import Registry

        instance = sshproxy.instance_at(Registry(), address)
    except Exception:  # not a local cloud's address, or no local cloud running
        return None
    from localcloud import boxes

    box = boxes.by_instance(Registry(), instance["InstanceId"])
    if box and box.get("imds_endpoint"):
        _missing.pop(address, None)
        _found[address] = box["imds_endpoint"]
        return box["imds_endpoint"]
    return None


class VarsModule(BaseVarsPlugin):
    REQUIRES_ENABLED = True

    def get_vars(self, loader, path, entities, cache=True):
        super().get_vars(loader, path, entities)
        found = {}
        for entity in entities if isinstance(entities, list) else [entities]:
            address = getattr(entity, "vars", {}).get("ansible_host")
            if isinstance(address, str) and address:
                endpoint = endpoint_for(address)
                if endpoint:
                    found["spotbox_imds_endpoint"] = endpoint
        return found
