"""CUDA toolkit and NVIDIA driver logic for the cuda role.

Pure functions over text that real tools print (nvcc/ptxas --version,
version.json, nvidia-smi), so that they can be tested on recorded outputs.
Used by the cuda_toolkit_info module on the box; no Ansible import here.
"""

from __future__ import annotations

import json
import re

# The oldest driver that runs each CUDA release (NVIDIA's CUDA Toolkit release
# notes, table "CUDA Toolkit and Corresponding Driver Versions", Linux x86_64).
# Only needed for drivers older than 410, whose nvidia-smi does not print
# "CUDA Version"; newer drivers say it themselves.
MIN_DRIVER_FOR_CUDA = [
    ((13, 0), (580, 65, 6)),
    ((12, 8), (570, 26)),
    ((12, 6), (560, 28, 3)),
    ((12, 5), (555, 42, 2)),
    ((12, 4), (550, 54, 14)),
    ((12, 3), (545, 23, 6)),
    ((12, 2), (535, 54, 3)),
    ((12, 1), (530, 30, 2)),
    ((12, 0), (525, 60, 13)),
    ((11, 8), (520, 61, 5)),
    ((11, 7), (515, 43, 4)),
    ((11, 6), (510, 39, 1)),
    ((11, 5), (495, 29, 5)),
    ((11, 4), (470, 42, 1)),
    ((11, 3), (465, 19, 1)),
    ((11, 2), (460, 27, 3)),
    ((11, 1), (455, 23)),
    ((11, 0), (450, 36, 6)),
    ((10, 2), (440, 33)),
    ((10, 1), (418, 39)),
    ((10, 0), (410, 48)),
    ((9, 2), (396, 26)),
    ((9, 1), (390, 46)),
    ((9, 0), (384, 81)),
    ((8, 0), (375, 26)),
]

_RELEASE = re.compile(r"release (\d+)\.(\d+), V(\d+(?:\.\d+)*)")
_VERSION_TXT = re.compile(r"CUDA Version (\d+(?:\.\d+)+)")
_FOLDER = re.compile(r"^cuda-(\d+)\.(\d+)$")
_SMI_HEADER = re.compile(
    r"Driver Version:\s*(?P<driver>\d+(?:\.\d+)+)(?:\s+CUDA Version:\s*(?P<cuda>\d+\.\d+))?"
)


class CudaError(Exception):
    """A problem the user must act on; the message says what to do."""


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def short(version: str) -> str:
    """'12.4.131' -> '12.4'."""
    return ".".join(version.split(".")[:2])


def parse_tool_version(output: str) -> str | None:
    """Full version from `nvcc --version` or `ptxas --version` ('12.4.131')."""
    match = _RELEASE.search(output)
    return match.group(3) if match else None


def parse_version_json(text: str) -> str | None:
    """Version from a toolkit's version.json (CUDA 11 and later)."""
    try:
        return json.loads(text)["cuda"]["version"]
    except (ValueError, KeyError, TypeError):
        return None


def parse_version_txt(text: str) -> str | None:
    """Version from a toolkit's version.txt (CUDA 10 and earlier)."""
    match = _VERSION_TXT.search(text)
    return match.group(1) if match else None


def folder_version(name: str) -> str | None:
    """'cuda-12.4' -> '12.4'; anything else -> None."""
    match = _FOLDER.match(name)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def max_cuda_for_driver(driver: str) -> str | None:
    """The newest CUDA release a driver version runs, from NVIDIA's table."""
    have = version_tuple(driver)
    for cuda, needed in MIN_DRIVER_FOR_CUDA:
        if have >= needed:
            return f"{cuda[0]}.{cuda[1]}"
    return None


def parse_nvidia_smi(rc: int, stdout: str, stderr: str = "") -> dict:
    """Driver facts from plain `nvidia-smi`.

    Returns {"state": "ok", "driver_version", "cuda_version"} or
    {"state": "no_devices" | "driver_mismatch" | "no_driver" | "error", "message"}.
    """
    text = f"{stdout}\n{stderr}"
    if "No devices were found" in text:
        return {"state": "no_devices", "message": "nvidia-smi found no GPU (No devices were found)"}
    if "Driver/library version mismatch" in text:
        return {
            "state": "driver_mismatch",
            "message": "nvidia-smi: Driver/library version mismatch: the NVIDIA kernel module "
            "and the user-space driver differ (usually after a driver upgrade); reboot the box",
        }
    if "couldn't communicate with the NVIDIA driver" in text:
        return {"state": "no_driver", "message": "nvidia-smi cannot reach the NVIDIA driver "
                "(not loaded, or no NVIDIA GPU on this instance type)"}
    match = _SMI_HEADER.search(stdout)
    if rc != 0 or not match:
        first = (stderr or stdout).strip().splitlines()[:1]
        return {"state": "error",
                "message": f"nvidia-smi failed (rc={rc}): {first[0] if first else 'no output'}"}
    driver = match.group("driver")
    cuda = match.group("cuda") or max_cuda_for_driver(driver)
    return {"state": "ok", "driver_version": driver, "cuda_version": cuda}


