"""The conda role's files as Ansible renders them, for each backend (no conda channel
or Miniforge download is reachable here: the conda backend is checked on what it
would run). Rendered through ansible-playbook on localhost, with the role's
defaults and vars and the filters of plugins/filter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "conda"
TEMPLATES = ["environment.yml.j2", "build_uv.sh.j2", "build_conda.sh.j2"]


def render(tmp_path: Path, **extra) -> dict:
    """The role's templates and a few of its vars, rendered with extra vars."""
    out = tmp_path / "out"
    out.mkdir(parents=True)
    play = [{
        "name": "Render the conda role's files",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "vars": {
            # What tasks/settings.yml and tasks/start.yml set before the templates.
            "__conda_channels": "{{ conda_channels }}",
            "__conda_packages": "{{ conda_packages }}",
            "__conda_python_version": "{{ conda_python_version }}",
            "conda_env_on_data_volume": False,  # tasks/start.yml's rule; extra vars change it
            "conda_env_prefix": "{{ __conda_envs_dir }}/{{ conda_env_name }}",
            "conda_env_python": "{{ conda_env_prefix }}/bin/python",
            "__conda_env_spec": "{{ lookup('ansible.builtin.template', '"
                                f"{ROLE / 'templates' / 'environment.yml.j2'}') }}}}",
        },
        "tasks": [
            *[{"name": f"Render {name}", "ansible.builtin.copy": {
                "content": "{{ lookup('ansible.builtin.template', '"
                           f"{ROLE / 'templates' / name}') }}}}",
                "dest": str(out / name.removesuffix(".j2")), "mode": "0644"}}
              for name in TEMPLATES],
            {"name": "Write the vars", "ansible.builtin.copy": {
                "content": "{{ {'miniforge_url': __conda_miniforge_url, 'build_user': "
                           "__conda_build_user, 'kernel': __conda_kernel_json, 'prefix': "
                           "conda_env_prefix, 'build_root': __conda_build_root} | to_json }}",
                "dest": str(out / "vars.json"), "mode": "0644"}},
        ],
    }]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")}
    run = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
         str(tmp_path / "render.yml"), "-e", json.dumps(
             {"ansible_python_interpreter": sys.executable, **extra})],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    files = {name.removesuffix(".j2"): (out / name.removesuffix(".j2")).read_text()
             for name in TEMPLATES}
    return {**files, **json.loads((out / "vars.json").read_text())}


@pytest.fixture(scope="module")
def gpu_box(tmp_path_factory) -> dict:
    """The conda backend on a box the cuda role found an A10G on (cu126)."""
    return render(tmp_path_factory.mktemp("gpu"), cuda_wheel_tag="cu126", conda_backend="conda")


def test_the_environment_file_leaves_the_framework_to_a_step_of_its_own(gpu_box) -> None:
    env = yaml.safe_load(gpu_box["environment.yml"])
    assert env["channels"] == ["conda-forge"]
    assert env["dependencies"] == ["python=3.11", "pip", "jupyterlab", "matplotlib", "pandas"]
    assert "cu126" not in gpu_box["environment.yml"]  # its hash does not follow the CUDA choice
    assert ('"$env/bin/python" -m pip install --quiet --no-input --index-url '
            "https://download.pytorch.org/whl/cu126 torch==2.13.0+cu126"
            ) in gpu_box["build_conda.sh"]


def test_the_conda_build_recreates_the_environment_as_the_user(gpu_box) -> None:
    script = gpu_box["build_conda.sh"]
    assert ('CONDA_SOLVER=libmamba /opt/miniforge3/bin/conda env create --yes --prefix "$env" \\\n'
            "    --file /opt/miniforge3/spotbox-course.environment.yml") in script
    assert "env=/opt/miniforge3/envs/course\n" in script  # no data volume: the root disk
    assert "CONDA_PKGS_DIRS" not in script
    assert "conda env update" not in script and "--prune \\" not in script
    assert gpu_box["build_user"] == "ubuntu"  # Miniforge is the login user's
    assert '"display_name": "course: torch 2.13.0+cu126, CUDA 12.6"' in script
    kernel = gpu_box["kernel"]
    assert kernel["argv"][:3] == ["/opt/miniforge3/envs/course/bin/python", "-m",
                                  "ipykernel_launcher"]


