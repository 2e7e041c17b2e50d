"""Which framework build runs on a box: recorded data and the choice.

PyTorch's CUDA wheels carry their own CUDA runtime (cuBLAS, cuDNN, NCCL come
as nvidia-* wheels); only the NVIDIA driver comes from the box. What decides
is the driver (the CUDA versions it runs) and the GPUs' compute capability,
not the toolkit on disk. Used by the cuda_toolkit_info module on the box and
by the conda role's filters on the controller; no Ansible import here.
"""

from __future__ import annotations

# The recorded data, in one place. Recorded 2026-11-29.
#
# CUDA builds PyTorch publishes for each release (Linux x86_64, indexes
# https://download.pytorch.org/whl/cuXYZ), read from pytorch/test-infra
# tools/scripts/generate_binary_build_matrix.py, CUDA_ARCHES_DICT["release"]
# at each CURRENT_STABLE_VERSION (history up to 61a77570f, 2026-08-21), checked
# against pytorch.org/get-started/previous-versions (2.6.0, 2.9.x) and the
# torch wheels listed at data.pyg.org/whl (2.10.0 to 2.13.0).
FRAMEWORK_BUILDS = {
    "torch": {
        "2.6": ["cu118", "cu124", "cu126"],
        "2.7": ["cu118", "cu126", "cu128"],
        "2.8": ["cu126", "cu128", "cu129"],
        "2.9": ["cu126", "cu128", "cu130"],
        "2.10": ["cu126", "cu128", "cu130"],
        "2.11": ["cu126", "cu128", "cu130"],
        "2.12": ["cu126", "cu130", "cu132"],
        "2.13": ["cu126", "cu130", "cu132"],
    },
}
# The release installed when none is pinned (conda_framework_version empty):
# test-infra's CURRENT_STABLE_VERSION on 2026-08-21, and the CPU wheel the
# test machines carry (torch-2.13.0+cpu).
DEFAULT_RELEASE = {"torch": "2.13.0"}

# The oldest GPU (compute capability) each CUDA build of PyTorch has kernels
# for. pytorch .ci/manywheel/build_cuda.sh TORCH_CUDA_ARCH_LIST: 12.6
# "5.0;6.0;7.0;7.5;8.0;8.6;9.0", 12.8 and 12.9 "7.0;7.5;...;12.0" (sm_50-sm_60
# removed, sm_70 kept: pytorch/pytorch#157517); CUDA 13 builds: NVIDIA's CUDA
# 13.0 release notes remove Maxwell, Pascal and Volta (offline compilation and
# library support), so sm_75 (Turing) is the oldest; pytorch/builder
# manywheel/build_cuda.sh 11.8 "3.7;5.0;6.0;7.0;7.5;8.0;8.6;9.0"; CUDA 12.x
# dropped Kepler (sm_37), 12.1 and 12.4 builds start at sm_50.
MIN_COMPUTE_CAPABILITY = {
    "cu118": (3, 7), "cu121": (5, 0), "cu124": (5, 0), "cu126": (5, 0),
    "cu128": (7, 0), "cu129": (7, 0), "cu130": (7, 5), "cu132": (7, 5),
}

# The oldest driver that runs any build of a CUDA major release (NVIDIA's
# minor version compatibility: CUDA Compatibility guide, table "Example CUDA
# Toolkit minor version compatibility"; the same numbers as uv's
# crates/uv-torch/src/backend.rs LINUX_CUDA_DRIVERS): a driver at or above it
# runs every X.Y of that major, even when nvidia-smi's "CUDA Version" is
# older (PyTorch's wheels carry compiled kernels, no PTX to JIT).
MINOR_COMPAT_DRIVER = {11: (450, 80, 2), 12: (525, 60, 13), 13: (580, 65, 6)}

# Compute capability of GPUs whose driver cannot be asked for it
# (nvidia-smi --query-gpu=compute_cap needs a driver of 2021 or later):
# NVIDIA's CUDA GPUs list (developer.nvidia.com/cuda-gpus), for the GPUs of
# EC2's GPU instance types.
KNOWN_COMPUTE_CAPABILITY = {
    "K80": (3, 7), "M60": (5, 2), "V100": (7, 0), "T4": (7, 5), "A10G": (8, 6),
    "A100": (8, 0), "L4": (8, 9), "L40S": (8, 9), "H100": (9, 0), "H200": (9, 0),
    "B200": (10, 0),
}


def _tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(text).split(".") if part.isdigit())


def release_of(version: str) -> str:
    """'2.13.0' or '2.13.0+cu126' -> '2.13'."""
    return ".".join(str(version).split("+")[0].split(".")[:2])


def tag_cuda(tag: str) -> tuple[int, int]:
    """'cu126' -> (12, 6); 'cu118' -> (11, 8)."""
    digits = tag[2:]
    return int(digits[:-1]), int(digits[-1])


def cuda_text(tag: str) -> str:
    """'cu126' -> '12.6'; 'cpu' -> ''."""
    if not tag.startswith("cu"):
        return ""
    major, minor = tag_cuda(tag)
    return f"{major}.{minor}"


