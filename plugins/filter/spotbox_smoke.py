"""Filters for the conda role's framework smoke test: what failed, and what to do."""

from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError


def framework_smoke_failure(result: dict, wheel_tag: str = "cpu", driver: str = "",
                            gpus: list | None = None, reason: str = "") -> str:
    """One message from a failed run of roles/conda/files/framework_smoke.py.

    result: the command's registered result; wheel_tag: the build chosen
    (cuda_wheel_tag); driver, gpus: what the cuda role found; reason: why that
    build (cuda_framework_build.reason).
    """
    lines = [line for line in str(result.get("stdout", "")).splitlines() if line.startswith("{")]
    try:
        out = json.loads(lines[-1]) if lines else {}
    except ValueError:
        out = {}
    if not isinstance(out, dict):
        raise AnsibleFilterError(f"unexpected smoke test output: {out!r}")
    error = out.get("error") or (str(result.get("stderr", "")).strip().splitlines() or
                                 ["no output"])[-1]
    version = out.get("version", "")
    installed = (f"torch {version} (CUDA {out.get('cuda') or 'none: the CPU build'})"
                 if version else "no importable torch")
    gpu_names = ", ".join(str(gpu.get("name", "?")) for gpu in gpus or []) or "none"
    where = out.get("python", "the environment's python")
    head = (f"The framework does not work in {where}: {error}. Installed: {installed}; "
            f"build chosen: {wheel_tag}" + (f" ({reason})" if reason else "")
            + f"; driver: {driver or 'none'}; GPU: {gpu_names}.")
    local = version.split("+")[1] if "+" in version else ""
    if not version:
        todo = ("The environment's build is broken (see the build output): change the "
                "specification or remove the environment's folder, and run the role again.")
    elif out.get("mode") == "gpu" and local and local != wheel_tag:
        todo = (f"The installed build is {local}, not {wheel_tag}: a pinned "
                "conda_framework_version or conda_framework_find_links gave another build; "
                f"remove the pin (or give the {wheel_tag} wheel) and run the role again, or set "
                f"conda_wheel_tag: {local} to accept it.")
    elif out.get("mode") == "gpu":
        todo = ("The driver cannot run this build, or the GPU is not visible: check nvidia-smi "
                "on the box (after a driver upgrade it needs a reboot: 'Driver/library version "
                "mismatch'); or set conda_wheel_tag to an older build (like cu126), or cpu.")
    else:
        todo = ("The CPU build does not compute: see the error above, and the build output.")
    return f"{head} {todo}"


class FilterModule:
    """spotbox's smoke-test filters."""

    def filters(self):
        return {"spotbox_framework_smoke_failure": framework_smoke_failure}
