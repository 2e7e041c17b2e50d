"""Filters for spotbox's roles: logic that is awkward in Jinja."""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from collections.abc import Mapping
from pathlib import Path

import yaml
from ansible.errors import AnsibleFilterError


def ssh_cidr(value: str, variable: str = "spot_instance_ssh_cidr", host_only: bool = False) -> str:
    """Normalise an IPv4 CIDR ('203.0.113.7' -> '203.0.113.7/32'); explain bad input.

    host_only: the value must be one address (a public-IP service's answer: an
    answer like '1.2.3.4/0' must not open SSH to the world).
    """
    text = str(value).strip()
    if host_only and "/" in text:
        raise AnsibleFilterError(f"{variable} must be one IPv4 address, not {text!r}")
    try:
        network = ipaddress.IPv4Network(text if "/" in text else f"{text}/32", strict=False)
    except ValueError as exc:
        raise AnsibleFilterError(
            f"{variable} must be an IPv4 address or CIDR like 203.0.113.7/32, not {text!r} ({exc})"
        ) from exc
    return str(network)


def _framework_data():
    """plugins/module_utils/spotbox_framework.py: the recorded builds, one place for
    the box's module and these filters."""
    spec = importlib.util.spec_from_file_location(
        "spotbox_framework", Path(__file__).resolve().parents[1] / "module_utils"
        / "spotbox_framework.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def framework_pip_lines(wheel_tag: str, framework: str = "torch", version: str = "",
                        index_base: str = "https://download.pytorch.org/whl",
                        find_links: str = "") -> list[str]:
    """pip lines that install exactly the framework build chosen for the box.

    wheel_tag: the cuda role's cuda_wheel_tag, the build chosen for the driver and
    the GPUs ("cu126", or "cpu"). version: the release ("" for the recorded
    default). The framework is pinned with its build (torch==2.13.0+cu126) and
    comes from its own index as THE index (--index-url: pip gives no index
    priority, so an extra index lets PyPI's default build win). find_links: a
    local folder or mirror holding the wheels instead of the index. Frameworks
    without recorded builds are plain requirements.
    """
    if framework in ("", "none"):
        return []
    if wheel_tag != "cpu" and not (wheel_tag.startswith("cu") and wheel_tag[2:].isdigit()
                                   and len(wheel_tag) in (5, 6)):
        raise AnsibleFilterError(f"cuda_wheel_tag must be 'cpu' or like 'cu126', "
                                 f"not {wheel_tag!r}")
    data = _framework_data()
    builds = data.builds_of(framework, version)
    if builds is not None and wheel_tag != "cpu" and wheel_tag not in builds:
        release = data.release_of(version or data.DEFAULT_RELEASE[framework])
        raise AnsibleFilterError(
            f"{framework} {release} has no {wheel_tag} build (it has {', '.join(builds)} and "
            f"cpu; plugins/module_utils/spotbox_framework.py): set conda_wheel_tag to one of "
            "them, or conda_framework_version to a release that has it")
    spec = data.requirement(framework, version, wheel_tag)
    if find_links:
        return [f"--find-links {find_links}", spec]
    if framework not in data.FRAMEWORK_BUILDS:
        return [spec]
    return [f"--index-url {index_base.rstrip('/')}/{wheel_tag}", spec]


def env_to_requirements(environment: dict, leave_out: list | None = None) -> list[str]:
    """pip requirement lines from a conda environment file's content.

    Conda dependencies become pip requirements ("pandas=2.2" -> "pandas==2.2"),
    python and pip are the interpreter's own, the pip: section is kept as is,
    less the lines in leave_out (the framework's, installed in a step of their
    own with their own index).
    """
    lines = []
    for dep in environment.get("dependencies", []):
        if isinstance(dep, dict):
            lines += [str(item) for item in dep.get("pip", [])
                      if str(item) not in (leave_out or [])]
            continue
        name = str(dep).split("::")[-1].strip()
        base = name.split("=")[0].split(">")[0].split("<")[0].strip()
        if base in ("python", "pip"):
            continue
        if "=" in name and not any(op in name for op in ("==", ">=", "<=", "!=")):
            base_name, _, pin = name.partition("=")
            name = f"{base_name}=={pin.rstrip('*').rstrip('.')}"
        lines.append(name)
    return lines


