"""Filters for spotbox's roles: logic that is awkward in Jinja."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError


def ssh_cidr(value: str, variable: str = "spot_instance_ssh_cidr") -> str:
    """Normalise an IPv4 CIDR ('203.0.113.7' -> '203.0.113.7/32'); explain bad input."""
    text = str(value).strip()
    try:
        network = ipaddress.IPv4Network(text if "/" in text else f"{text}/32", strict=False)
    except ValueError as exc:
        raise AnsibleFilterError(
            f"{variable} must be an IPv4 address or CIDR like 203.0.113.7/32, not {text!r} ({exc})"
        ) from exc
    return str(network)


class FilterModule:
    """spotbox's filters."""

    def filters(self):
        return {"spotbox_ssh_cidr": ssh_cidr}
