"""Every user-settable variable of every role, given the ways users give them.

`-e key=value` hands over text, JSON (`-e '{"k": 200}'`) and group_vars typed
values; both must work, and a wrong value must stop the run with one line that
names the variable, before anything is created. Three layers, fast first:

- the matrix: for every option of every role's argument spec, a valid value as
  text (as -e gives it) and typed (as JSON gives it), which must convert alike,
  and a wrong type, an out-of-range and a malformed value, each refused in one
  line. Run through the spotbox_settings action's own functions (no Ansible
  run per case); a new option without its cases fails the suite;
- every role through ansible-playbook: tests/integration/settings_only.yml runs
  only their settings steps on localhost (no box, no AWS), given as -e text and
  as JSON;
- spot_instance through the real launch.yml against the AWS emulator: the issue's
  table, asserting the exit code, the line, and that nothing exists afterwards
  (the valid values in check mode: the whole launch, nothing created).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import ROOT, ansible_env, needs_local_cloud

_spec = importlib.util.spec_from_file_location(
    "spotbox_settings", ROOT / "plugins" / "action" / "spotbox_settings.py")
settings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(settings)
ROLES = sorted(p.parent.parent.name for p in ROOT.glob("roles/*/meta/argument_specs.yml"))
ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


@dataclass(frozen=True)
class NA:
    """A category that does not apply to a variable, and why."""

    why: str


ANY_PATH = NA("any absolute path is in range")
ANY_TEXT = NA("any text of the accepted form is in range")
WRONG = ["not", "text"]  # a list where text is expected (JSON or YAML hands it over)

# variable: (valid as -e text, the same typed as JSON, wrong type, out of range, malformed)
CASES = {
    # cuda
    "cuda_version": ("12.4", "12.4", 12.4, NA("a toolkit version is checked against those "
                                               "installed, on the box"), "12"),
    "cuda_require_gpu": ("yes", True, WRONG, 2, "maybe"),
    "cuda_require_toolkit": ("yes", True, WRONG, 2, "maybe"),
    "cuda_framework": ("none", "none", WRONG, ANY_TEXT, "torch vision"),
    "cuda_framework_version": ("2.13.0", "2.13.0", 2.13, ANY_TEXT, "v2"),
    "cuda_prefix": ("/opt/cuda", "/opt/cuda", WRONG, ANY_PATH, "opt/cuda"),
    "cuda_nvidia_smi": ("/usr/bin/nvidia-smi", "/usr/bin/nvidia-smi", WRONG, ANY_TEXT,
                        "nvidia-smi -q"),
    # conda
    "conda_backend": ("uv", "uv", WRONG, "pip", "UV"),
    "conda_user": ("student", "student", WRONG, "u" * 33, "Bad User"),
    "conda_prefix": ("/opt/conda", "/opt/conda", WRONG, ANY_PATH, "/opt/my conda"),
    "conda_miniforge_version": ("25.3.1-0", "25.3.1-0", WRONG, ANY_TEXT, "latest"),
    "conda_installer_url": ("https://example.com/i.sh", "https://example.com/i.sh", WRONG,
                            ANY_TEXT, "example.com/i.sh"),
    "conda_installer_sha256": ("a" * 64, "a" * 64, WRONG, "a" * 63, "z" * 64),
    "conda_installer_path": ("/tmp/i.sh", "/tmp/i.sh", WRONG, ANY_PATH, "i.sh"),
    "conda_channels": ("conda-forge,bioconda", ["conda-forge", "bioconda"], {"a": 1}, "[]",
                       "conda forge"),
    "conda_env_name": ("ml-1", "ml-1", WRONG, ANY_TEXT, "x;id"),
    "conda_env_file": ("/tmp/env.yml", "/tmp/env.yml", WRONG,
                       NA("any file on the controller: the file lookup names a missing one"),
                       NA("any file name on the controller")),
    "conda_python_version": ("3.10", "3.10", 3.1, ANY_TEXT, "3"),
    "conda_packages": ("numpy,pandas>=2", ["numpy", "pandas>=2"], {"numpy": 1},
                       NA("no packages is allowed: the framework alone"), "foo: bar"),
    "conda_framework": ("none", "none", WRONG, ANY_TEXT, "torch vision"),
    "conda_framework_version": ("2.5.1+cpu", "2.5.1+cpu", 2.5, ANY_TEXT, "v2"),
    "conda_framework_index_base": ("https://x.example/whl", "https://x.example/whl", WRONG,
                                   ANY_TEXT, "download.pytorch.org"),
    "conda_framework_find_links": ("/opt/wheels", "/opt/wheels", WRONG, ANY_TEXT, "wheels"),
    "conda_wheel_tag": ("cu124", "cu124", WRONG, "cu12", "cuda12"),
    "conda_uv_version": ("0.5.1", "0.5.1", 0.5, ANY_TEXT, "latest"),
    "conda_venv_root": ("/opt/envs", "/opt/envs", WRONG, "/opt", "envs"),
    "conda_data_dir": ("/data/.spotbox", "/data/.spotbox", WRONG, "/opt", "data/.spotbox"),
    "conda_build_timeout": ("600", 600, WRONG, "0", "10m"),
    # data_volume
    "data_volume_device": ("/dev/nvme1n1", "/dev/nvme1n1", WRONG, ANY_PATH, "nvme1n1"),
    "data_volume_volume_id": ("vol-0123abcd", "vol-0123abcd", WRONG, ANY_TEXT, "volume-1"),
    "data_volume_device_name": ("/dev/xvdg", "/dev/xvdg", WRONG, "/dev/sda", "sdf"),
    "data_volume_layout": ("whole", "whole", WRONG, "mbr", "GPT"),
    "data_volume_fstype": ("xfs", "xfs", WRONG, "btrfs", "ext 4"),
    "data_volume_label": ("data", "data", WRONG, "a" * 13, "my data"),
    "data_volume_user": ("student", "student", WRONG, "u" * 33, "Ubuntu"),
    "data_volume_mount_name": ("Data", "Data", WRONG, ANY_TEXT, ".."),
    "data_volume_mount_point": ("/data", "/data", WRONG, ANY_PATH, "data"),
    "data_volume_mount_options": ("defaults,noatime", "defaults,noatime", WRONG, ANY_TEXT,
                                  "defaults, nofail"),
    "data_volume_grow": ("no", False, WRONG, 2, "maybe"),
    "data_volume_udev_timeout": ("10", 10, WRONG, "0", "10s"),
    # jupyter
    "jupyter_user": ("student", "student", WRONG, "u" * 33, "root\nExecStart=/bin/sh"),
    "jupyter_port": ("9000", 9000, True, "70000", "88a8"),
    "jupyter_python": ("/opt/env/bin/python", "/opt/env/bin/python", WRONG, ANY_PATH, "python3"),
    "jupyter_root_dir": ("/home/ubuntu/nb", "/home/ubuntu/nb", WRONG, ANY_PATH, "nb"),
    "jupyter_config_dir": ("/home/ubuntu/.jupyter", "/home/ubuntu/.jupyter", WRONG, ANY_PATH,
                           "/home/u/$(id)"),
    "jupyter_service_name": ("my-jupyter", "my-jupyter", WRONG, ANY_TEXT, "my jupyter"),
    "jupyter_start_timeout": ("30", 30, WRONG, "0", "30s"),
    # spot_watch
    "spot_watch_endpoint": ("http://127.0.0.1:8099", "http://127.0.0.1:8099", WRONG, ANY_TEXT,
                            "169.254.169.254"),
    "spot_watch_interval": ("2.5", 2.5, WRONG, "0", "5s"),
    "spot_watch_hook_dir": ("/opt/hooks", "/opt/hooks", WRONG, ANY_PATH, "hooks"),
    "spot_watch_hook_budget": ("90", 90, WRONG, "-1", "90s"),
    "spot_watch_jupyter_service": ("my-jupyter", "my-jupyter", WRONG, ANY_TEXT, "my jupyter"),
    "spot_watch_jupyter_stop_timeout": ("30", 30, WRONG, "0", "30s"),
    "spot_watch_mount_point": ("/data", "/data", WRONG, ANY_PATH, "data"),
    "spot_watch_service_name": ("my-watch", "my-watch", WRONG, ANY_TEXT, "my watch"),
    "spot_watch_python": ("/usr/bin/python3.11", "/usr/bin/python3.11", WRONG, ANY_PATH,
                          "python3"),
    # spot_idle
    "spot_idle_minutes": ("30", 30, WRONG, "10081", "1h"),
    "spot_idle_warn_minutes": ("2", 2, WRONG, "61", "5m"),
    "spot_idle_interval": ("2.5", 2.5, WRONG, "0", "30s"),
    "spot_idle_gpu_percent": ("5", 5, WRONG, "101", "5%"),
    "spot_idle_cpu_percent": ("50", 50, WRONG, "101", "50%"),
    "spot_idle_jupyter_port": ("9000", 9000, True, "70000", "88a8"),
    "spot_idle_jupyter_token_file": ("/home/u/.jupyter/token", "/home/u/.jupyter/token", WRONG,
                                     ANY_PATH, "token"),
    "spot_idle_jupyter_service": ("my-jupyter", "my-jupyter", WRONG, ANY_TEXT, "my jupyter"),
    "spot_idle_mount_point": ("/data", "/data", WRONG, ANY_PATH, "data"),
    "spot_idle_service_name": ("my-idle", "my-idle", WRONG, ANY_TEXT, "my idle"),
    "spot_idle_python": ("/usr/bin/python3.11", "/usr/bin/python3.11", WRONG, ANY_PATH,
                         "python3"),
    # access
    "access_local_port": ("9000", 9000, True, "70000", "88a8"),
    "access_ssh_config_file": ("~/.ssh/my_config", "~/.ssh/my_config", WRONG, ANY_PATH,
                               "my_config"),
    "access_jupyter_service": ("my-jupyter", "my-jupyter", WRONG, ANY_TEXT, "my jupyter"),
    "access_forget_hosts": ("spotbox-ana,spotbox-ben", ["spotbox-ana", "spotbox-ben"],
                            {"spotbox-ana": 1}, NA("any list of names: one without an entry "
                                                   "changes nothing"), "spotbox ana"),
    # spot_instance
    "spot_instance_name": ("box-1", "box-1", WRONG, "a" * 32, "Bad_Name"),
    "spot_instance_names": ("ana,ben", ["ana", "ben"], {"ana": 1},
                            NA("any number of boxes: the spot quota is AWS's to say"),
                            "ana,Ben"),
    "spot_instance_boxes": ('[{"name": "ana"}, {"name": "big", "types": ["g5.xlarge"]}]',
                            [{"name": "ana"}, {"name": "big", "types": ["g5.xlarge"]}],
                            {"name": "ana"}, NA("each box's name and settings are checked by "
                                      "launch's boxes step (tests/unit/test_boxes.py)"),
                            '[{"name": "ana"'),
    "spot_instance_region": ("eu-west-1", "eu-west-1", WRONG,
                             NA("whether a region exists is AWS's to say (the role asks it)"),
                             "mars-1"),
    "spot_instance_owner": ("me@example.com", "me@example.com", WRONG, "x" * 257, "me;rm"),
    "spot_instance_types": ("g4dn.xlarge,g5.xlarge", ["g4dn.xlarge", "g5.xlarge"],
                            {"g4dn.xlarge": 1}, "[]", "g4dn_xlarge"),
    "spot_instance_max_price": ("0.5", 0.5, WRONG, "0", "cheap"),
    "spot_instance_ami_id": ("ami-0123456789abcdef0", "ami-0123456789abcdef0", WRONG,
                             "ami-" + "0" * 18, "ami-doesnotexist"),
    "spot_instance_ami_name_pattern": ("My AMI *", "My AMI *", WRONG, "",
                                       NA("any text is a name pattern")),
    "spot_instance_ami_owner": ("self", "self", WRONG, "1" * 13, "amazon;x"),
    "spot_instance_architecture": ("arm64", "arm64", WRONG, "i386", "x86-64"),
    "spot_instance_root_volume_size": ("200", 200, WRONG, "4", "200GB"),
    "spot_instance_data_volume_size": ("200", 200, True, "-5", "200 GiB"),
    "spot_instance_data_volume_device": ("/dev/sdg", "/dev/sdg", WRONG, "/dev/sda", "sdf"),
    "spot_instance_ssh_cidr": ("203.0.113.7/32", "203.0.113.7/32", WRONG, "10.0.0.0/33",
                               "example.com"),
    "spot_instance_public_ip_url": ("https://ifconfig.me", "https://ifconfig.me", WRONG,
                                    ANY_TEXT, "ftp://x"),
    "spot_instance_subnet_id": ("subnet-0123abcd", "subnet-0123abcd", WRONG,
                                "subnet-" + "0" * 18, "subnet-xyz"),
    "spot_instance_key_name": ("my-key", "my-key", WRONG, "k" * 256, "my key"),
    "spot_instance_key_create": ("false", False, WRONG, 2, "maybe"),
    "spot_instance_key_file": ("~/k.pem", "~/k.pem", WRONG, ANY_PATH, "keys/k.pem"),
    "spot_instance_known_hosts_file": ("/tmp/kh", "/tmp/kh", WRONG, ANY_PATH, "kh"),
    "spot_instance_request_type": ("persistent", "persistent", WRONG, "spot", "one time"),
    "spot_instance_interruption_behavior": ("stop", "stop", WRONG, "hibernate", "Stop"),
    "spot_instance_ssh_user": ("ec2-user", "ec2-user", WRONG, "u" * 33, "Ubuntu"),
    "spot_instance_on_demand_prices": ('{"g4dn.xlarge": 0.6}', {"g4dn.xlarge": 0.6}, WRONG,
                                       '{"g4dn.xlarge": 0}', "g4dn.xlarge=0.6"),
    "spot_instance_inventory_file": ("/tmp/b.aws_ec2.yml", "/tmp/b.aws_ec2.yml", WRONG,
                                     ANY_PATH, "/tmp/inventory.yml"),
    "spot_instance_ssh_timeout": ("60", 60, WRONG, "0", "60s"),
    "spot_instance_snapshot_on_terminate": ("yes", True, WRONG, 2, "maybe"),
    "spot_instance_delete_data_volume": ("true", True, WRONG, -1, "sure"),
}
BAD = ("wrong type", "out of range", "malformed")


@functools.cache
def options_of(role: str) -> dict[str, tuple[dict, dict]]:
    """{entry point: (options, rules)} of a role."""
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return {entry: settings.load_role(ROOT / "roles" / role, entry)
            for entry in specs["argument_specs"]}


MATRIX = [(role, entry, name) for role in ROLES for entry, (options, _) in options_of(role).items()
          for name in options]


def test_every_variable_of_every_role_has_its_cases() -> None:
    names = {name for _, _, name in MATRIX}
    assert names - set(CASES) == set(), "variables without cases: add them to CASES"
    assert set(CASES) - names == set(), "cases for variables no spec has"


def settle(role: str, entry: str, name: str, value):
    options, rules = options_of(role)[entry]
    return settings.settle(name, value, options[name], rules.get(name))


@pytest.mark.parametrize(("role", "entry", "name"), MATRIX, ids=lambda x: str(x))
def test_valid_values_convert_alike_from_text_and_json(role, entry, name) -> None:
    text, typed = CASES[name][:2]
    assert isinstance(text, str), "the -e key=value form is text"
    from_text, from_json = settle(role, entry, name, text), settle(role, entry, name, typed)
    assert from_text == from_json
    assert type(from_text) is type(from_json)
    kind = options_of(role)[entry][0][name].get("type", "str")
    expected = {"int": int, "bool": bool, "list": list, "dict": dict, "str": str, "path": str}
    if kind in expected:
        assert isinstance(from_text, expected[kind])


@pytest.mark.parametrize(("role", "entry", "name"), MATRIX, ids=lambda x: str(x))
def test_bad_values_are_refused_in_one_line_naming_the_variable(role, entry, name) -> None:
    for category, value in zip(BAD, CASES[name][2:], strict=True):
        if isinstance(value, NA):
            continue
        with pytest.raises(settings.SettingError) as error:
            settle(role, entry, name, value)
        message = str(error.value)
        assert message.startswith(f"{name} must be "), (category, message)
        assert "\n" not in message, (category, message)
        assert ", not " in message, (category, message)
        shown = settings.shown(value)
        assert shown[:40] in message, (category, value, message)


def test_at_least_one_case_of_each_category_per_variable() -> None:
    """Where a category is not applicable, the table says why; at most two of three."""
    for name, cases in CASES.items():
        assert sum(not isinstance(v, NA) for v in cases[2:]) >= 1, name
        assert all(v.why for v in cases[2:] if isinstance(v, NA)), name


# --- Every role through ansible-playbook (settings steps only, on localhost) ------------

BOX_VALID = {"cuda_require_gpu": "yes", "conda_channels": "conda-forge,bioconda",
             "conda_python_version": "3.10", "conda_build_timeout": "600",
             "data_volume_grow": "no", "data_volume_udev_timeout": "10", "jupyter_port": "9000",
             "conda_packages": "numpy,pandas>=2", "spot_instance_data_volume_size": "200",
             "spot_instance_types": "g4dn.xlarge,g5.xlarge", "spot_instance_max_price": "0.9",
             "spot_instance_key_create": "yes",
             "spot_instance_on_demand_prices": '{"g4dn.xlarge":0.6}'}
BOX_EXPECTED = {"__cuda_require_gpu": True, "__conda_channels": ["conda-forge", "bioconda"],
                "__conda_python_version": "3.10", "__conda_build_timeout": 600,
                "__data_volume_grow": False, "__data_volume_udev_timeout": 10,
                "__jupyter_port": 9000, "__conda_packages": ["numpy", "pandas>=2"],
                "__spot_instance_data_volume_size": 200,
                "__spot_instance_types": ["g4dn.xlarge", "g5.xlarge"],
                "__spot_instance_max_price": 0.9, "__spot_instance_key_create": True,
                "__spot_instance_on_demand_prices": {"g4dn.xlarge": 0.6}}


def settings_only(*args: str) -> tuple[int, list[dict], str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "json"}
    done = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "inventory/localhost.yml",
                           "tests/integration/settings_only.yml", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    tasks = json.loads(done.stdout)["plays"][0]["tasks"]
    return done.returncode, [t["hosts"]["localhost"] for t in tasks], done.stderr


@pytest.mark.parametrize("how", ["key=value", "json"])
def test_every_role_takes_text_and_json_alike(how) -> None:
    if how == "key=value":
        args = [arg for key, value in BOX_VALID.items() for arg in ("-e", f"{key}={value}")]
    else:
        typed = {f"{k[2:]}": v for k, v in BOX_EXPECTED.items()}
        args = ["-e", json.dumps(typed)]
    code, results, _ = settings_only(*args)
    assert code == 0, results
    facts = json.loads(results[-1]["msg"])
    assert {k: facts[k] for k in BOX_EXPECTED} == BOX_EXPECTED


@pytest.mark.parametrize(("args", "message"), [
    (["-e", "jupyter_port=abc"], "jupyter_port must be a whole number between 1 and 65535 "
                                 "(a TCP port), not 'abc'"),
    (["-e", "conda_build_timeout=0"], "conda_build_timeout must be a whole number of seconds "
                                      "between 1 and 86400, not '0'"),
    (["-e", "conda_env_name=x;id"], "conda_env_name must be an environment name of letters, "
                                    "digits, '.', '_' and '-', like course (it goes into shell "
                                    "commands), not 'x;id'"),
    (["-e", '{"conda_python_version": 3.10}'], "conda_python_version must be text, not 3.1 "
                                               "(a number: YAML and JSON read 3.10 as 3.1"),
    (["-e", "data_volume_mount_point=Payload"], "data_volume_mount_point must be an absolute "
                                                "folder on the box"),
    (["-e", "cuda_require_gpu=maybe"], "cuda_require_gpu must be true or false (yes/no, 1/0), "
                                       "not 'maybe'"),
    (["-e", '{"spot_instance_data_volume_size": "big"}'],
     "spot_instance_data_volume_size must be a whole number of GiB between 1 and 16384 (gp3), "
     "not 'big'"),
], ids=["wrong-type", "out-of-range", "malformed", "lost-digits", "relative", "bool",
        "json-wrong-type"])
def test_roles_refuse_with_one_line_and_run_nothing_else(args, message) -> None:
    code, results, _ = settings_only(*args)
    assert code == 2
    failed = [r for r in results if r.get("failed")]
    assert len(failed) == 1 and failed[0]["msg"].startswith(message), results
    assert "\n" not in failed[0]["msg"]
    assert results[-1] is failed[0], "nothing runs after the refused settings"


# --- spot_instance: the real launch.yml against the AWS emulator ---------------------------

def localcloud(env: dict, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "localcloud", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    state = tmp_path_factory.mktemp("settings-cloud")
    env = {**os.environ, "SPOTBOX_LOCALCLOUD_STATE": str(state),
           "AWS_EC2_METADATA_DISABLED": "true", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_NOCOLOR": "1"}
    try:
        localcloud(env, "moto-start")
        # A new account's G spot quota is 0 vCPUs; this one asked for more.
        localcloud(env, "quota", "set", "L-3819A6DF", "64")
        env = ansible_env(env)
        env["HOME"] = str(state)  # a key pair's .pem would go to $HOME/.ssh
        (state / ".ssh").mkdir(mode=0o700)
        (state / "inventory").mkdir()
        (state / "inventory" / "localhost.yml").write_text(
            (ROOT / "inventory" / "localhost.yml").read_text())
        yield {"env": env, "state": state}
    finally:
        localcloud(env, "cleanup")


def everything(cloud: dict) -> dict:
    """Every EC2 resource of the emulator's region, by kind (ids only)."""
    client = boto3.client("ec2", region_name=cloud["env"].get("AWS_REGION", "us-east-2"),
                          endpoint_url=cloud["env"]["AWS_ENDPOINT_URL"],
                          aws_access_key_id="localcloud", aws_secret_access_key="localcloud")
    return {
        "instances": sorted(i["InstanceId"] for r in client.describe_instances()["Reservations"]
                            for i in r["Instances"] if i["State"]["Name"] != "terminated"),
        "volumes": sorted(v["VolumeId"] for v in client.describe_volumes()["Volumes"]),
        "groups": sorted(g["GroupId"] for g in client.describe_security_groups()["SecurityGroups"]),
        "keys": sorted(k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]),
        "templates": sorted(t["LaunchTemplateId"] for t in
                            client.describe_launch_templates()["LaunchTemplates"]),
        "spot requests": sorted(r["SpotInstanceRequestId"] for r in
                                client.describe_spot_instance_requests()["SpotInstanceRequests"]),
    }