def conda_missing_packages(stderr: str) -> str:
    """A readable line from conda's PackagesNotFoundError, or ''."""
    if "PackagesNotFoundError" not in stderr:
        return ""
    names = [line.strip().lstrip("- ").strip() for line in stderr.splitlines()
             if line.strip().startswith("- ")]
    channels = [line.strip().lstrip("- ").strip() for line in
                stderr.split("Current channels:")[-1].splitlines() if line.strip().startswith("- ")]
    missing = [n for n in names if n not in channels]
    return (f"conda cannot find {', '.join(missing) or 'a package'} in the channels "
            f"{', '.join(channels) or '(none listed)'}; check the name, or add the channel "
            "that has it to conda_channels")


# What may reach an ssh config file or a printed command: a host entry's name
# with a space or "*" would apply to other hosts, a newline would add directives.
SSH_SAFE = {
    "name": re.compile(r"^[A-Za-z0-9._-]{1,64}$"),
    "host": re.compile(r"^[A-Za-z0-9.:-]{1,253}$"),
    "user": re.compile(r"^[a-z_][a-z0-9_-]{0,31}$"),
    "key": re.compile(r"^[A-Za-z0-9._/~+@-]*$"),
}


def ssh_target(box: Mapping, name: str) -> dict:
    """How ssh reaches a box, from its host vars: {"host", "user", "key"} (key "" when
    the inventory names none: ssh's own default). One place for the tunnel command
    and the ssh config entry; values that could change the meaning of either (a
    space, "*", a newline: an instance's tags could carry them) are refused."""
    target = {"host": str(box.get("ansible_host", name)),
              "user": str(box.get("ansible_user", "ubuntu")),
              "key": str(box.get("ansible_ssh_private_key_file", ""))}
    for field, value in (("name", str(name)), *target.items()):
        if not SSH_SAFE[field].match(value):
            raise AnsibleFilterError(
                f"host {name!r}: its ssh {field} {value!r} has characters that do not belong in "
                "an ssh config file; rename it (letters, digits, . _ - only)")
    return target


def ssh_config_entry(box: Mapping, name: str, local_port: int, remote_port: int) -> str:
    """A box's `Host` entry for an ssh config file: the route of its tunnel
    (`ssh -N NAME` opens it), from its host vars as ssh_target reads them."""
    target = ssh_target(box, name)
    lines = [f"Host {name}", f"  HostName {target['host']}", f"  User {target['user']}"]
    port = int(box.get("ansible_port") or 22)
    if port != 22:  # an SSH host of your own may listen elsewhere (ansible_port)
        lines.append(f"  Port {port}")
    if target["key"]:
        lines += [f"  IdentityFile {target['key']}", "  IdentitiesOnly yes"]
    lines.append(f"  LocalForward {int(local_port)} 127.0.0.1:{int(remote_port)}")
    return "\n".join(lines) + "\n"


def ssh_config_other_entries(text: str, names: list) -> str:
    """The `Host` entries of an ssh config file written by spotbox, less those of names
    (their new entries replace them): a run for some boxes keeps the others' routes."""
    kept, keep = [], False
    for line in str(text or "").splitlines():
        if line.startswith("Host "):
            keep = line.split(None, 1)[1].strip() not in set(map(str, names))
        elif not line.startswith("  "):  # the header comment, a blank line
            keep = False
        if keep:
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def ssh_config_ports(text: str) -> dict[str, int]:
    """Each `Host` entry's tunnel port in an ssh config file written by spotbox: {name: port}."""
    return {name: int(port) for name, port in re.findall(
        r"^Host (\S+)\n(?:  (?!LocalForward ).*\n)*  LocalForward (\d+) ", str(text or ""), re.M)}