def test_the_installer_is_versioned_for_the_boxs_architecture(gpu_box) -> None:
    url = gpu_box["miniforge_url"]
    assert url == ("https://github.com/conda-forge/miniforge/releases/download/26.3.2-3/"
                   "Miniforge3-26.3.2-3-Linux-ARCH.sh")  # ARCH: uname -m on the box
    tasks = yaml.safe_load((ROLE / "tasks" / "start_conda.yml").read_text())
    install = next(t for t in tasks if t["name"].startswith("Install Miniforge"))
    run = next(t for t in install["block"] if t["name"].startswith("Run the installer"))
    assert run["ansible.builtin.command"]["argv"][2:] == ["-b", "-u", "-p", "{{ conda_prefix }}"]
    assert run["become_user"] == "{{ conda_user }}"
    download = next(t for t in install["block"] if t["name"].startswith("Download"))
    assert download["ansible.builtin.get_url"]["checksum"].endswith("__conda_url ~ '.sha256' }}")
    profile = next(t for t in tasks if t["name"].startswith("Put conda on login shells"))
    assert "conda activate course" in profile["ansible.builtin.copy"]["content"].replace(
        "{{ conda_env_name }}", "course")
    base = next(t for t in tasks if t["name"].startswith("Do not start shells in base"))
    assert base["ansible.builtin.lineinfile"]["line"] == "auto_activate_base: false"


def test_the_uv_backend_installs_the_same_build_in_a_step_of_its_own(tmp_path: Path) -> None:
    files = render(tmp_path, cuda_wheel_tag="cu126", conda_backend="uv")
    script = files["build_uv.sh"]
    requirements = script.split("<<'SPOTBOX_REQUIREMENTS'\n")[1].split("SPOTBOX_REQUIREMENTS")[0]
    lines = [line for line in requirements.splitlines() if not line.startswith("#")]
    assert lines == ["jupyterlab", "matplotlib", "pandas"]  # PyPI, as before
    assert ('"$uv" pip install --quiet --system-certs --python "$env/bin/python" --index-url '
            "https://download.pytorch.org/whl/cu126 torch==2.13.0+cu126") in script
    assert files["build_user"] == "ubuntu"


def test_without_a_gpu_the_cpu_build_and_none(tmp_path: Path) -> None:
    files = render(tmp_path, conda_backend="uv", conda_framework_find_links="/opt/spotbox/wheels")
    assert ("--find-links /opt/spotbox/wheels torch==2.13.0+cpu") in files["build_uv.sh"]
    assert '"display_name": "course: torch 2.13.0+cpu, CPU"' in files["build_uv.sh"]
    none = render(tmp_path / "none", conda_framework="none")
    assert "pip:" not in none["environment.yml"]
    assert '"display_name": "course: Python"' in none["build_conda.sh"]


def test_on_the_data_volume_the_environment_and_the_caches_are_there(tmp_path: Path) -> None:
    """tasks/start.yml found the data volume mounted (data_volume_path): both backends
    put the environment and their package cache in its .spotbox folder."""
    volume = {"conda_env_on_data_volume": True, "data_volume_path": "/home/ubuntu/Payload"}
    uv = render(tmp_path / "uv", conda_backend="uv", **volume)
    assert uv["prefix"] == "/home/ubuntu/Payload/.spotbox/envs/course"
    assert uv["build_root"] == "/home/ubuntu/Payload/.spotbox"  # the job, and uv itself
    assert "export UV_CACHE_DIR=/home/ubuntu/Payload/.spotbox/cache/uv\n" in uv["build_uv.sh"]
    assert uv["kernel"]["argv"][0] == "/home/ubuntu/Payload/.spotbox/envs/course/bin/python"
    conda = render(tmp_path / "conda", conda_backend="conda", **volume)
    assert conda["prefix"] == "/home/ubuntu/Payload/.spotbox/envs/course"
    assert ("export CONDA_PKGS_DIRS=/home/ubuntu/Payload/.spotbox/cache/conda-pkgs\n"
            in conda["build_conda.sh"])
    # Without it (an SSH host without a data volume): the root disk, as before.
    root = render(tmp_path / "root", conda_backend="uv")
    assert (root["prefix"], root["build_root"]) == ("/opt/spotbox/envs/course", "/opt/spotbox/envs")
    assert "UV_CACHE_DIR" not in root["build_uv.sh"]