def launch(cloud: dict, *args: str) -> tuple[int, list[dict], str]:
    """launch.yml's exit code, its task results (JSON callback) on localhost and on the box's
    controller-side host aws-settings, its stderr."""
    inventory = cloud["state"] / "inventory"
    argv = [ANSIBLE_PLAYBOOK, "-i", str(inventory), "launch.yml", "--tags", "launch",
            "-e", "spot_instance_name=settings", "-e", "spot_instance_ssh_cidr=127.0.0.1/32",
            "-e", f"spot_instance_inventory_file={inventory / 'settings.aws_ec2.yml'}",
            "-e", "spot_instance_ssh_timeout=5", *args]
    done = subprocess.run(argv, cwd=ROOT, env={**cloud["env"], "ANSIBLE_STDOUT_CALLBACK": "json"},
                          capture_output=True, text=True, check=False)
    try:
        plays = json.loads(done.stdout)["plays"]
    except ValueError:
        pytest.fail(f"not JSON: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    results = [task["hosts"][host] for play in plays for task in play["tasks"]
               for host in ("localhost", "aws-settings") if host in task["hosts"]]
    return done.returncode, results, done.stderr


def failure(results: list[dict]) -> str:
    failed = [r for r in results if r.get("failed") and not r.get("ignore_errors")]
    assert failed, results[-3:]
    return str(failed[-1].get("msg"))


