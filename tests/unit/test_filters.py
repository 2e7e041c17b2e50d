"""spotbox's Jinja filters."""

import pytest
from ansible.errors import AnsibleFilterError
from spotbox import ssh_cidr


def test_ssh_cidr_normalises() -> None:
    assert ssh_cidr("203.0.113.7") == "203.0.113.7/32"
    assert ssh_cidr(" 203.0.113.7\n") == "203.0.113.7/32"
    assert ssh_cidr("10.1.2.3/16") == "10.1.0.0/16"
    assert ssh_cidr("0.0.0.0/0") == "0.0.0.0/0"


@pytest.mark.parametrize("bad", ["", "example.com", "300.1.1.1", "1.2.3.4/40", "<html>"])
def test_ssh_cidr_names_the_variable(bad: str) -> None:
    with pytest.raises(AnsibleFilterError, match="spot_instance_ssh_cidr must be an IPv4"):
        ssh_cidr(bad)


from spotbox import conda_missing_packages, env_to_requirements, framework_pip_lines  # noqa: E402

INDEX = "https://download.pytorch.org/whl"


@pytest.mark.parametrize(("tag", "version", "spec"), [
    ("cu126", "", "torch==2.13.0+cu126"),  # the recorded default release
    ("cu132", "2.13.0", "torch==2.13.0+cu132"),
    ("cpu", "2.12.1", "torch==2.12.1+cpu"),
    ("cu128", "2.9.1", "torch==2.9.1+cu128"),
])
def test_framework_is_pinned_from_its_own_index(tag: str, version: str, spec: str) -> None:
    # --index-url, not --extra-index-url: pip gives no index priority, so an extra
    # index let PyPI's default (CUDA 13) build win over the chosen one.
    assert framework_pip_lines(tag, version=version) == [f"--index-url {INDEX}/{tag}", spec]
    assert framework_pip_lines(tag, version=version, index_base="https://mirror.example/whl/") \
        == [f"--index-url https://mirror.example/whl/{tag}", spec]


def test_a_build_the_release_does_not_publish_is_refused() -> None:
    with pytest.raises(AnsibleFilterError, match=r"torch 2\.13 has no cu124 build \(it has "
                       r"cu126, cu130, cu132 and cpu"):
        framework_pip_lines("cu124")
    # A release that is not recorded: taken as asked (the smoke test checks it).
    assert framework_pip_lines("cu124", version="3.0.0") == [
        f"--index-url {INDEX}/cu124", "torch==3.0.0+cu124"]


def test_framework_pins_local_wheels_other_frameworks_and_none() -> None:
    assert framework_pip_lines("cpu", version="2.13.0+cpu", find_links="/opt/wheels") == [
        "--find-links /opt/wheels", "torch==2.13.0+cpu"]
    assert framework_pip_lines("cpu", find_links="/opt/wheels") == [
        "--find-links /opt/wheels", "torch==2.13.0+cpu"]
    assert framework_pip_lines("cu126", framework="jax", version="0.7.0") == ["jax==0.7.0"]
    assert framework_pip_lines("cu126", framework="none") == []
    with pytest.raises(AnsibleFilterError, match="cuda_wheel_tag must be"):
        framework_pip_lines("12.4")


def test_env_file_to_requirements() -> None:
    framework = [f"--index-url {INDEX}/cu126", "torch==2.13.0+cu126"]
    env = {"name": "course", "channels": ["conda-forge"], "dependencies": [
        "python=3.11", "pip", "jupyterlab", "pandas=2.2", "conda-forge::matplotlib>=3.8",
        {"pip": [*framework, "einops"]}]}
    assert env_to_requirements(env) == [
        "jupyterlab", "pandas==2.2", "matplotlib>=3.8", *framework, "einops"]
    # The uv backend installs the framework in a step of its own, from its index alone.
    assert env_to_requirements(env, framework) == [
        "jupyterlab", "pandas==2.2", "matplotlib>=3.8", "einops"]


def test_conda_missing_package_message() -> None:
    stderr = """
PackagesNotFoundError: The following packages are not available from current channels:

  - jupyterlabb

Current channels:

  - https://conda.anaconda.org/conda-forge/linux-64
  - https://conda.anaconda.org/conda-forge/noarch
"""
    message = conda_missing_packages(stderr)
    assert message.startswith("conda cannot find jupyterlabb in the channels "
                              "https://conda.anaconda.org/conda-forge/linux-64")
    assert conda_missing_packages("Solving environment: done") == ""


def test_ssh_target_reads_the_inventory_with_ssh_defaults() -> None:
    from spotbox import ssh_target

    box = {"ansible_host": "203.0.113.7", "ansible_user": "ec2-user",
           "ansible_ssh_private_key_file": "/keys/course.pem"}
    assert ssh_target(box, "spotbox-course") == {
        "host": "203.0.113.7", "user": "ec2-user", "key": "/keys/course.pem"}
    assert ssh_target({}, "gpu.example.org") == {
        "host": "gpu.example.org", "user": "ubuntu", "key": ""}


