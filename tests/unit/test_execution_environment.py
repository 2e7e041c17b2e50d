"""execution-environment.yml (ansible-builder, for AWX) pins what requirements.txt pins,
and names the collections file the controller uses."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def pins(lines) -> dict[str, str]:
    found = {}
    for line in lines:
        name, sep, version = line.split("#")[0].strip().partition("==")
        if sep:
            found[name.lower()] = version
    return found


def test_the_execution_environment_pins_the_controllers_versions() -> None:
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert ee["version"] == 3
    wanted = pins((ROOT / "requirements.txt").read_text().splitlines())
    deps = ee["dependencies"]
    given = pins([deps["ansible_core"]["package_pip"], *deps["python"]])
    assert given == {name: wanted[name] for name in ("ansible-core", "boto3", "botocore")}
    assert (ROOT / deps["galaxy"]).is_file()
    assert {c["name"] for c in yaml.safe_load((ROOT / deps["galaxy"]).read_text())[
        "collections"]} >= {"amazon.aws"}
