"""Ansible action: convert and check a role's settings, whichever way they were given.

    - name: Check the settings
      spotbox_settings:      # both default to the role and entry point that run this task
        role: cuda
        entry_point: select

`-e key=value` hands every value over as text; JSON (`-e '{"k": 200}'`), group_vars
and defaults hand over typed values. Extra vars win over everything, so a role cannot
re-set them: this action reads each option of the role's entry point from
meta/argument_specs.yml (the source of truth for type, choices, elements, required),
takes its value from the task's variables (templated), converts it:

    int    200, "200", 200.0              -> 200      ("3.5", "abc", true: refused)
    float  0.5, "0.5", 1                  -> 0.5
    bool   true, "yes", "no", "1", 0 ...  -> True / False
    str    "text", 12                     -> "text", "12"  (3.1 or true: refused, since
           YAML turns 3.10 into 3.1 and yes into true; quote them)
    list   [a, b], "a,b", '["a", "b"]'   -> ["a", "b"]   (elements converted too)
    dict   {k: 1}, '{"k": 1}'             -> {"k": 1}
    path   "~/x"                          -> "/home/me/x" (expanded on the controller)
    raw    as given, or as the rules' `as:` type says

then applies the rules that a spec cannot express, from meta/argument_rules.yml
beside the spec, one check per rule:

    jupyter_port:
      rules:
        - min: 1                      # min / max (inclusive), above (exclusive)
          max: 65535
          must: a port number between 1 and 65535
    spot_instance_ami_id:
      empty: true                     # '' or null means "not set": no rule applies
      rules:
        - pattern: '^ami-[0-9a-f]{8,17}$'   # the whole text must match
          must: an AMI id like ami-0abcdef1234567890
    # other checks: cidr: ipv4 | absolute: true (tilde: true allows ~) |
    # not_in: [...] | min_length: N; `each: true` applies a rule to every list item
    # (or mapping value), `each: keys` to a mapping's keys; a raw option's
    # `as: float` (or list, int, ...) converts it.

It fails on the first setting at fault with one line that names the variable, the
value and what is accepted ("jupyter_port must be a port number between 1 and 65535,
not '70000'"). On success it sets a fact `__NAME` per option with the converted value
(`__jupyter_port: 8888`): task code uses those where the type matters. It runs on the
controller and never connects to the host.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase

SPECS = "argument_specs.yml"
RULES = "argument_rules.yml"

TYPE_TEXT = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false (yes/no, 1/0)",
    "str": "text",
    "path": "a path",
    "list": "a list (YAML/JSON, or comma-separated text like a,b)",
    "dict": "a mapping (YAML/JSON, like {\"key\": 1})",
    "raw": "a value",
}
TRUE = {"true", "yes", "on", "y", "t", "1"}
FALSE = {"false", "no", "off", "n", "f", "0"}
INTEGER = re.compile(r"[+-]?\d+")
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
RULE_CHECKS = ("min", "max", "above", "pattern", "cidr", "absolute", "not_in", "min_length")
RULE_KEYS = {*RULE_CHECKS, "must", "each", "tilde"}
VARIABLE_KEYS = {"empty", "as", "rules"}


class SettingError(Exception):
    """A setting at fault: the message is the one line the user sees."""


def shown(value: Any, limit: int = 80) -> str:
    """A value as the message shows it: text in quotes, anything else as JSON."""
    if isinstance(value, str):
        text = repr(str(value))
    else:
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 5]}[...]"


def _fail(name: str, must: str, value: Any, why: str = "") -> SettingError:
    return SettingError(f"{name} must be {must}, not {shown(value)}{why}")


def _first_range_text(variable_rules: Mapping) -> str | None:
    """The `must` of the first rule when it is a range: it says the type as well."""
    rules = variable_rules.get("rules") or []
    if rules and {"min", "max", "above"} & set(rules[0]) and not rules[0].get("each"):
        return rules[0].get("must")
    return None


def convert(name: str, value: Any, kind: str, option: Mapping | None = None,
            variable_rules: Mapping | None = None) -> Any:
    """value converted to the spec type kind; SettingError when it cannot be."""
    option = option or {}
    variable_rules = variable_rules or {}
    must = _first_range_text(variable_rules) or TYPE_TEXT.get(kind, kind)
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, bool):
            raise _fail(name, must, value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and INTEGER.fullmatch(value.strip()):
            return int(value.strip())
        raise _fail(name, must, value)
    if kind == "float":
        if isinstance(value, bool):
            raise _fail(name, must, value)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
        if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
            return float(value.strip())
        raise _fail(name, must, value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
            return value.strip().lower() in TRUE
        raise _fail(name, must, value)
    if kind in ("str", "path"):
        if isinstance(value, bool):
            raise _fail(name, must, value, " (YAML reads yes/no/true/false/on/off as a"
                                           " boolean: quote it)")
        if isinstance(value, float):
            raise _fail(name, must, value, " (a number: YAML and JSON read 3.10 as 3.1;"
                                           " quote it, like '3.10')")
        if isinstance(value, int):
            value = str(value)
        if not isinstance(value, str):
            raise _fail(name, must, value)
        value = str(value)
        return os.path.expanduser(os.path.expandvars(value)) if kind == "path" else value
    if kind == "list":
        items = _as_list(name, value, must)
        elements = option.get("elements")
        if elements:
            items = [convert(f"{name} item {index + 1}", item, elements)
                     for index, item in enumerate(items)]
        return items
    if kind == "dict":
        return _as_dict(name, value, must)
    if kind == "raw":
        return value
    raise SettingError(f"{name}: the argument spec's type {kind!r} is not one spotbox_settings "
                       f"knows ({', '.join(TYPE_TEXT)})")


def _parsed(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return None


def _as_list(name: str, value: Any, must: str) -> list:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            parsed = _parsed(text)
            if not isinstance(parsed, list):
                raise _fail(name, must, value, " (it starts like a list but does not parse as one)")
            return parsed
        return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(value, Mapping | bool):
        raise _fail(name, must, value)
    if isinstance(value, Sequence):
        return list(value)
    if isinstance(value, int | float):
        return [value]
    raise _fail(name, must, value)


def _as_dict(name: str, value: Any, must: str) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        parsed = _parsed(text)
        if isinstance(parsed, dict):
            return parsed
    raise _fail(name, must, value)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return float(value.strip())
    return None


def check_rule(name: str, value: Any, rule: Mapping, given: Any = None) -> None:
    """One rule on one (converted) value; SettingError with the rule's `must` when it
    fails, showing the value as given (default: value)."""
    must = rule["must"]
    given = value if given is None else given
    if {"min", "max", "above"} & set(rule):
        number = _number(value)
        if (number is None or ("min" in rule and number < rule["min"])
                or ("max" in rule and number > rule["max"])
                or ("above" in rule and number <= rule["above"])):
            raise _fail(name, must, given)
    if "pattern" in rule and not (isinstance(value, str | int) and not isinstance(value, bool)
                                  and re.fullmatch(rule["pattern"], str(value))):
        raise _fail(name, must, given)
    if rule.get("cidr"):
        try:
            ipaddress.IPv4Network(str(value) if "/" in str(value) else f"{value}/32")
        except ValueError as error:
            raise _fail(name, must, given, f" ({error})") from None
    if rule.get("absolute"):
        path = os.path.expanduser(str(value)) if rule.get("tilde") else str(value)
        if not isinstance(value, str) or not os.path.isabs(path):
            raise _fail(name, must, given)
    if "not_in" in rule and str(value).rstrip("/") in [str(v).rstrip("/") for v in rule["not_in"]]:
        raise _fail(name, must, given)
    if "min_length" in rule and len(value) < rule["min_length"]:
        raise _fail(name, must, given)


def check_rules(name: str, value: Any, variable_rules: Mapping, given: Any = None) -> None:
    """Every rule of one setting, in order, on its converted value."""
    for rule in variable_rules.get("rules") or []:
        each = rule.get("each")
        if not each:
            check_rule(name, value, rule, given)
            continue
        if each == "keys":
            items = list(value) if isinstance(value, Mapping) else []
        else:
            items = list(value.values()) if isinstance(value, Mapping) else list(value)
        for item in items:
            try:
                check_rule(name, item, rule)
            except SettingError as error:
                raise SettingError(f"{error} (in {shown(value if given is None else given)})"
                                   ) from None


def settle(name: str, value: Any, option: Mapping, variable_rules: Mapping | None) -> Any:
    """The converted, checked value of one setting (value None: not given)."""
    variable_rules = variable_rules or {}
    if variable_rules.get("empty") and _is_empty(value):
        return ""
    if value is None:
        if option.get("required"):
            raise SettingError(f"{name} must be set: {option.get('description', '')}".rstrip(": "))
        return None
    kind = option.get("type", "str")
    if kind == "raw" and variable_rules.get("as"):
        kind = variable_rules["as"]
    given, value = value, convert(name, value, kind, option, variable_rules)
    choices = option.get("choices")
    if choices:
        for item in value if kind == "list" else [value]:
            if item not in choices:
                raise _fail(name, "one of " + ", ".join(str(c) for c in choices), item)
    check_rules(name, value, variable_rules, given)
    return value


def check_rules_file(rules: Any, options: Mapping, where: str) -> dict:
    """The rules file's content, its shape checked (a typo must not disable a check)."""
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise AnsibleError(f"{where}: must be a mapping of variable names to rules")
    for name, variable_rules in rules.items():
        if not isinstance(variable_rules, Mapping) or set(variable_rules) - VARIABLE_KEYS:
            raise AnsibleError(f"{where}: {name} takes only {', '.join(sorted(VARIABLE_KEYS))}")
        for rule in variable_rules.get("rules") or []:
            if (not isinstance(rule, Mapping) or set(rule) - RULE_KEYS or "must" not in rule
                    or not set(rule) & set(RULE_CHECKS)):
                raise AnsibleError(f"{where}: each rule of {name} needs one check "
                                   f"({', '.join(RULE_CHECKS)}) and its 'must' text; got {rule}")
            if "pattern" in rule:
                re.compile(rule["pattern"])
    return dict(rules)