FAKE_UV = """#!/bin/sh
echo "uv $*" >> {calls}
case "$1" in
  --version) echo "uv 0.13.9 (fake)" ;;
  venv) for last; do :; done
        mkdir -p "$last/bin" && printf '#!/bin/sh\\nexit 0\\n' > "$last/bin/python"
        chmod +x "$last/bin/python" ;;
esac
"""


def build_script(tmp_path: Path, volume: Path, name: str, **extra) -> str:
    """The uv backend's build script, rendered for a box whose data volume is the folder volume."""
    return render(tmp_path / name, conda_backend="uv", conda_env_on_data_volume=True,
                  conda_data_dir=str(volume / ".spotbox"), **extra)["build_uv.sh"]


def run_build(tmp_path: Path, volume: Path, script: str) -> tuple[str, list[str]]:
    """Run a build script with a uv that records its calls: its NOTE lines and uv's calls."""
    calls = tmp_path / "uv.calls"
    calls.write_text("")
    uv = volume / ".spotbox" / ".uv" / "bin" / "uv"
    uv.parent.mkdir(parents=True, exist_ok=True)
    uv.write_text(FAKE_UV.format(calls=calls))
    uv.chmod(0o755)
    run = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    notes = [line.removeprefix("NOTE ") for line in run.stdout.splitlines()
             if line.startswith("NOTE ")]
    return "\n".join(notes), [c for c in calls.read_text().splitlines() if c != "uv --version"]


def test_a_new_instance_with_the_same_volume_rebuilds_nothing_or_only_the_framework(
        tmp_path: Path) -> None:
    """The stamps' decision, run: the first box builds; a second box with the same volume
    and CUDA choice finds it (not rebuilt); one with another CUDA choice (another driver:
    cu130) reinstalls only the framework; another package list builds again."""
    volume = tmp_path / "Payload"
    env = volume / ".spotbox" / "envs" / "course"
    cu126 = build_script(tmp_path, volume, "cu126", cuda_wheel_tag="cu126")
    cu130 = build_script(tmp_path, volume, "cu130", cuda_wheel_tag="cu130")
    fewer = build_script(tmp_path, volume, "fewer", cuda_wheel_tag="cu130",
                         conda_packages=["jupyterlab"])
    notes, calls = run_build(tmp_path, volume, cu126)
    built = f"environment course built on the data volume ({env}): "
    found = f"environment course found on the data volume ({env}), stamp matches: not rebuilt"
    assert notes == built + "no stamp of an earlier build"
    assert [c.split()[1:3] for c in calls] == [["venv", "--quiet"], ["pip", "install"],
                                               ["pip", "install"]]
    assert calls[2].endswith("torch==2.13.0+cu126")
    assert "torch" not in calls[1]  # the requirements file: the environment without the framework
    kernel = json.loads((env / "share/jupyter/kernels/python3/kernel.json").read_text())
    assert kernel["display_name"] == "course: torch 2.13.0+cu126, CUDA 12.6"

    notes, calls = run_build(tmp_path, volume, cu126)  # a second box, the same volume
    assert notes == found
    assert calls == []

    notes, calls = run_build(tmp_path, volume, cu130)  # another driver
    assert notes == (found + "; the framework build differs (another CUDA choice): only the "
                     "framework is reinstalled")
    assert len(calls) == 1 and calls[0].endswith(
        "--index-url https://download.pytorch.org/whl/cu130 torch==2.13.0+cu130")
    kernel = json.loads((env / "share/jupyter/kernels/python3/kernel.json").read_text())
    assert kernel["display_name"] == "course: torch 2.13.0+cu130, CUDA 13.0"
    assert run_build(tmp_path, volume, cu130)[1] == []

    notes, calls = run_build(tmp_path, volume, fewer)
    assert notes == built + "its specification changed"
    assert [c.split()[1:3] for c in calls] == [["pip", "install"], ["pip", "install"]]  # venv kept

    # A python that no longer runs (another image's python3) builds again, venv included.
    (env / "bin" / "python").write_text("#!/bin/sh\nexit 127\n")
    notes, calls = run_build(tmp_path, volume, fewer)
    assert notes == built + "its python no longer runs (another image's?)"
    assert [c.split()[1] for c in calls] == ["venv", "pip", "pip"]