def ssh_config_other_ports(text: str, names: list) -> list[int]:
    """The local ports of the tunnels in the entries ssh_config_other_entries keeps."""
    return list(ssh_config_ports(ssh_config_other_entries(text, names)).values())


def interruption_line(value) -> str:
    """One line about the previous instance's interruption (the box's fact
    spotbox_last_interruption: a message, or a mapping with one or with details)."""
    if isinstance(value, Mapping):
        for key in ("message", "msg", "summary"):
            if value.get(key):
                return " ".join(str(value[key]).split())
        return ", ".join(f"{key} {item}" for key, item in value.items()
                         if item not in (None, "", [], {}))
    return " ".join(str(value).split())


def access_summary(box: Mapping, name: str, choice: Mapping, remote_port: int, token: str,
                   ssh_config_file: str, check_mode: bool = False) -> list[str]:
    """The lines that say how to reach a box's Jupyter: why this local port, the tunnel
    command, the URL with the token (the only place it is printed), the ssh config
    entry's way, and the previous instance's interruption when the box knows one."""
    tunnel, url = _tunnel_and_url(box, name, choice, remote_port, token)
    lines = [str(choice["reason"]), f"tunnel  {tunnel}", f"url     {url}",
             f"or      ssh -N {name}   (with 'Include {ssh_config_file}' in ~/.ssh/config"
             f"{'; check mode writes no file' if check_mode else ''})"]
    if box.get("spotbox_last_interruption"):
        lines.append(f"last time  {interruption_line(box['spotbox_last_interruption'])}")
    return lines


def _tunnel_and_url(box: Mapping, name: str, choice: Mapping, remote_port: int,
                    token: str) -> tuple[str, str]:
    target = ssh_target(box, name)
    port = int(box.get("ansible_port") or 22)
    local = int(choice["port"])
    tunnel = ["ssh", *(["-i", target["key"]] if target["key"] else []),
              *(["-p", str(port)] if port != 22 else []),
              "-N", "-L", f"{local}:127.0.0.1:{int(remote_port)}",
              f"{target['user']}@{target['host']}"]
    return (" ".join(tunnel), f"http://127.0.0.1:{local}/lab?token="
            f"{token or '(check mode: the first real run makes the token)'}")


def access_table(hostvars: Mapping, ports: Mapping, ssh_config_file: str) -> str:
    """One table for several boxes: each box's name, address, local port and tunnel
    command, the URL (with the token) below its tunnel, and the previous instance's
    interruption when the box knows one; then the ssh config entries' way."""
    lines = [f"{'box':<24} {'address':<16} {'port':<6} tunnel, and below it the URL"]
    for name, choice in ports.items():
        box = hostvars[name]
        jupyter = box["access_jupyter"]
        tunnel, url = _tunnel_and_url(box, name, choice, jupyter["port"], jupyter["token"])
        lines += [f"{name:<24} {ssh_target(box, name)['host']:<16} {int(choice['port']):<6} "
                  f"{tunnel}", f"{'':<48} {url}"]
        reason = str(choice.get("reason", ""))
        if "taken" in reason or "in use" in reason:  # not the port it asked for, or busy: say why
            lines.append(f"{'':<48} {reason}")
        if box.get("spotbox_last_interruption"):
            lines.append(f"{'':<48} last time: "
                         f"{interruption_line(box['spotbox_last_interruption'])}")
    lines.append(f"or ssh -N NAME, with 'Include {ssh_config_file}' in ~/.ssh/config")
    return "\n".join(lines)


ROLES = Path(__file__).resolve().parents[2] / "roles"
# A box's own settings may be any spot_instance setting but these: the name is the
# box's, and the lists of boxes belong to the whole launch.
NOT_PER_BOX = frozenset({"spot_instance_name", "spot_instance_boxes", "spot_instance_names"})


