"""spotbox_settings: settings converted from however they were given, and checked.

The conversions and rules are tested by calling the plugin's functions; the last
tests run it through ansible-playbook with -e key=value, JSON and a vars file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
_spec = importlib.util.spec_from_file_location(
    "spotbox_settings", ROOT / "plugins" / "action" / "spotbox_settings.py")
settings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(settings)
SettingError = settings.SettingError


@pytest.mark.parametrize(("kind", "given", "expected"), [
    ("int", 200, 200), ("int", "200", 200), ("int", " 200 ", 200), ("int", "-5", -5),
    ("int", 200.0, 200), ("int", "+7", 7),
    ("float", 0.5, 0.5), ("float", "0.5", 0.5), ("float", 1, 1.0), ("float", ".25", 0.25),
    ("float", "1e-3", 0.001),
    ("bool", True, True), ("bool", "yes", True), ("bool", "No", False), ("bool", "1", True),
    ("bool", "false", False), ("bool", 0, False), ("bool", "on", True), ("bool", "OFF", False),
    ("str", "text", "text"), ("str", 12, "12"), ("str", "3.10", "3.10"),
    ("list", ["a", "b"], ["a", "b"]), ("list", "a,b", ["a", "b"]), ("list", "a, b ,", ["a", "b"]),
    ("list", '["a", "b"]', ["a", "b"]), ("list", "[a, b]", ["a", "b"]), ("list", "one", ["one"]),
    ("list", "", []), ("list", ("a",), ["a"]),
    ("dict", {"k": 1}, {"k": 1}), ("dict", '{"k": 1}', {"k": 1}), ("dict", "{k: 1}", {"k": 1}),
    ("dict", "", {}),
    ("raw", "anything", "anything"), ("raw", [1], [1]),
    ("int", None, None), ("str", None, None),
])
def test_values_are_converted_to_the_spec_type(kind, given, expected) -> None:
    converted = settings.convert("x", given, kind)
    assert converted == expected
    assert type(converted) is type(expected)


@pytest.mark.parametrize(("kind", "given", "message"), [
    ("int", "abc", "x must be a whole number, not 'abc'"),
    ("int", "3.5", "x must be a whole number, not '3.5'"),
    ("int", 3.5, "x must be a whole number, not 3.5"),
    ("int", True, "x must be a whole number, not true"),
    ("int", "", "x must be a whole number, not ''"),
    ("int", [1], "x must be a whole number, not [1]"),
    ("float", "cheap", "x must be a number, not 'cheap'"),
    ("float", "nan", "x must be a number, not 'nan'"),
    ("float", False, "x must be a number, not false"),
    ("bool", "maybe", "x must be true or false (yes/no, 1/0), not 'maybe'"),
    ("bool", 2, "x must be true or false (yes/no, 1/0), not 2"),
    ("bool", "", "x must be true or false (yes/no, 1/0), not ''"),
    ("str", 3.1, "x must be text, not 3.1 (a number: YAML and JSON read 3.10 as 3.1; quote it"),
    ("str", True, "x must be text, not true (YAML reads yes/no/true/false/on/off as a boolean"),
    ("str", ["a"], "x must be text, not [\"a\"]"),
    ("str", {"a": 1}, "x must be text, not {\"a\": 1}"),
    ("list", {"a": 1}, "x must be a list (YAML/JSON, or comma-separated text like a,b), not"),
    ("list", "[a, b", "(it starts like a list but does not parse as one)"),
    ("list", True, "x must be a list"),
    ("dict", "k", "x must be a mapping (YAML/JSON, like {\"key\": 1}), not 'k'"),
    ("dict", [1], "x must be a mapping"),
])
def test_values_of_the_wrong_type_are_refused_in_one_line(kind, given, message) -> None:
    with pytest.raises(SettingError) as error:
        settings.convert("x", given, kind)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_path_is_expanded_on_the_controller(monkeypatch) -> None:
    monkeypatch.setenv("HOME", "/home/me")
    assert settings.convert("x", "~/k.pem", "path") == "/home/me/k.pem"


def test_list_elements_take_the_element_type() -> None:
    assert settings.convert("x", "1,2", "list", {"elements": "int"}) == [1, 2]
    with pytest.raises(SettingError, match=r"^x item 2 must be a whole number, not 'b'$"):
        settings.convert("x", "1,b", "list", {"elements": "int"})


def test_a_range_rule_words_the_type_error() -> None:
    rules = {"rules": [{"min": 1, "max": 16384,
                        "must": "a whole number of GiB between 1 and 16384"}]}
    with pytest.raises(SettingError) as error:
        settings.settle("size", "big", {"type": "int"}, rules)
    assert str(error.value) == "size must be a whole number of GiB between 1 and 16384, not 'big'"


@pytest.mark.parametrize(("rule", "good", "bad"), [
    ({"min": 1, "max": 10}, [1, 10, 5.5], [0, 11, -5, "x", None, True]),
    ({"above": 0}, [0.0001, 3], [0, -1, "cheap"]),
    ({"pattern": "^ami-[0-9a-f]{8,17}$"}, ["ami-0123abcd"],
     ["ami-doesnotexist", "xami-0123abcd", "ami-0123abcd\n", 5, True, ["ami-0123abcd"]]),
    ({"cidr": "ipv4"}, ["10.0.0.0/8", "203.0.113.7", "0.0.0.0/0", "203.0.113.7/32"],
     ["1.2.3.4/8", "example.com", "::1/128", "10.0.0.0/33"]),
    ({"absolute": True}, ["/opt/x", "/"], ["opt/x", "~/x", "", 5]),
    ({"absolute": True, "tilde": True}, ["~/x", "/x"], ["x", "~"[:0] + "rel/x"]),
    ({"not_in": ["/", "/opt"]}, ["/opt/x", "/optx"], ["/", "/opt", "/opt/"]),
    ({"min_length": 1}, [["a"], "a"], [[], ""]),
])
def test_each_rule_kind(rule, good, bad) -> None:
    rule = {**rule, "must": "as the rule says"}
    for value in good:
        settings.check_rule("v", value, rule)
    for value in bad:
        with pytest.raises(SettingError, match=r"^v must be as the rule says, not "):
            settings.check_rule("v", value, rule)


def test_a_cidr_with_host_bits_says_so() -> None:
    with pytest.raises(SettingError,
                       match=r"not '1\.2\.3\.4/8' \(1\.2\.3\.4/8 has host bits set\)"):
        settings.check_rule("c", "1.2.3.4/8", {"cidr": "ipv4", "must": "a network"})


def test_each_applies_to_items_values_or_keys() -> None:
    rules = {"rules": [{"pattern": "^[a-z]+$", "each": True, "must": "lower-case words"}]}
    settings.check_rules("w", ["ab", "cd"], rules)
    with pytest.raises(SettingError,
                       match=r"^w must be lower-case words, not 'C' \(in \[\"ab\", \"C\"\]\)$"):
        settings.check_rules("w", ["ab", "C"], rules)
    prices = {"rules": [{"above": 0, "each": True, "must": "positive prices"},
                        {"pattern": "^[a-z]+$", "each": "keys", "must": "lower-case keys"}]}
    settings.check_rules("p", {"ab": 0.5}, prices)
    with pytest.raises(SettingError, match=r"^p must be positive prices, not 0"):
        settings.check_rules("p", {"ab": 0}, prices)
    with pytest.raises(SettingError, match=r"^p must be lower-case keys, not 'AB'"):
        settings.check_rules("p", {"AB": 1}, prices)


def test_rule_messages_show_the_value_as_given() -> None:
    rules = {"rules": [{"min": 1, "max": 16384, "must": "between 1 and 16384"}]}
    with pytest.raises(SettingError, match=r"^s must be between 1 and 16384, not '-5'$"):
        settings.settle("s", "-5", {"type": "int"}, rules)
    with pytest.raises(SettingError, match=r"^s must be between 1 and 16384, not -5$"):
        settings.settle("s", -5, {"type": "int"}, rules)


def test_empty_means_not_set_and_skips_the_rules() -> None:
    rules = {"empty": True, "as": "float", "rules": [{"above": 0, "must": "a positive price"}]}
    for empty in ("", "  ", None):
        assert settings.settle("price", empty, {"type": "raw"}, rules) == ""
    assert settings.settle("price", "0.5", {"type": "raw"}, rules) == 0.5
    with pytest.raises(SettingError, match=r"^price must be a positive price, not '0'$"):
        settings.settle("price", "0", {"type": "raw"}, rules)


def test_choices_required_and_list_choices() -> None:
    option = {"type": "str", "choices": ["conda", "uv"]}
    assert settings.settle("b", "uv", option, None) == "uv"
    with pytest.raises(SettingError, match=r"^b must be one of conda, uv, not 'pip'$"):
        settings.settle("b", "pip", option, None)
    with pytest.raises(SettingError, match=r"^r must be set: Needed\.$"):
        settings.settle("r", None, {"type": "str", "required": True, "description": "Needed."},
                        None)
    many = {"type": "list", "elements": "str", "choices": ["a", "b"]}
    assert settings.settle("m", "a,b", many, None) == ["a", "b"]
    with pytest.raises(SettingError, match=r"^m must be one of a, b, not 'c'$"):
        settings.settle("m", "a,c", many, None)


def test_settle_all_takes_spec_defaults_for_missing_values() -> None:
    options = {"p": {"type": "int", "default": 8888}, "u": {"type": "str", "default": "ubuntu"}}
    assert settings.settle_all(options, {}, {"u": "me"}) == {"__p": 8888, "__u": "me"}


@pytest.mark.parametrize("rules", [
    {"x": {"rules": [{"min": 1}]}},                     # no must
    {"x": {"rules": [{"must": "something"}]}},          # no check
    {"x": {"rules": [{"minimum": 1, "must": "m"}]}},    # a typo
    {"x": {"empty": True, "rule": []}},                 # a typo at the variable
    {"x": {"rules": [{"pattern": "(", "must": "m"}]}},  # a broken regex
    ["x"],
])
def test_a_malformed_rules_file_is_refused(rules) -> None:
    with pytest.raises(Exception):  # noqa: B017 - AnsibleError or re.error
        settings.check_rules_file(rules, {"x": {}}, "rules.yml")


def entry_points(role: str) -> list[str]:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return list(specs["argument_specs"])


@pytest.mark.parametrize("role", ROLES)
def test_every_rule_names_an_option_of_the_role(role) -> None:
    rules_file = ROOT / "roles" / role / "meta" / "argument_rules.yml"
    assert rules_file.exists(), f"{role} has no meta/argument_rules.yml"
    names = set()
    for entry_point in entry_points(role):
        options, rules = settings.load_role(ROOT / "roles" / role, entry_point)
        names |= set(options)
    assert set(rules) - names == set(), "rules for variables the spec does not have"


@pytest.mark.parametrize("role", ROLES)
def test_the_role_defaults_pass_their_rules(role) -> None:
    """defaults/main.yml (its values without templates) pass, and so do spec defaults."""
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    plain = {k: v for k, v in defaults.items() if "{{" not in json.dumps(v)}
    for entry_point in entry_points(role):
        options, rules = settings.load_role(ROOT / "roles" / role, entry_point)
        facts = settings.settle_all(options, rules, plain)
        assert set(facts) == {f"__{name}" for name in options}


@pytest.mark.parametrize("role", ROLES)
def test_every_entry_point_starts_with_the_settings(role) -> None:
    """Each entry point's first task imports settings.yml (for main: the first file it
    imports does)."""
    tasks = ROOT / "roles" / role / "tasks"
    assert yaml.safe_load((tasks / "settings.yml").read_text())[0]["spotbox_settings"] is None
    for entry_point in entry_points(role):
        first = yaml.safe_load((tasks / f"{entry_point}.yml").read_text())[0]
        while first.get("ansible.builtin.import_tasks") not in (None, "settings.yml"):
            first = yaml.safe_load((tasks / first["ansible.builtin.import_tasks"]).read_text())[0]
        assert first.get("ansible.builtin.import_tasks") == "settings.yml", (
            f"{role} {entry_point}.yml does not start with the settings")


# Through ansible-playbook: a play that runs the jupyter role's settings step alone
# (tasks_from: settings, checked against the main entry point) on localhost.
PLAY = """
- name: Check the settings
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Run the settings step of the role
      ansible.builtin.import_role:
        name: jupyter
        tasks_from: settings
    - name: Show the converted values with their types
      ansible.builtin.debug:
        msg: "{{ {'port': __jupyter_port, 'next': __jupyter_port + 1,
          'port_type': __jupyter_port | type_debug, 'user': __jupyter_user} | to_json }}"
