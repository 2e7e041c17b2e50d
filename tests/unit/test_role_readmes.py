"""The docs a newcomer reads stay true: each role's README matches its
argument spec (scripts/role-readme), the spec matches defaults/main.yml, the
root README stays short, and every relative link resolves in the repo."""

from __future__ import annotations

import re
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    loader = SourceFileLoader("role_readme", str(ROOT / "scripts" / "role-readme"))
    module = module_from_spec(spec_from_loader("role_readme", loader))
    loader.exec_module(module)
    return module


gen = _load_generator()
ROLES = gen.roles()
DOCS = [ROOT / "README.md", *sorted(ROOT.glob("roles/*/README.md")),
        *sorted(ROOT.glob("docs/*.md")), ROOT / "bench" / "README.md"]
# [text](target) and [text]: target; images alike. Code spans are removed first.
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def test_there_are_roles() -> None:
    assert {"conda", "cuda", "data_volume", "jupyter", "spot_instance", "spot_watch"} <= {
        r.name for r in ROLES}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_readme_matches_spec(role: Path) -> None:
    readme = role / "README.md"
    assert readme.exists(), f"{readme.relative_to(ROOT)} is missing: run {gen.FIX}"
    text = readme.read_text()
    assert text.count(gen.BEGIN) == 1 and text.count(gen.END) == 1, (
        f"{readme.relative_to(ROOT)}: one pair of generated-section markers expected")
    assert gen.refresh(text, gen.render(role)) == text, (
        f"{readme.relative_to(ROOT)} disagrees with meta/argument_specs.yml: run {gen.FIX}")


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_readme_has_galaxy_sections(role: Path) -> None:
    text = (role / "README.md").read_text()
    assert gen.TODO not in text, f"roles/{role.name}/README.md still has TODO notes to fill in"
    positions = [text.find(s + "\n") for s in gen.SECTIONS]
    missing = [s for s, p in zip(gen.SECTIONS, positions, strict=True) if p < 0]
    assert missing == [], f"roles/{role.name}/README.md lacks sections"
    assert positions == sorted(positions), "sections out of Galaxy's order"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_defaults_and_spec_agree(role: Path) -> None:
    options = gen.all_options(gen.load_specs(role))
    defaults = gen.load_defaults(role)
    assert sorted(set(defaults) - set(options)) == [], "in defaults/main.yml, not in the spec"
    assert sorted(set(options) - set(defaults)) == [], "in the spec, not in defaults/main.yml"
    differ = {k: (o["default"], defaults[k]) for k, o in options.items()
              if "default" in o and o["default"] != defaults[k]}
    assert differ == {}, "spec default != defaults/main.yml value"
    undescribed = [k for k, o in options.items() if not str(o.get("description", "")).strip()]
    assert undescribed == []


def test_generator_notices_drift(tmp_path: Path) -> None:
    role = tmp_path / "roles" / "demo_role"
    (role / "meta").mkdir(parents=True)
    (role / "defaults").mkdir()
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    short_description: A demo.\n    options:\n"
        "      demo_role_port:\n        type: int\n        default: 8888\n"
        "        description: The port.\n")
    (role / "defaults" / "main.yml").write_text("demo_role_port: 8888\n")
    assert gen.problems(tmp_path) == [
        f"roles/demo_role/README.md is missing: run {gen.FIX} to start it"]
    gen.write(tmp_path)
    text = (role / "README.md").read_text()
    assert "| `demo_role_port` | `8888` | int |  | no | The port. |" in text
    assert gen.problems(tmp_path) == []
    assert gen.TODO in text  # a started README is not finished
    spec = role / "meta" / "argument_specs.yml"
    spec.write_text(spec.read_text().replace("8888", "8890"))
    assert gen.problems(tmp_path) == [
        f"roles/demo_role/README.md differs from demo_role/meta/argument_specs.yml: run {gen.FIX}"]
    gen.write(tmp_path)
    assert gen.problems(tmp_path) == []
    assert "`8890`" in (role / "README.md").read_text()


def test_root_readme_is_short() -> None:
    size = len((ROOT / "README.md").read_text())
    assert size < 9000, f"README.md has {size} characters; move detail to docs/ or a role README"


@pytest.mark.parametrize("doc", [d for d in DOCS if d.exists()],
                         ids=lambda d: str(d.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    text = CODE.sub("", doc.read_text())
    broken = []
    for match in LINK.finditer(text):
        target = (match.group(1) or match.group(2)).split("#")[0]
        if not target or re.match(r"[a-z]+:", target):
            continue  # an anchor in the same page, or a URL
        path = (doc.parent / target).resolve()
        if not path.exists() or ROOT not in path.parents:
            broken.append(target)
    assert broken == [], f"{doc.relative_to(ROOT)}: links that do not resolve in the repo"


def test_readme_links_nothing_outside() -> None:
    text = (ROOT / "README.md").read_text()
    assert "../shared" not in text