def _spot_instance_meta() -> tuple[list[str], str, str]:
    """The spot_instance role's per-box settings and its rule for a box name (pattern and
    wording), read from its meta files: one source of truth."""
    meta = ROLES / "spot_instance" / "meta"
    spec = yaml.safe_load((meta / "argument_specs.yml").read_text(encoding="utf-8"))
    rules = yaml.safe_load((meta / "argument_rules.yml").read_text(encoding="utf-8"))
    [name_rule] = rules["spot_instance_name"]["rules"]
    options = sorted(set(spec["argument_specs"]["main"]["options"]) - NOT_PER_BOX)
    return options, name_rule["pattern"], name_rule["must"]


def boxes(listed, names=(), name: str = "course", only: str = "") -> list[dict]:
    """The boxes one run launches (or terminates): [{"name", "settings"}], in the order given.

    listed: spot_instance_boxes, each a mapping with `name` and any spot_instance setting
    for that box alone (`types` is short for spot_instance_types); names:
    spot_instance_names, identical boxes; neither: the one box `name`. only
    (spotbox_box): just that one of them. Bad input fails here, before any AWS call,
    naming the setting and the box.
    """
    options, pattern, must = _spot_instance_meta()
    listed, names = list(listed or []), list(names or [])
    if listed and names:
        raise AnsibleFilterError(
            "spot_instance_boxes and spot_instance_names are both set: give the boxes one way "
            "(spot_instance_names for identical boxes, spot_instance_boxes for boxes of their own)")
    chosen = []  # {"name", "settings", "place": the setting that gave it, for messages}
    for index, entry in enumerate(listed):
        place = f"spot_instance_boxes[{index}]"
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise AnsibleFilterError(
                f"{place} must be a mapping with a name, like {{name: alice, types: [g5.xlarge]}}, "
                f"not {entry!r}")
        settings = {}
        for key, value in entry.items():
            if key == "name":
                continue
            option = key if str(key).startswith("spot_instance_") else f"spot_instance_{key}"
            if option not in options:
                raise AnsibleFilterError(
                    f"{place} ({entry['name']}): {key!r} is not a setting a box may have; per box: "
                    f"name and any of {', '.join(options)}")
            settings[option] = value
        chosen.append({"name": str(entry["name"]), "settings": settings, "place": place})
    chosen += [{"name": str(item), "settings": {}, "place": f"spot_instance_names[{index}]"}
               for index, item in enumerate(names)]
    if not chosen:
        chosen = [{"name": str(name), "settings": {}, "place": "spot_instance_name"}]
    seen = set()
    for box in chosen:
        if not re.fullmatch(pattern, box["name"]):
            raise AnsibleFilterError(f"{box['place']} must be {must}, not {box['name']!r}")
        if box["name"] in seen:
            raise AnsibleFilterError(
                f"{box['place']}: the box {box['name']!r} is named twice; each box needs a name "
                "of its own")
        seen.add(box["name"])
    chosen = [{"name": box["name"], "settings": box["settings"]} for box in chosen]
    if only:
        chosen = [box for box in chosen if box["name"] == str(only)]
        if not chosen:
            raise AnsibleFilterError(
                f"spotbox_box {only!r} is not one of this run's boxes ({', '.join(sorted(seen))}); "
                "name one of them, or leave spotbox_box out for all")
    return chosen


class FilterModule:
    """spotbox's filters."""

    def filters(self):
        return {
            "spotbox_ssh_cidr": ssh_cidr,
            "spotbox_framework_pip_lines": framework_pip_lines,
            "spotbox_env_to_requirements": env_to_requirements,
            "spotbox_conda_missing_packages": conda_missing_packages,
            "spotbox_ssh_target": ssh_target,
            "spotbox_ssh_config_entry": ssh_config_entry,
            "spotbox_ssh_config_other_entries": ssh_config_other_entries,
            "spotbox_ssh_config_other_ports": ssh_config_other_ports,
            "spotbox_ssh_config_ports": ssh_config_ports,
            "spotbox_access_summary": access_summary,
            "spotbox_access_table": access_table,
            "spotbox_interruption_line": interruption_line,
            "spotbox_boxes": boxes,
        }
