"""What a module's messages call its options.

A message names an option as O(name), Ansible's markup for an option. The
module's messages then say `name`, its own option; a role that calls the module
passes `names` with its variable names ({"version": "cuda_version"}), so that a
message it shows names the setting the user gave. O(name) never reaches a user.
"""

from __future__ import annotations

import re

OPTION = re.compile(r"O\(([a-z_]+)\)")

# The module option that carries the caller's names (argument_spec entry).
NAMES_SPEC = {"names": {"type": "dict", "default": {}}}

def named(value, names=None):
    """value (text, or a list or dict holding text) with O(option) written as the caller
    names the option, else as the option's own name."""
    names = names or {}
    if isinstance(value, str):
        return OPTION.sub(lambda match: str(names.get(match[1], match[1])), value)
    if isinstance(value, list):
        return [named(item, names) for item in value]
    if isinstance(value, dict):
        return {key: named(item, names) for key, item in value.items()}
    return value


def name_messages(module, own: dict | None = None) -> None:
    """Make module.fail_json, exit_json and warn write O(option) as module.params['names']
    says: every message of the module, wherever it is made. own: what this module calls a
    setting that shared code names otherwise (its option for O(udev_timeout), say)."""
    caller = module.params.get("names") or {}
    names = {**{key: caller.get(option, option) for key, option in (own or {}).items()}, **caller}
    fail_json, exit_json, warn = module.fail_json, module.exit_json, module.warn
    module.fail_json = lambda **result: fail_json(**named(result, names))
    module.exit_json = lambda **result: exit_json(**named(result, names))
    module.warn = lambda text: warn(named(text, names))