# The table, re-run: each refused row with the start of its one line.
REFUSED = [
    (["-e", "spot_instance_data_volume_size=-5"],
     "spot_instance_data_volume_size must be a whole number of GiB between 1 and 16384 (gp3), "
     "not '-5'"),
    (["-e", "spot_instance_data_volume_size=999999"],
     "spot_instance_data_volume_size must be a whole number of GiB between 1 and 16384 (gp3), "
     "not '999999'"),
    (["-e", '{"spot_instance_data_volume_size": "big"}'],
     "spot_instance_data_volume_size"),
    (["-e", "spot_instance_ami_id=ami-doesnotexist"],
     "spot_instance_ami_id must be empty (the newest image matching "
     "spot_instance_ami_name_pattern) or an AMI id like ami-0123456789abcdef0, not "
     "'ami-doesnotexist'"),
    (["-e", "spot_instance_region=mars-1"],
     "spot_instance_region must be empty (your AWS configuration's) or a region name like "
     "us-east-2, not 'mars-1'"),
    (["-e", "spot_instance_max_price=0"],
     "spot_instance_max_price must be empty (no maximum) or a positive price in USD/hour, like "
     "0.5, not '0'"),
    (["-e", "spot_instance_types=g4dn.xlarge;g5.xlarge"],
     "spot_instance_types must be a list of instance types like g4dn.xlarge"),
    (["-e", "spot_instance_ssh_cidr=1.2.3.4/8"],
     "spot_instance_ssh_cidr must be empty (this controller's public IP) or an IPv4 address or "
     "network like 203.0.113.7/32, not '1.2.3.4/8' (1.2.3.4/8 has host bits set)"),
]