GPU_QUERY = "index,name,memory.total,pci.bus_id"
# compute_cap is a field of drivers from 2021 on (510); older ones refuse the
# whole query, which is then asked again without it.
GPU_QUERY_CAP = f"{GPU_QUERY},compute_cap"


def parse_gpu_query(csv: str) -> list[dict]:
    """GPUs from `nvidia-smi --query-gpu=index,name,memory.total,pci.bus_id[,compute_cap]
    --format=csv,noheader,nounits`; compute_cap is "7.5", or None when not asked."""
    gpus = []
    for line in csv.strip().splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        cap = fields[4] if len(fields) > 4 and re.fullmatch(r"\d+\.\d+", fields[4]) else None
        gpus.append({
            "index": int(fields[0]),
            "name": fields[1],
            "memory_mib": int(fields[2]) if fields[2].isdigit() else None,
            "pci_bus_id": fields[3],
            "compute_cap": cap,
        })
    return gpus


def wheel_tag(version: str | None) -> str:
    """'12.4' -> 'cu124' (the tag framework wheel indexes use); None -> 'cpu'."""
    if not version:
        return "cpu"
    major, minor = version.split(".")[:2]
    return f"cu{major}{minor}"


def select(toolkits: list[dict], requested: str, driver_cuda: str | None,
           prefix: str = "/usr/local", require_toolkit: bool = False,
           prefer: str = "") -> dict | None:
    """Choose the toolkit to make the default; None when there is none to choose.

    toolkits: [{"version": "12.4.131", "path": "/usr/local/cuda-12.4"}, ...]
    requested: "auto" or "X.Y"
    driver_cuda: the newest CUDA the driver runs ("12.4"), or None (no driver).
    prefix: where the toolkits were looked for (for the messages).
    require_toolkit: no toolkit at all is an error rather than None.
    prefer: the framework build's CUDA ("12.6"); auto takes the toolkit of the same
    X.Y, else the newest of the same major, else the newest the driver runs.

    A box without toolkits is a normal box (framework wheels bring their own
    CUDA runtime): None, unless a toolkit was asked for by version or required.
    """
    if not toolkits:
        where = f"under {prefix.rstrip('/') or '/'} (no cuda-X.Y folders)"
        if requested != "auto":
            raise CudaError(
                f"CUDA {requested} was asked for (O(version)) but no CUDA toolkit is installed "
                f"{where}; install it, or set O(version) to 'auto' to go on without a toolkit "
                "(framework wheels bring their own CUDA runtime)"
            )
        if require_toolkit:
            raise CudaError(
                f"O(require_toolkit) is true but no CUDA toolkit is installed {where}; "
                "use an AMI that ships CUDA (Deep Learning Base AMI), install one, or set "
                "O(require_toolkit) to false (framework wheels need only the NVIDIA driver)"
            )
        return None
    by_short = {}
    for kit in sorted(toolkits, key=lambda k: version_tuple(k["version"])):
        by_short[short(kit["version"])] = kit
    installed = ", ".join(sorted(by_short, key=version_tuple))
    if requested == "auto":
        candidates = [v for v in by_short if driver_cuda is None
                      or version_tuple(v) <= version_tuple(driver_cuda)]
        if not candidates:
            raise CudaError(
                f"the NVIDIA driver supports CUDA up to {driver_cuda}, older than every "
                f"installed toolkit ({installed}); install an older toolkit or a newer driver"
            )
        if prefer:
            # The framework build's CUDA: the same X.Y, else the newest of the same
            # major, so that extensions nvcc compiles load in the framework.
            same = [v for v in candidates if v == short(prefer)]
            same = same or [v for v in candidates if v.split(".")[0] == prefer.split(".")[0]]
            if same:
                return by_short[max(same, key=version_tuple)]
        return by_short[max(candidates, key=version_tuple)]
    if not re.fullmatch(r"\d+\.\d+", requested):
        raise CudaError(f"O(version) must be 'auto' or 'X.Y' (like 12.4), not {requested!r}")
    if requested not in by_short:
        raise CudaError(
            f"CUDA {requested} is not installed; installed: {installed}. "
            "Set O(version) to one of them (or 'auto')"
        )
    if driver_cuda and version_tuple(requested) > version_tuple(driver_cuda):
        raise CudaError(
            f"CUDA {requested} is newer than the driver supports (up to CUDA {driver_cuda}); "
            f"frameworks built for it would fall back to the CPU. Choose O(version) "
            f"<= {driver_cuda}, 'auto', or an AMI with a newer driver"
        )
    return by_short[requested]


def major_mismatch(toolkit: str, framework_cuda: str) -> str:
    """A warning when a toolkit and the framework build differ in CUDA major, else ''."""
    if not toolkit or not framework_cuda or toolkit.split(".")[0] == framework_cuda.split(".")[0]:
        return ""
    return (f"CUDA {toolkit} (O(version)) and the framework build's CUDA {framework_cuda} differ "
            "in major version: the framework runs, but CUDA extensions compiled with this nvcc "
            "(torch.utils.cpp_extension, pip packages built from source) will not load in it. "
            f"Choose a CUDA {framework_cuda.split('.')[0]}.x toolkit, or O(version): auto")
