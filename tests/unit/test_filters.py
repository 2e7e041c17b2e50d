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