"""


def play(tmp_path: Path, *args: str):
    playbook = tmp_path / "play.yml"
    playbook.write_text(PLAY)
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inventory/localhost.yml",
         str(playbook), *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    tasks = json.loads(done.stdout)["plays"][0]["tasks"]
    return done.returncode, [task["hosts"]["localhost"] for task in tasks]


@pytest.mark.parametrize("how", [
    ["-e", "jupyter_port=9000", "-e", "jupyter_user=me"],
    ["-e", '{"jupyter_port": 9000, "jupyter_user": "me"}'],
    ["-e", '{"jupyter_port": "9000", "jupyter_user": "me"}'],
    ["-e", "@VARS"],
], ids=["key=value", "json", "json-text", "vars-file"])
def test_through_ansible_playbook_every_way_gives_the_same_values(tmp_path, how) -> None:
    (tmp_path / "vars.yml").write_text("jupyter_port: 9000\njupyter_user: me\n")
    how = [arg.replace("@VARS", f"@{tmp_path / 'vars.yml'}") for arg in how]
    code, results = play(tmp_path, *how)
    assert code == 0, results
    assert json.loads(results[1]["msg"]) == {"port": 9000, "next": 9001, "port_type": "int",
                                             "user": "me"}


def test_through_ansible_playbook_a_bad_value_fails_with_one_line(tmp_path) -> None:
    code, results = play(tmp_path, "-e", "jupyter_port=70000")
    assert code == 2
    assert results[0]["failed"] is True
    assert results[0]["msg"] == ("jupyter_port must be a whole number between 1 and 65535 "
                                 "(a TCP port), not '70000'")
    assert len(results) == 1, "nothing after the settings ran"


EXPLICIT = """
- name: Name the role and entry point (a play outside the role)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Check the jupyter settings, whose python cannot be worked out
      spotbox_settings:
        role: jupyter
      ignore_errors: true  # noqa: ignore-errors
    - name: Check the cuda settings of the link entry point
      spotbox_settings:
        role: cuda
        entry_point: link
    - name: Check the settings of a role that does not exist
      spotbox_settings:
        role: nosuchrole
      ignore_errors: true  # noqa: ignore-errors
"""


def test_role_and_entry_point_can_be_named_and_errors_are_one_line(tmp_path) -> None:
    playbook = tmp_path / "explicit.yml"
    playbook.write_text(EXPLICIT)
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json"}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "inventory/localhost.yml",
         str(playbook), "-e", "jupyter_python={{ no_such_variable }}", "-e", "cuda_version=12.4"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    tasks = json.loads(done.stdout)["plays"][0]["tasks"]
    jupyter, cuda, missing = (task["hosts"]["localhost"] for task in tasks)
    assert jupyter["failed"] is True
    assert jupyter["msg"].startswith("jupyter_python could not be worked out: ")
    assert "no_such_variable" in jupyter["msg"] and "\n" not in jupyter["msg"]
    assert cuda["ansible_facts"]["__cuda_version"] == "12.4"
    assert cuda["msg"] == "7 settings of cuda converted and checked"
    assert missing["failed"] is True
    assert "no role 'nosuchrole' with meta/argument_specs.yml found" in missing["msg"]
