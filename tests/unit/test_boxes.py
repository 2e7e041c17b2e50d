"""Several boxes from one inventory: the spotbox_boxes filter (which boxes a run
launches or terminates, each with its settings) and the access table."""

import pytest
from ansible.errors import AnsibleFilterError
from spotbox import access_table, boxes, ssh_config_other_entries


def test_one_box_when_no_list_is_given() -> None:
    assert boxes([], [], "course") == [{"name": "course", "settings": {}}]


def test_identical_boxes_by_name_keep_their_order() -> None:
    names = ["eve", "ana", "ben"]
    assert [box["name"] for box in boxes([], names, "course")] == names


def test_a_box_of_the_list_has_its_own_settings_with_or_without_the_prefix() -> None:
    listed = [{"name": "small"},
              {"name": "big", "types": ["g5.xlarge"], "spot_instance_data_volume_size": 200}]
    assert boxes(listed) == [
        {"name": "small", "settings": {}},
        {"name": "big", "settings": {"spot_instance_types": ["g5.xlarge"],
                                     "spot_instance_data_volume_size": 200}}]


def test_spotbox_box_keeps_one_box_of_the_list() -> None:
    assert boxes([], ["ana", "ben"], only="ben") == [{"name": "ben", "settings": {}}]


@pytest.mark.parametrize(("listed", "names", "only", "message"), [
    ([{"name": "a"}], ["b"], "", "spot_instance_boxes and spot_instance_names are both set"),
    ([{"name": "a", "typez": ["x"]}], [], "",
     r"spot_instance_boxes\[0\] \(a\): 'typez' is not a setting"),
    ([{"name": "a", "name_pattern": "x"}], [], "", "'name_pattern' is not a setting"),
    ([{"name": "a", "boxes": []}], [], "", "'boxes' is not a setting a box may have"),
    ([{"types": ["g5.xlarge"]}], [], "", r"spot_instance_boxes\[0\] must be a mapping with a name"),
    (["ana"], [], "", r"spot_instance_boxes\[0\] must be a mapping with a name"),
    ([], ["ana", "Ben"], "", r"spot_instance_names\[1\] must be 1-31 lower-case letters"),
    ([], ["ana", "ana"], "", r"spot_instance_names\[1\]: the box 'ana' is named twice"),
    ([], ["ana", "ben"], "eve", "spotbox_box 'eve' is not one of this run's boxes"),
])
def test_bad_boxes_are_refused_naming_the_setting(listed, names, only, message) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        boxes(listed, names, "course", only)


def test_the_name_rule_is_the_roles_own() -> None:
    with pytest.raises(AnsibleFilterError, match=r"^spot_instance_name must be 1-31"):
        boxes([], [], "no_underscores")


HOSTS = {
    "spotbox-ana": {"ansible_host": "203.0.113.7", "ansible_user": "ubuntu",
                    "ansible_ssh_private_key_file": "/k/ana.pem",
                    "access_jupyter": {"port": 8888, "token": "tokA"}},
    "spotbox-ben": {"ansible_host": "203.0.113.8", "ansible_user": "ubuntu",
                    "ansible_ssh_private_key_file": "/k/ben.pem",
                    "access_jupyter": {"port": 8888, "token": "tokB"},
                    "spotbox_last_interruption": "interrupted at 12:00 (terminate)"},
}


def test_the_access_table_has_a_row_per_box_with_its_port_tunnel_and_url() -> None:
    ports = {"spotbox-ana": {"port": 8888, "reason": ""},
             "spotbox-ben": {"port": 8889, "reason": ""}}
    lines = access_table(HOSTS, ports, "/root/.ssh/spotbox_config").splitlines()
    assert lines[0].split()[:3] == ["box", "address", "port"]
    assert lines[1].split()[:4] == ["spotbox-ana", "203.0.113.7", "8888", "ssh"]
    assert lines[1].endswith("ssh -i /k/ana.pem -N -L 8888:127.0.0.1:8888 ubuntu@203.0.113.7")
    assert lines[2].strip() == "http://127.0.0.1:8888/lab?token=tokA"
    assert lines[3].split()[:3] == ["spotbox-ben", "203.0.113.8", "8889"]
    assert lines[4].strip() == "http://127.0.0.1:8889/lab?token=tokB"
    assert lines[5].strip() == "last time: interrupted at 12:00 (terminate)"
    assert lines[6] == "or ssh -N NAME, with 'Include /root/.ssh/spotbox_config' in ~/.ssh/config"


CONFIG = """# Managed by spotbox. In ~/.ssh/config: Include /root/.ssh/spotbox_config
Host spotbox-ana
  HostName 203.0.113.7
  LocalForward 8888 127.0.0.1:8888
Host spotbox-ben
  HostName 203.0.113.8
  LocalForward 8889 127.0.0.1:8888
"""


def test_a_run_for_some_boxes_keeps_the_other_boxes_entries() -> None:
    assert ssh_config_other_entries(CONFIG, ["spotbox-ana"]) == (
        "Host spotbox-ben\n  HostName 203.0.113.8\n  LocalForward 8889 127.0.0.1:8888\n")
    assert ssh_config_other_entries(CONFIG, ["spotbox-ana", "spotbox-ben"]) == ""
    assert ssh_config_other_entries("", ["spotbox-ana"]) == ""


def test_the_kept_entries_ports_are_known() -> None:
    from spotbox import ssh_config_other_ports, ssh_config_ports

    assert ssh_config_other_ports(CONFIG, ["spotbox-ana"]) == [8889]
    assert ssh_config_other_ports(CONFIG, []) == [8888, 8889]
    assert ssh_config_ports(CONFIG) == {"spotbox-ana": 8888, "spotbox-ben": 8889}
    # An entry with a key and a port of its own (an SSH host), and one without a tunnel.
    own = ("Host gpu\n  HostName 10.0.0.5\n  User me\n  Port 2222\n  IdentityFile ~/k\n"
           "  IdentitiesOnly yes\n  LocalForward 8890 127.0.0.1:8888\nHost bare\n  HostName x\n")
    assert ssh_config_ports(own) == {"gpu": 8890}
    assert ssh_config_ports("") == {}


def test_the_table_says_why_a_box_did_not_get_its_port() -> None:
    ports = {"spotbox-ana": {"port": 8890, "reason": "8888 is taken on this machine (another "
                             "box's tunnel has it), so the tunnel uses 8890"},
             "spotbox-ben": {"port": 8889, "reason": "8889 is free on this machine"}}
    table = access_table(HOSTS, ports, "/c")
    assert "8888 is taken on this machine" in table and "8889 is free" not in table
    kept = "8889 is kept from the box's ssh config entry"
    ports["spotbox-ben"]["reason"] = f"{kept} (free on this machine)"
    assert kept not in access_table(HOSTS, ports, "/c")
    ports["spotbox-ben"]["reason"] = f"{kept}; it is in use on this machine"
    assert f"{kept}; it is in use" in access_table(HOSTS, ports, "/c")