def load_role(role_path: str | Path, entry_point: str) -> tuple[dict, dict]:
    """(options of the entry point's spec, rules) of the role at role_path."""
    meta = Path(role_path) / "meta"
    specs = (yaml.safe_load((meta / SPECS).read_text(encoding="utf-8")) or {}).get(
        "argument_specs") or {}
    spec = specs.get(entry_point) or specs.get("main")
    if spec is None:
        raise AnsibleError(f"{meta / SPECS} has no entry point {entry_point!r} (nor main)")
    options = spec.get("options") or {}
    rules_file = meta / RULES
    rules = yaml.safe_load(rules_file.read_text(encoding="utf-8")) if rules_file.exists() else {}
    return options, check_rules_file(rules, options, str(rules_file))


def settle_all(options: Mapping, rules: Mapping, values: Mapping) -> dict:
    """{__NAME: converted value} for every option; SettingError at the first fault.

    values: what the task's variables hold (an option missing there takes the spec's
    default)."""
    facts = {}
    for name, option in options.items():
        option = option or {}
        value = values[name] if name in values else option.get("default")
        facts[f"__{name}"] = settle(name, value, option, rules.get(name))
    return facts


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("role", "entry_point"))
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        role = self._task._role
        name = self._task.args.get("role") or (role.get_name() if role else None)
        if not name:
            raise AnsibleActionFail("spotbox_settings needs role (it runs outside a role)")
        entry_point = self._task.args.get("entry_point") or (
            Path(role._from_files.get("tasks", "main")).stem if role else "main")
        if role is not None and role.get_name() == name:
            role_path = role._role_path
        else:
            role_path = self._find_role(name, task_vars)
        options, rules = load_role(role_path, entry_point)
        values = {}
        for option in options:
            if option in task_vars:
                try:
                    values[option] = self._templar.template(task_vars[option])
                except AnsibleError as error:
                    first = str(error.message if hasattr(error, "message") else error)
                    result.update(failed=True, msg=f"{option} could not be worked out: "
                                                   f"{first.splitlines()[0] if first else error}")
                    return result
        try:
            facts = settle_all(options, rules, values)
        except SettingError as error:
            result.update(failed=True, msg=str(error))
            return result
        result.update(changed=False, ansible_facts=facts,
                      msg=f"{len(facts)} settings of {name} converted and checked")
        return result

    def _find_role(self, name: str, task_vars: Mapping) -> str:
        base = Path(task_vars.get("playbook_dir", "."))
        for folder in [*self._get_roles_path(), str(base / "roles"), str(base / ".." / "roles")]:
            candidate = Path(folder) / name
            if (candidate / "meta" / SPECS).exists():
                return str(candidate)
        raise AnsibleActionFail(f"spotbox_settings: no role {name!r} with meta/{SPECS} found")

    @staticmethod
    def _get_roles_path() -> list[str]:
        from ansible import constants

        return [os.path.expanduser(p) for p in constants.DEFAULT_ROLES_PATH]