def compute_capability(gpu: dict) -> tuple[int, int] | None:
    """A GPU's compute capability: nvidia-smi's compute_cap, else by its name."""
    cap = gpu.get("compute_cap")
    if cap and _tuple(cap):
        parts = _tuple(cap)
        return parts[0], parts[1] if len(parts) > 1 else 0
    name = str(gpu.get("name", ""))
    for model, known in KNOWN_COMPUTE_CAPABILITY.items():
        if model in name.split() or f" {model}-" in f" {name}" or name.endswith(f" {model}"):
            return known
    return None


def driver_runs(driver_version: str, driver_cuda: str | None, tag: str) -> bool:
    """Whether a driver runs a CUDA build: its CUDA is at least the build's, or
    minor version compatibility covers the build's major release."""
    build = tag_cuda(tag)
    if driver_cuda and _tuple(driver_cuda)[:2] >= build:
        return True
    needed = MINOR_COMPAT_DRIVER.get(build[0])
    return bool(needed and driver_version and _tuple(driver_version) >= needed)


def builds_of(framework: str, version: str) -> list[str] | None:
    """The CUDA builds recorded for a framework release, oldest first; None when
    the release (or the framework) is not recorded."""
    release = release_of(version or DEFAULT_RELEASE.get(framework, ""))
    builds = FRAMEWORK_BUILDS.get(framework, {}).get(release)
    return sorted(builds, key=tag_cuda) if builds else None


def choose_build(framework: str, version: str, driver: dict, gpus: list[dict]) -> dict:
    """The newest CUDA build of the release that the driver and every GPU run.

    driver: the cuda module's {"state", "driver_version", "cuda_version"};
    gpus: [{"name", "compute_cap"}, ...]. Returns {"tag": "cu126" | "cpu",
    "cuda": "12.6" | "", "release": "2.13", "reason": "..."} where reason says
    why, in words a user can act on.
    """
    release = release_of(version or DEFAULT_RELEASE.get(framework, ""))
    result = {"framework": framework, "release": release, "tag": "cpu", "cuda": ""}
    if framework in ("", "none"):
        return {**result, "reason": "no framework"}
    if driver.get("state") != "ok" or not gpus:
        why = driver.get("message") or "nvidia-smi lists no GPU"
        return {**result, "reason": f"no usable GPU ({why}): the CPU build"}
    builds = builds_of(framework, version)
    if builds is None:
        known = ", ".join(FRAMEWORK_BUILDS.get(framework, {})) or "none"
        return {**result, "reason": f"no CUDA builds recorded for {framework} {release} "
                f"(recorded: {known}; plugins/module_utils/spotbox_framework.py): the CPU build; "
                "set conda_wheel_tag to the build you want"}
    driver_version = driver.get("driver_version", "")
    driver_cuda = driver.get("cuda_version")
    caps = {gpu.get("name", "?"): compute_capability(gpu) for gpu in gpus}
    runnable = []
    for tag in builds:
        oldest = MIN_COMPUTE_CAPABILITY.get(tag)
        if oldest and any(cap is not None and cap < oldest for cap in caps.values()):
            continue
        if driver_runs(driver_version, driver_cuda, tag):
            runnable.append(tag)
    gpu_words = ", ".join(f"{name} (sm_{cap[0]}{cap[1]})" if cap else f"{name}"
                          for name, cap in caps.items())
    if not runnable:
        newest_driver = ", ".join(
            f"{t} (CUDA {cuda_text(t)}: driver "
            f"{'.'.join(map(str, MINOR_COMPAT_DRIVER[tag_cuda(t)[0]]))}+, "
            f"sm_{''.join(map(str, MIN_COMPUTE_CAPABILITY.get(t, (0, 0))))}+)" for t in builds)
        return {**result, "reason": (
            f"no CUDA build of {framework} {release} runs here: driver {driver_version} (CUDA up "
            f"to {driver_cuda}), GPU {gpu_words}; its builds need {newest_driver}. The CPU build "
            "is installed: update the NVIDIA driver, use a newer GPU, or pin an older release "
            "(O(framework_version)) that has a build for them")}
    tag = runnable[-1]
    left_out = [t for t in builds if t not in runnable]
    why = f"the newest build of {framework} {release} that driver {driver_version} " \
          f"(CUDA up to {driver_cuda}) and {gpu_words} run"
    if left_out:
        why += f" ({', '.join(left_out)} would not)"
    return {**result, "tag": tag, "cuda": cuda_text(tag), "reason": why}


def requirement(framework: str, version: str, tag: str) -> str:
    """The exact requirement: 'torch==2.13.0+cu126' (a version with its own
    local label is kept as given)."""
    pinned = version or DEFAULT_RELEASE.get(framework, "")
    if not pinned:
        return framework
    if "+" in pinned or framework not in FRAMEWORK_BUILDS:
        return f"{framework}=={pinned}"
    return f"{framework}=={pinned}+{tag}"