@needs_local_cloud
@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[
    "size=-5", "size=999999", "size-json-text", "ami_id-malformed", "region=mars-1",
    "max_price=0", "types-semicolon", "ssh_cidr-host-bits"])
def test_launch_refuses_with_one_line_and_creates_nothing(cloud, args, message) -> None:
    before = everything(cloud)
    code, results, stderr = launch(cloud, *args)
    assert code == 2, results[-3:]
    line = failure(results)
    assert "Traceback" not in line + stderr
    variable = message.split()[0]
    if line.startswith("Validation of arguments failed:"):
        # Ansible's own argument spec check runs before the role's tasks where a play
        # lists the role under roles: (launch.yml, unless it imports the role with
        # rolespec_validate: false); for a wrong type it answers first, in its words.
        assert f"argument '{variable}' is of type" in line, line
    else:
        assert "\n" not in line and line.startswith(message), line
    assert everything(cloud) == before


@needs_local_cloud
def test_launch_takes_text_values_and_warns_about_a_world_open_ssh_rule(cloud) -> None:
    """The issue's valid rows as -e text pass every check and the whole launch in check
    mode (nothing is created); JSON and text convert alike (test_every_role_takes_...)."""
    before = everything(cloud)
    code, results, _ = launch(cloud, "--check", "-e", "spot_instance_data_volume_size=200",
                              "-e", "spot_instance_types=g4dn.xlarge,g5.xlarge",
                              "-e", "spot_instance_max_price=0.9",
                              "-e", "spot_instance_key_create=yes",
                              "-e", "spot_instance_ssh_cidr=0.0.0.0/0")
    assert code == 0, failure(results)
    out = json.dumps(results)
    assert "anyone may try to SSH in" in out
    assert "chosen: g4dn.xlarge" in out or "chosen: g5.xlarge" in out, out[-3000:]
    assert everything(cloud) == before
