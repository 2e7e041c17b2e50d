#!/usr/bin/python
"""Ansible module: discover CUDA toolkits and the NVIDIA driver, choose a toolkit."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cuda_toolkit_info
short_description: Find installed CUDA toolkits, read the NVIDIA driver, choose a toolkit
description:
  - Lists the toolkits under I(prefix)/cuda-X.Y, reading each version from
    version.json, version.txt, C(bin/nvcc --version) or C(bin/ptxas --version),
    else the folder name.
  - Reads the driver version and the newest CUDA it supports from C(nvidia-smi),
    and the GPUs with their compute capability from C(nvidia-smi --query-gpu).
  - Chooses the framework build (the newest CUDA build of the framework release
    that the driver and every GPU run, from the data recorded in
    module_utils/spotbox_framework.py; the CPU build without a usable GPU).
    C(auto) then prefers the toolkit of that build's CUDA (same X.Y, else the
    same major); an explicit I(version) of another major is a warning.
  - Chooses the toolkit to make the default and fails, with what to do, when the
    requested one is missing or newer than the driver supports.
  - A box without toolkits (the driver alone, or no GPU at all) is not an error;
    nothing is selected (I(selected.short) is empty), unless I(version) names a
    toolkit or I(require_toolkit) is true. Framework wheels bring their own CUDA
    runtime and need only the driver.
  - Changes nothing; runs in check mode.
options:
  version:
    description: C(auto) (the newest toolkit the driver supports) or C(X.Y).
    type: str
    default: auto
  require_gpu:
    description: Fail when no usable NVIDIA driver or GPU is found (else warn).
    type: bool
    default: false
  require_toolkit:
    description: Fail when no toolkit is installed under I(prefix) (else select none).
    type: bool
    default: false
  prefix:
    description: Folder that holds the cuda-X.Y toolkits and the cuda link.
    type: path
    default: /usr/local
  nvidia_smi:
    description: The nvidia-smi command.
    type: str
    default: nvidia-smi
  framework:
    description: The framework whose build is chosen (C(torch)), or C(none).
    type: str
    default: torch
  framework_version:
    description: The framework release (C(2.13.0)); empty for the recorded default.
    type: str
    default: ""
  entries:
    description:
      - Files that make a toolkit the default (the role's PATH and linker entries);
        those that exist are returned in I(entries_present), so that a box without
        toolkits loses them in the same run without another look.
    type: list
    elements: path
    default: []
extends_documentation_fragment:
  - spotbox_names
author: spotbox
"""

EXAMPLES = r"""
- name: Choose CUDA 12.4
  cuda_toolkit_info:
    version: "12.4"
  register: cuda_info
"""

