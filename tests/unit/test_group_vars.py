"""inventory/group_vars/all.yml, where a user sets things, against the roles.

It holds every setting of every role at the role's default, so that the file
changes nothing until it is edited: a value set there is the default, a computed
default is there as a comment, and no setting is missing or unknown.
"""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALL = ROOT / "inventory" / "group_vars" / "all.yml"


def roles() -> dict[str, tuple[dict, dict]]:
    """{role: (defaults, main entry point's options)} of every role with a spec."""
    found = {}
    for spec in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        role = spec.parent.parent
        defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
        options = yaml.safe_load(spec.read_text())["argument_specs"]["main"]["options"]
        found[role.name] = (defaults, options)
    return found


def test_every_value_set_is_the_roles_default() -> None:
    settings = yaml.safe_load(ALL.read_text())
    defaults = {name: value for role_defaults, _ in roles().values()
                for name, value in role_defaults.items()}
    unknown = sorted(set(settings) - set(defaults))
    assert not unknown, f"not a role setting: {unknown}"
    differ = {name: (value, defaults[name]) for name, value in settings.items()
              if value != defaults[name]}
    assert not differ, f"all.yml differs from the roles' defaults (all.yml, default): {differ}"
    computed = sorted(name for name in settings if "{{" in str(settings[name]))
    assert not computed, f"computed defaults belong in comments there: {computed}"


def test_every_setting_is_there() -> None:
    text = ALL.read_text()
    settings = yaml.safe_load(text)
    commented = set(re.findall(r"^# ([a-z_]+):", text, re.MULTILINE))
    missing = {role: sorted(name for name in {*defaults, *options}
                            if name not in settings and name not in commented)
               for role, (defaults, options) in roles().items()}
    assert not any(missing.values()), f"settings missing from all.yml: {missing}"
    for name in commented & set(settings):
        raise AssertionError(f"{name} is both set and commented out")


def test_a_computed_default_is_commented_out_not_set() -> None:
    text = ALL.read_text()
    settings = yaml.safe_load(text)
    for _, (defaults, _) in roles().items():
        for name, value in defaults.items():
            if "{{" in str(value):
                assert name not in settings
                assert re.search(rf"^# {name}:", text, re.MULTILINE), name
