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
            "conda_env_prefix": "{{ (conda_venv_root if conda_backend == 'uv' else conda_prefix "
                                "~ '/envs') ~ '/' ~ conda_env_name }}",
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
                           "__conda_build_user, 'kernel': __conda_kernel_json} | to_json }}",
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


def test_the_environment_file_pins_the_build_from_its_own_index(gpu_box) -> None:
    env = yaml.safe_load(gpu_box["environment.yml"])
    assert env["channels"] == ["conda-forge"]
    assert env["dependencies"][:5] == ["python=3.11", "pip", "jupyterlab", "matplotlib", "pandas"]
    assert env["dependencies"][5] == {"pip": [
        "--index-url https://download.pytorch.org/whl/cu126", "torch==2.13.0+cu126"]}


def test_the_conda_build_recreates_the_environment_as_the_user(gpu_box) -> None:
    script = gpu_box["build_conda.sh"]
    assert ("CONDA_SOLVER=libmamba /opt/miniforge3/bin/conda env create --yes --name course \\\n"
            "  --file /opt/miniforge3/spotbox-course.environment.yml") in script
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