RETURN = r"""
toolkits:
  description: Installed toolkits, oldest first.
  returned: always
  type: list
  elements: dict
  sample: [{"version": "12.4.131", "short": "12.4", "path": "/usr/local/cuda-12.4",
            "source": "bin/ptxas"}]
current:
  description: Where the I(prefix)/cuda link points now, or null.
  returned: always
  type: str
  sample: /usr/local/cuda-11.8
driver:
  description: Driver state from nvidia-smi (state, driver_version, cuda_version, message).
  returned: always
  type: dict
  sample: {"state": "ok", "driver_version": "550.127.05", "cuda_version": "12.4"}
entries_present:
  description: The files of I(entries) that exist.
  returned: always
  type: list
  elements: str
  sample: [/etc/profile.d/spotbox-cuda.sh]
gpus:
  description: GPUs (index, name, memory_mib, pci_bus_id).
  returned: always
  type: list
  elements: dict
framework_build:
  description: The framework build chosen for the driver and the GPUs, and why.
  returned: always
  type: dict
  sample: {"framework": "torch", "release": "2.13", "tag": "cu126", "cuda": "12.6",
           "reason": "the newest build of torch 2.13 that driver 550.127.05 ... run"}
selected:
  description:
    - The chosen toolkit with major, minor and wheel_tag (cu124).
    - Without a toolkit, version, short, major, minor and path are empty strings
      and wheel_tag follows the driver alone (cpu without a usable GPU).
  returned: success
  type: dict
  sample: {"version": "12.4.131", "short": "12.4", "major": 12, "minor": 4,
           "path": "/usr/local/cuda-12.4", "wheel_tag": "cu124"}
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.spotbox_cuda import (
    GPU_QUERY,
    GPU_QUERY_CAP,
    CudaError,
    folder_version,
    major_mismatch,
    parse_gpu_query,
    parse_nvidia_smi,
    parse_tool_version,
    parse_version_json,
    parse_version_txt,
    select,
    short,
    wheel_tag,
)
from ansible.module_utils.spotbox_framework import choose_build
from ansible.module_utils.spotbox_names import NAMES_SPEC, name_messages


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return None


def toolkit_version(module: AnsibleModule, path: str) -> tuple[str | None, str]:
    """Version of the toolkit at path and where it was read from."""
    text = _read(os.path.join(path, "version.json"))
    if text and (version := parse_version_json(text)):
        return version, "version.json"
    text = _read(os.path.join(path, "version.txt"))
    if text and (version := parse_version_txt(text)):
        return version, "version.txt"
    for tool in ("nvcc", "ptxas"):
        binary = os.path.join(path, "bin", tool)
        if os.access(binary, os.X_OK):
            rc, out, _ = module.run_command([binary, "--version"])
            if rc == 0 and (version := parse_tool_version(out)):
                return version, f"bin/{tool}"
    return folder_version(os.path.basename(path)), "folder name"


def discover(module: AnsibleModule, prefix: str) -> list[dict]:
    kits = []
    for name in sorted(os.listdir(prefix)) if os.path.isdir(prefix) else []:
        path = os.path.join(prefix, name)
        if not folder_version(name) or os.path.islink(path) or not os.path.isdir(path):
            continue
        version, source = toolkit_version(module, path)
        if version:
            kits.append({"version": version, "short": short(version), "path": path,
                         "source": source})
    return kits


def read_driver(module: AnsibleModule, nvidia_smi: str) -> tuple[dict, list[dict]]:
    binary = module.get_bin_path(nvidia_smi) if "/" not in nvidia_smi else nvidia_smi
    if not binary or not os.access(binary, os.X_OK):
        return {"state": "no_driver", "message": "nvidia-smi not found: no NVIDIA driver"}, []
    rc, out, err = module.run_command([binary])
    driver = parse_nvidia_smi(rc, out, err)
    if driver["state"] != "ok":
        return driver, []
    for query in (GPU_QUERY_CAP, GPU_QUERY):  # older drivers know no compute_cap
        rc, out, _ = module.run_command(
            [binary, f"--query-gpu={query}", "--format=csv,noheader,nounits"])
        if rc == 0:
            return driver, parse_gpu_query(out)
    return driver, []


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "version": {"type": "str", "default": "auto"},
            "require_gpu": {"type": "bool", "default": False},
            "require_toolkit": {"type": "bool", "default": False},
            "prefix": {"type": "path", "default": "/usr/local"},
            "nvidia_smi": {"type": "str", "default": "nvidia-smi"},
            "entries": {"type": "list", "elements": "path", "default": []},
            "framework": {"type": "str", "default": "torch"},
            "framework_version": {"type": "str", "default": ""},
            **NAMES_SPEC,
        },
        supports_check_mode=True,
    )
    name_messages(module)
    prefix = module.params["prefix"]
    kits = discover(module, prefix)
    link = os.path.join(prefix, "cuda")
    current = os.path.realpath(link) if os.path.islink(link) else None
    driver, gpus = read_driver(module, module.params["nvidia_smi"])
    result = {"changed": False, "toolkits": kits, "current": current, "driver": driver,
              "gpus": gpus, "entries_present": [path for path in module.params["entries"]
                                                if os.path.lexists(path)]}
    usable = driver["state"] == "ok" and gpus
    if not usable:
        why = driver.get("message") or "nvidia-smi lists no GPU"
        if module.params["require_gpu"]:
            module.fail_json(msg=f"O(require_gpu) is true but {why}. Use a GPU instance "
                             "type (g4dn, g5, p3, ...) with the Deep Learning Base AMI", **result)
        module.warn(f"No usable GPU: {why}. Frameworks get their CPU build"
                    + ("; a toolkit is still chosen among those installed" if kits else ""))
    driver_cuda = driver.get("cuda_version") if driver["state"] == "ok" else None
    build = choose_build(module.params["framework"], module.params["framework_version"],
                         driver, gpus if usable else [])
    result["framework_build"] = build
    if usable and build["tag"] == "cpu" and module.params["framework"] not in ("", "none"):
        module.warn(f"The framework gets its CPU build: {build['reason']}")
    try:
        chosen = select(kits, module.params["version"], driver_cuda, prefix,
                        module.params["require_toolkit"], prefer=build["cuda"])
    except CudaError as exc:
        module.fail_json(msg=str(exc), **result)
    if chosen is None:
        result["selected"] = {"version": "", "short": "", "major": "", "minor": "", "path": "",
                              "source": "", "wheel_tag": build["tag"], "toolkit_wheel_tag": ""}
        module.exit_json(**result)
    if module.params["version"] != "auto" and (warning := major_mismatch(chosen["short"],
                                                                         build["cuda"])):
        module.warn(warning)
    major, minor = (int(p) for p in chosen["short"].split("."))
    result["selected"] = {**chosen, "major": major, "minor": minor, "wheel_tag": build["tag"],
                          "toolkit_wheel_tag": wheel_tag(chosen["short"])}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
