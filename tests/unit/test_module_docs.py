"""Every custom module's DOCUMENTATION, EXAMPLES and RETURN are valid YAML
(ansible-doc and ansible-lint read them; a broken one only prints a warning), and its
documented options, with the doc fragments it extends merged as Ansible merges them,
are the options of its argument_spec, alike in type, default, choices and aliases."""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import ansible.module_utils
import pytest
import yaml
from ansible.module_utils import basic

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted((ROOT / "plugins" / "modules").glob("*.py"))


def doc_strings(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)
            and target.id in ("DOCUMENTATION", "EXAMPLES", "RETURN")}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_documentation_parses(path: Path) -> None:
    docs = doc_strings(path)
    assert set(docs) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    documentation = yaml.safe_load(docs["DOCUMENTATION"])
    assert documentation["module"] == path.stem
    assert isinstance(documentation["description"], list)
    assert all(isinstance(line, str) for line in documentation["description"])
    assert isinstance(yaml.safe_load(docs["EXAMPLES"]), list)
    assert isinstance(yaml.safe_load(docs["RETURN"]), dict)


@pytest.fixture(scope="module")
def merged_docs() -> dict:
    """The modules' documentation as ansible-doc shows it: Ansible itself merges the
    fragments, found where ansible.cfg's doc_fragment_plugins says."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    found = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-doc")), "--json", "-t", "module",
         *(path.stem for path in MODULES)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert found.returncode == 0, found.stderr
    return json.loads(found.stdout)


class _ArgumentSpec(Exception):
    """Raised in place of AnsibleModule's start, with the argument_spec it was given."""


def argument_spec(name: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The argument_spec module name's main() gives AnsibleModule (AnsibleAWSModule's
    connection options included: it hands AnsibleModule the whole spec)."""
    # The modules import the project's module_utils as Ansible ships them to a host.
    monkeypatch.setattr(ansible.module_utils, "__path__",
                        [*ansible.module_utils.__path__, str(ROOT / "plugins" / "module_utils")])

    def start(self: basic.AnsibleModule, argument_spec: dict, **_: object) -> None:
        raise _ArgumentSpec(argument_spec)

    monkeypatch.setattr(basic.AnsibleModule, "__init__", start)
    with pytest.raises(_ArgumentSpec) as raised:
        importlib.import_module(name).main()
    return raised.value.args[0]


def expected(options: dict, nested: str) -> dict:
    """What matters of each option, alike from an argument_spec (nested: "options") and from
    documented options (nested: "suboptions"), with Ansible's defaults where a key is absent."""
    return {name: {"type": option.get("type", "str"), "elements": option.get("elements"),
                   "required": option.get("required", False), "default": option.get("default"),
                   "choices": option.get("choices"), "aliases": sorted(option.get("aliases", [])),
                   "nested": expected(option.get(nested) or {}, nested)}
            for name, option in options.items()}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_documented_options_are_the_argument_spec(path: Path, merged_docs: dict,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    documented = expected(merged_docs[path.stem]["doc"].get("options") or {}, "suboptions")
    assert documented == expected(argument_spec(path.stem, monkeypatch), "options")


def test_a_disagreement_is_seen() -> None:
    spec = {"names": {"type": "dict", "default": {}}, "region": {"aliases": ["aws_region"]}}
    doc = {"names": {"type": "dict", "default": {}, "description": "x"},
           "region": {"type": "str", "aliases": ["aws_region"], "description": "x"}}
    assert expected(doc, "suboptions") == expected(spec, "options")
    for changed in ({**doc, "names": {"type": "dict"}}, {**doc, "names": {"type": "list"}},
                    {**doc, "region": {"type": "str"}}, {"names": doc["names"]},
                    {**doc, "names": {**doc["names"], "suboptions": {"a": {}}}}):
        assert expected(changed, "suboptions") != expected(spec, "options")