@pytest.mark.parametrize(("box", "name"), [
    ({"ansible_host": "10.0.0.5"}, "spotbox-x *"),  # a Host line that matches every host
    ({"ansible_host": "10.0.0.5\n  ProxyCommand evil"}, "spotbox-x"),
    ({"ansible_host": "10.0.0.5", "ansible_user": "ubuntu x"}, "spotbox-x"),
    ({"ansible_host": "10.0.0.5", "ansible_ssh_private_key_file": "/k.pem\nHost *"}, "spotbox-x"),
])
def test_ssh_target_refuses_what_would_change_an_ssh_config(box: dict, name: str) -> None:
    from spotbox import ssh_target

    with pytest.raises(AnsibleFilterError, match="do not belong in an ssh config file"):
        ssh_target(box, name)


BOX = {"ansible_host": "203.0.113.7", "ansible_user": "ubuntu",
       "ansible_ssh_private_key_file": "/keys/course.pem"}


def test_ssh_config_entry_is_the_tunnels_route() -> None:
    from spotbox import ssh_config_entry

    assert ssh_config_entry(BOX, "spotbox-course", 8889, "8888") == (
        "Host spotbox-course\n  HostName 203.0.113.7\n  User ubuntu\n"
        "  IdentityFile /keys/course.pem\n  IdentitiesOnly yes\n"
        "  LocalForward 8889 127.0.0.1:8888\n")
    # An SSH host of your own: its port, ssh's own key.
    assert ssh_config_entry({"ansible_port": "2222"}, "gpu", 8888, 8890) == (
        "Host gpu\n  HostName gpu\n  User ubuntu\n  Port 2222\n"
        "  LocalForward 8888 127.0.0.1:8890\n")
    with pytest.raises(AnsibleFilterError, match="do not belong in an ssh config file"):
        ssh_config_entry(BOX, "two words", 8888, 8888)


def test_access_summary_prints_the_tunnel_the_url_and_the_entry() -> None:
    from spotbox import access_summary

    choice = {"port": 8889, "reason": "8888 is taken on this machine (a local Jupyter?), "
                                      "so the tunnel uses 8889"}
    lines = access_summary(BOX, "spotbox-course", choice, 8888, "ab12", "/root/.ssh/spotbox_config")
    assert lines == [
        choice["reason"],
        "tunnel  ssh -i /keys/course.pem -N -L 8889:127.0.0.1:8888 ubuntu@203.0.113.7",
        "url     http://127.0.0.1:8889/lab?token=ab12",
        "or      ssh -N spotbox-course   "
        "(with 'Include /root/.ssh/spotbox_config' in ~/.ssh/config)"]
    own = access_summary({"ansible_port": 2222}, "gpu", {"port": 8888, "reason": "free"}, 8890, "",
                         "/c", check_mode=True)
    assert own[1] == "tunnel  ssh -p 2222 -N -L 8888:127.0.0.1:8890 ubuntu@gpu"
    assert own[2].endswith("token=(check mode: the first real run makes the token)")
    assert own[3].endswith("~/.ssh/config; check mode writes no file)")


@pytest.mark.parametrize(("value", "line"), [
    ("interrupted at 12:00:03 (terminate),\n  data volume unmounted",
     "interrupted at 12:00:03 (terminate), data volume unmounted"),
    ({"message": "stopped by AWS at 12:00", "time": "x"}, "stopped by AWS at 12:00"),
    ({"time": "2026-11-29T12:00:03Z", "action": "terminate", "hooks": ""},
     "time 2026-11-29T12:00:03Z, action terminate"),
])
def test_the_last_interruption_is_one_line(value, line: str) -> None:
    from spotbox import access_summary, interruption_line

    assert interruption_line(value) == line
    box = {**BOX, "spotbox_last_interruption": value}
    lines = access_summary(box, "b", {"port": 1, "reason": "r"}, 2, "t", "/c")
    assert lines[-1] == f"last time  {line}"
    assert not any(text.startswith("last time") for text in
                   access_summary({**BOX, "spotbox_last_interruption": ""}, "b",
                                  {"port": 1, "reason": "r"}, 2, "t", "/c"))


def test_a_public_ip_answer_must_be_one_address() -> None:
    assert ssh_cidr("203.0.113.7\n", "the answer", host_only=True) == "203.0.113.7/32"
    with pytest.raises(AnsibleFilterError, match="the answer must be one IPv4 address"):
        ssh_cidr("1.2.3.4/0", "the answer", host_only=True)
