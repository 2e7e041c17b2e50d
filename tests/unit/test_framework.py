"""The framework build for a box's driver and GPUs, on recorded nvidia-smi outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import spotbox_cuda as cuda
import spotbox_framework as fw

FIXTURES = Path(__file__).parent / "fixtures" / "cuda"


def box(name: str) -> tuple[dict, list[dict]]:
    """Driver and GPUs as the cuda module reads them from a recorded box."""
    driver = cuda.parse_nvidia_smi(0, (FIXTURES / f"nvidia-smi-{name}.txt").read_text())
    cap = FIXTURES / f"nvidia-smi-{name}.cap.csv"
    query = cap if cap.exists() else FIXTURES / f"nvidia-smi-{name}.query.csv"
    return driver, cuda.parse_gpu_query(query.read_text())


# The combinations, with the pinned default release (torch 2.13: cu126,
# cu130, cu132).
@pytest.mark.parametrize(("name", "tag", "words"), [
    # K80 (sm_37) on 470 (CUDA 11.4): no 2.13 build runs (12.x needs 525+, and sm_50+).
    ("470-k80", "cpu", "no CUDA build of torch 2.13 runs here: driver 470.256.02 (CUDA up to "
                       "11.4), GPU Tesla K80 (sm_37)"),
    # T4 on 535 (CUDA 12.2): cu126 through minor version compatibility (12.x: 525.60.13+).
    ("535-t4", "cu126", "driver 535.183.01 (CUDA up to 12.2) and Tesla T4 (sm_75) run "
                        "(cu130, cu132 would not)"),
    ("550-a10g", "cu126", "NVIDIA A10G (sm_86)"),
    # V100 (sm_70) on 580: the driver runs CUDA 13, the GPU does not (CUDA 13 starts at sm_75).
    ("580-v100", "cu126", "Tesla V100-SXM2-16GB (sm_70) run (cu130, cu132 would not)"),
    # A100 on 570 (CUDA 12.8): cu126; H100 on 580 (CUDA 13.0): cu132 through minor version
    # compatibility (13.x: 580.65.06+), as uv's --torch-backend=auto picks.
    ("570-8xa100", "cu126", "NVIDIA A100-SXM4-40GB (sm_80) run (cu130, cu132 would not)"),
    ("580-8xh100", "cu132", "driver 580.95.05 (CUDA up to 13.0) and NVIDIA H100 80GB HBM3 "
                            "(sm_90) run"),
])
def test_builds_for_real_driver_and_gpu_combinations(name: str, tag: str, words: str) -> None:
    driver, gpus = box(name)
    build = fw.choose_build("torch", "", driver, gpus)
    assert build["tag"] == tag, build
    assert build["cuda"] == fw.cuda_text(tag)
    assert build["release"] == "2.13"
    assert words in build["reason"], build["reason"]


def test_no_gpu_is_the_cpu_build() -> None:
    for driver, gpus in [({"state": "no_driver", "message": "nvidia-smi not found"}, []),
                         (cuda.parse_nvidia_smi(6, (FIXTURES / "nvidia-smi-no-devices.txt")
                                                .read_text()), []),
                         ({"state": "ok", "driver_version": "580.95.05",
                           "cuda_version": "13.0"}, [])]:
        build = fw.choose_build("torch", "2.13.0", driver, gpus)
        assert build["tag"] == "cpu"
        assert build["reason"].startswith("no usable GPU")


def test_compute_capability_without_the_query_field() -> None:
    # Driver 470 refuses compute_cap: the K80's comes from its name.
    gpus = cuda.parse_gpu_query((FIXTURES / "nvidia-smi-470-k80.query.csv").read_text())
    assert gpus[0]["compute_cap"] is None
    assert fw.compute_capability(gpus[0]) == (3, 7)
    assert fw.compute_capability({"name": "Tesla V100-SXM2-16GB"}) == (7, 0)
    assert fw.compute_capability({"name": "NVIDIA L4"}) == (8, 9)
    assert fw.compute_capability({"name": "NVIDIA L40S"}) == (8, 9)
    assert fw.compute_capability({"name": "Some Future GPU"}) is None
    assert fw.compute_capability({"name": "x", "compute_cap": "12.0"}) == (12, 0)


def test_an_unknown_gpu_is_not_held_against_a_build() -> None:
    driver = {"state": "ok", "driver_version": "580.95.05", "cuda_version": "13.0"}
    assert fw.choose_build("torch", "", driver, [{"name": "Some Future GPU"}])["tag"] == "cu132"


def test_the_slowest_gpu_decides_on_a_mixed_box() -> None:
    driver = {"state": "ok", "driver_version": "580.95.05", "cuda_version": "13.0"}
    gpus = [{"name": "NVIDIA H100 80GB HBM3", "compute_cap": "9.0"},
            {"name": "Tesla V100-SXM2-16GB", "compute_cap": "7.0"}]
    assert fw.choose_build("torch", "", driver, gpus)["tag"] == "cu126"


@pytest.mark.parametrize(("version", "tag"), [
    ("2.6.0", "cu126"),  # T4 on 535 (12.2): every 12.x build by compatibility, the newest
    ("2.7.1", "cu128"),
    ("2.9.1", "cu128"),
    ("2.12.1", "cu126"),
])
def test_older_releases_have_their_own_builds(version: str, tag: str) -> None:
    driver, gpus = box("535-t4")
    build = fw.choose_build("torch", version, driver, gpus)
    assert build["tag"] == tag, build


def test_a_release_that_is_not_recorded_gets_the_cpu_build_and_says_so() -> None:
    driver, gpus = box("550-a10g")
    build = fw.choose_build("torch", "3.0.0", driver, gpus)
    assert build["tag"] == "cpu"
    assert "no CUDA builds recorded for torch 3.0" in build["reason"]
    assert "set conda_wheel_tag" in build["reason"]
    assert fw.choose_build("none", "", driver, gpus) == {
        "framework": "none", "release": "", "tag": "cpu", "cuda": "", "reason": "no framework"}


def test_minor_version_compatibility_boundaries() -> None:
    assert fw.driver_runs("525.60.13", "12.0", "cu126")
    assert not fw.driver_runs("525.60.12", "12.0", "cu126")
    assert not fw.driver_runs("575.57.08", "12.9", "cu130")
    assert fw.driver_runs("580.65.06", "13.0", "cu132")
    assert fw.driver_runs("470.256.02", "11.4", "cu118")


def test_the_requirement_is_exact() -> None:
    assert fw.requirement("torch", "", "cu126") == "torch==2.13.0+cu126"
    assert fw.requirement("torch", "2.12.1", "cpu") == "torch==2.12.1+cpu"
    assert fw.requirement("torch", "2.13.0+cpu", "cu126") == "torch==2.13.0+cpu"
    assert fw.requirement("jax", "0.7.0", "cu126") == "jax==0.7.0"
    assert fw.requirement("jax", "", "cpu") == "jax"


def test_the_recorded_data_is_consistent() -> None:
    for framework, releases in fw.FRAMEWORK_BUILDS.items():
        assert fw.release_of(fw.DEFAULT_RELEASE[framework]) in releases
        for release, builds in releases.items():
            assert builds, release
            for tag in builds:
                assert tag in fw.MIN_COMPUTE_CAPABILITY, (release, tag)
                assert fw.tag_cuda(tag)[0] in fw.MINOR_COMPAT_DRIVER, (release, tag)
