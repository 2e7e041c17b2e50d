"""CUDA logic on recorded outputs of nvcc, ptxas and nvidia-smi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import spotbox_cuda as cuda

FIXTURES = Path(__file__).parent / "fixtures" / "cuda"
ROOT = Path(__file__).resolve().parents[2]


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(("name", "version"), [
    ("ptxas-11.8.txt", "11.8.89"),
    ("ptxas-12.4.txt", "12.4.131"),
    ("nvcc-13.0.txt", "13.0.88"),
    ("nvcc-13.5.txt", "13.5.37"),
])
def test_tool_version_from_real_binaries(name: str, version: str) -> None:
    assert cuda.parse_tool_version(fixture(name)) == version


def test_version_files() -> None:
    assert cuda.parse_version_json(fixture("version-12.4.json")) == "12.4.1"
    assert cuda.parse_version_txt(fixture("version-10.0.txt")) == "10.0.130"
    assert cuda.parse_version_json("not json") is None
    assert cuda.folder_version("cuda-12.4") == "12.4"
    assert cuda.folder_version("cuda") is None


@pytest.mark.parametrize(("name", "driver", "cuda_version"), [
    ("nvidia-smi-410-k80.txt", "410.79", "10.0"),
    ("nvidia-smi-384-k80.txt", "384.81", "9.0"),  # no "CUDA Version": from the table
    ("nvidia-smi-535-t4.txt", "535.183.01", "12.2"),
    ("nvidia-smi-550-a10g.txt", "550.127.05", "12.4"),
    ("nvidia-smi-570-8xa100.txt", "570.124.06", "12.8"),
])
def test_driver_generations(name: str, driver: str, cuda_version: str) -> None:
    assert cuda.parse_nvidia_smi(0, fixture(name)) == {
        "state": "ok", "driver_version": driver, "cuda_version": cuda_version,
    }


@pytest.mark.parametrize(("name", "rc", "state", "words"), [
    ("nvidia-smi-no-devices.txt", 6, "no_devices", "No devices were found"),
    ("nvidia-smi-mismatch.txt", 18, "driver_mismatch", "reboot"),
    ("nvidia-smi-no-driver.txt", 9, "no_driver", "cannot reach the NVIDIA driver"),
])
def test_driver_failures(name: str, rc: int, state: str, words: str) -> None:
    parsed = cuda.parse_nvidia_smi(rc, fixture(name))
    assert parsed["state"] == state
    assert words in parsed["message"]


def test_unknown_failure_keeps_the_first_line() -> None:
    parsed = cuda.parse_nvidia_smi(127, "", "nvidia-smi: command not found")
    assert parsed == {"state": "error",
                      "message": "nvidia-smi failed (rc=127): nvidia-smi: command not found"}


def test_gpu_lists() -> None:
    eight = cuda.parse_gpu_query(fixture("nvidia-smi-570-8xa100.query.csv"))
    assert [g["index"] for g in eight] == list(range(8))
    assert {g["name"] for g in eight} == {"NVIDIA A100-SXM4-40GB"}
    assert cuda.parse_gpu_query(fixture("nvidia-smi-410-k80.query.csv")) == [
        {"index": 0, "name": "Tesla K80", "memory_mib": 11441, "pci_bus_id": "00000000:00:1E.0",
         "compute_cap": None}
    ]
    assert cuda.parse_gpu_query(fixture("nvidia-smi-535-t4.cap.csv"))[0]["compute_cap"] == "7.5"
    assert cuda.parse_gpu_query("") == []


def test_driver_table_boundaries() -> None:
    assert cuda.max_cuda_for_driver("550.54.14") == "12.4"
    assert cuda.max_cuda_for_driver("550.54.13") == "12.3"
    assert cuda.max_cuda_for_driver("580.95.05") == "13.0"
    assert cuda.max_cuda_for_driver("340.1") is None


KITS = [
    {"version": "11.8.89", "path": "/usr/local/cuda-11.8"},
    {"version": "12.4.131", "path": "/usr/local/cuda-12.4"},
    {"version": "13.5.37", "path": "/usr/local/cuda-13.5"},
]


def test_auto_is_the_newest_the_driver_runs() -> None:
    assert cuda.select(KITS, "auto", "12.4")["version"] == "12.4.131"
    assert cuda.select(KITS, "auto", "12.8")["version"] == "12.4.131"
    assert cuda.select(KITS, "auto", None)["version"] == "13.5.37"  # no driver: newest
    assert cuda.select(KITS[:1], "auto", "12.2")["version"] == "11.8.89"  # one toolkit


def test_requested_version() -> None:
    assert cuda.select(KITS, "11.8", "12.4")["path"] == "/usr/local/cuda-11.8"


def test_missing_version_lists_the_installed_ones() -> None:
    with pytest.raises(cuda.CudaError, match=r"CUDA 10.0 is not installed; installed: 11.8, "
                       r"12.4, 13.5"):
        cuda.select(KITS, "10.0", "12.4")


def test_toolkit_newer_than_driver_names_both() -> None:
    with pytest.raises(cuda.CudaError, match=r"CUDA 13.5 is newer than the driver supports "
                       r"\(up to CUDA 12.4\)"):
        cuda.select(KITS, "13.5", "12.4")


def test_no_toolkit_is_no_choice_unless_one_is_asked_for() -> None:
    assert cuda.select([], "auto", "12.4") is None  # the driver alone
    assert cuda.select([], "auto", None) is None  # no GPU at all
    with pytest.raises(cuda.CudaError, match=r"^CUDA 12\.4 was asked for \(O\(version\)\) but no "
                       r"CUDA toolkit is installed under /opt/cuda \(no cuda-X\.Y folders\)"):
        cuda.select([], "12.4", "12.4", prefix="/opt/cuda")
    with pytest.raises(cuda.CudaError, match=r"^O\(require_toolkit\) is true but no CUDA toolkit "
                       r"is installed under /srv/nv \(no cuda-X\.Y folders\)"):
        cuda.select([], "auto", "12.4", prefix="/srv/nv/", require_toolkit=True)
    assert cuda.select(KITS, "auto", "12.4", require_toolkit=True)["version"] == "12.4.131"


def test_driver_too_old_for_all() -> None:
    with pytest.raises(cuda.CudaError, match=r"supports CUDA up to 10\.0, older than every"):
        cuda.select(KITS, "auto", "10.0")
    with pytest.raises(cuda.CudaError, match=r"'auto' or 'X\.Y'"):
        cuda.select(KITS, "12", None)


def test_wheel_tags() -> None:
    assert cuda.wheel_tag("12.4") == "cu124"
    assert cuda.wheel_tag("11.8") == "cu118"
    assert cuda.wheel_tag(None) == "cpu"


def run_module(tmp_path: Path, smi_fixture: str | None, toolkits: bool = True, **args) -> dict:
    """Run the cuda_toolkit_info module through Ansible, on this machine."""
    prefix = tmp_path / "usr-local"
    prefix.mkdir(exist_ok=True)
    if toolkits:
        for kit in ("11.8", "12.4"):
            (prefix / f"cuda-{kit}").mkdir(parents=True, exist_ok=True)
        (prefix / "cuda-12.4" / "version.json").write_text(fixture("version-12.4.json"))
        if not (prefix / "cuda").is_symlink():
            (prefix / "cuda").symlink_to(prefix / "cuda-11.8")
    smi = tmp_path / "nvidia-smi"
    if smi_fixture:
        # As the driver answers: the query with compute_cap (drivers before 510
        # refuse it, rc 2), then the one without.
        base = FIXTURES / smi_fixture.replace(".txt", "")
        cap = (f"cat {base}.cap.csv" if Path(f"{base}.cap.csv").exists()
               else f"cat {base}.cap.err; exit 2" if Path(f"{base}.cap.err").exists()
               else f"cat {base}.query.csv")
        smi.write_text(
            "#!/bin/sh\n"
            f'case "$1" in --query-gpu=*compute_cap) {cap};;\n'
            f"  --query-gpu*) cat {base}.query.csv;;\n"
            f"  *) cat {FIXTURES / smi_fixture};;\nesac\n"
        )
        smi.chmod(0o755)
    module_args = {"prefix": str(prefix), "nvidia_smi": str(smi), **args}
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "json"}
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ansible")), "localhost", "-m", "cuda_toolkit_info",
         "-a", json.dumps(module_args), "-e", f"ansible_python_interpreter={sys.executable}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    ).stdout
    return json.loads(out)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_module_on_a_gpu_box(tmp_path: Path) -> None:
    result = run_module(tmp_path, "nvidia-smi-550-a10g.txt", version="auto")
    assert result["selected"]["short"] == "12.4"  # CUDA 12 like the framework build
    assert result["selected"]["wheel_tag"] == "cu126"  # torch 2.13's newest build R550 runs
    assert result["selected"]["toolkit_wheel_tag"] == "cu124"
    assert result["framework_build"]["tag"] == "cu126"
    assert result["gpus"][0]["compute_cap"] == "8.6"
    assert result["toolkits"][1]["source"] == "version.json"
    assert result["toolkits"][0]["source"] == "folder name"
    assert result["current"].endswith("cuda-11.8")
    assert result["gpus"][0]["name"] == "NVIDIA A10G"


def test_module_driver_too_old(tmp_path: Path) -> None:
    result = run_module(tmp_path, "nvidia-smi-410-k80.txt", version="12.4")
    assert result["failed"]
    assert "CUDA 12.4 is newer than the driver supports (up to CUDA 10.0)" in result["msg"]


def test_module_without_gpu_warns_or_fails(tmp_path: Path) -> None:
    result = run_module(tmp_path, None, version="auto")
    assert result["selected"]["short"] == "12.4"
    assert result["selected"]["wheel_tag"] == "cpu"
    assert any("No usable GPU" in w for w in result["warnings"])
    strict = run_module(tmp_path, "nvidia-smi-no-devices.txt", require_gpu=True)
    assert strict["failed"]
    assert "require_gpu is true but nvidia-smi found no GPU" in strict["msg"]  # its own option
    named = run_module(tmp_path, "nvidia-smi-no-devices.txt", require_gpu=True,
                       names={"require_gpu": "cuda_require_gpu"})  # as the role calls it
    assert named["msg"].startswith("cuda_require_gpu is true but nvidia-smi found no GPU")


NO_TOOLKIT = {"version": "", "short": "", "major": "", "minor": "", "path": "", "source": "",
              "toolkit_wheel_tag": ""}


def test_module_driver_without_toolkit(tmp_path: Path) -> None:
    """A GPU host with the NVIDIA driver and no toolkit (stock Ubuntu + nvidia-driver-5xx)."""
    profile = tmp_path / "spotbox-cuda.sh"  # an earlier run's entry: link.yml removes it
    profile.write_text("export CUDA_HOME=/usr/local/cuda\n")
    result = run_module(tmp_path, "nvidia-smi-550-a10g.txt", toolkits=False,
                        entries=[str(profile), str(tmp_path / "spotbox-cuda.conf")])
    assert not result.get("failed"), result
    assert result["entries_present"] == [str(profile)]
    assert result["toolkits"] == []
    assert result["current"] is None
    assert result["selected"] == {**NO_TOOLKIT, "wheel_tag": "cu126"}
    assert result["gpus"][0]["name"] == "NVIDIA A10G"
    assert not result.get("warnings")


def test_module_cpu_only_host_without_toolkit(tmp_path: Path) -> None:
    result = run_module(tmp_path, None, toolkits=False)
    assert not result.get("failed"), result
    assert result["selected"] == {**NO_TOOLKIT, "wheel_tag": "cpu"}
    assert result["driver"]["state"] == "no_driver"
    assert any("Frameworks get their CPU build" in w for w in result["warnings"])


def test_module_without_toolkit_fails_when_one_is_asked_for(tmp_path: Path) -> None:
    asked = run_module(tmp_path, "nvidia-smi-535-t4.txt", toolkits=False, version="12.2")
    assert asked["failed"]
    prefix = tmp_path / "usr-local"
    assert asked["msg"].startswith(f"CUDA 12.2 was asked for (version) but no CUDA toolkit "
                                   f"is installed under {prefix} (no cuda-X.Y folders)")
    required = run_module(tmp_path, "nvidia-smi-535-t4.txt", toolkits=False,
                          require_toolkit=True)
    assert required["failed"]
    assert f"require_toolkit is true but no CUDA toolkit is installed under {prefix}" in \
        required["msg"]


def test_auto_prefers_the_framework_builds_cuda() -> None:
    kits = [*KITS, {"version": "12.8.93", "path": "/usr/local/cuda-12.8"},
            {"version": "13.0.88", "path": "/usr/local/cuda-13.0"}]
    # Driver 580 (CUDA 13.0) on a V100: the build is cu126, the toolkit CUDA 12.
    assert cuda.select(kits, "auto", "13.0", prefer="12.6")["version"] == "12.8.93"
    assert cuda.select(kits, "auto", "13.0", prefer="13.0")["version"] == "13.0.88"
    assert cuda.select(kits, "auto", "13.0", prefer="")["version"] == "13.0.88"
    # No toolkit of the build's major: the newest the driver runs.
    assert cuda.select(KITS[:2], "auto", "13.0", prefer="13.0")["version"] == "12.4.131"


def test_a_major_mismatch_is_a_warning_that_says_what_breaks() -> None:
    assert cuda.major_mismatch("12.4", "12.6") == ""
    assert cuda.major_mismatch("12.4", "") == ""
    warning = cuda.major_mismatch("13.5", "12.6")
    assert warning.startswith("CUDA 13.5 (O(version)) and the framework build's CUDA 12.6 "
                              "differ in major version")
    assert "CUDA extensions compiled with this nvcc" in warning


def test_module_old_driver_without_compute_cap(tmp_path: Path) -> None:
    """K80 on R470: the compute_cap query is refused; no torch 2.13 build runs."""
    result = run_module(tmp_path, "nvidia-smi-470-k80.txt", toolkits=False)
    assert not result.get("failed"), result
    assert result["gpus"][0]["name"] == "Tesla K80"
    assert result["gpus"][0]["compute_cap"] is None
    assert result["selected"]["wheel_tag"] == "cpu"
    assert any("The framework gets its CPU build: no CUDA build of torch 2.13 runs here"
               in w for w in result["warnings"])


def test_module_warns_on_an_explicit_toolkit_of_another_major(tmp_path: Path) -> None:
    """H100 on R580: the build is cu132; an explicit CUDA 12.4 toolkit is a warning."""
    result = run_module(tmp_path, "nvidia-smi-580-8xh100.txt", version="12.4")
    assert not result.get("failed"), result
    assert result["selected"]["wheel_tag"] == "cu132"
    assert len(result["gpus"]) == 8 and result["gpus"][0]["compute_cap"] == "9.0"
    assert any("CUDA 12.4 (version) and the framework build's CUDA 13.2 differ" in w
               for w in result["warnings"])
