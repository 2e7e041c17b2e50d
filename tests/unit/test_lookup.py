"""spotbox's lookup plugins (plugins/lookup): they probe the controller."""

import socket
from pathlib import Path

import pytest
from ansible.errors import AnsibleLookupError
from ansible.plugins.loader import lookup_loader
from spotbox_free_ports import free_local_port, free_local_ports

LOOKUPS = Path(__file__).resolve().parents[2] / "plugins" / "lookup"


def holding_a_port():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def test_free_local_port_skips_a_taken_port() -> None:
    with holding_a_port() as holder:
        taken = holder.getsockname()[1]
        result = free_local_port(taken)
        assert result["port"] > taken
        assert f"{taken} is taken on this machine" in result["reason"]
    assert free_local_port(taken)["port"] == taken


def test_free_local_ports_never_give_two_boxes_the_same_port() -> None:
    with holding_a_port() as holder:
        taken = holder.getsockname()[1]
        # Box a is pushed to taken + 1, which box b asked for: b moves on.
        result = free_local_ports(["a", "b", "c"], taken)
    ports = [result[name]["port"] for name in "abc"]
    assert len(set(ports)) == 3
    assert ports[0] > taken and ports[1] > ports[0] and ports[2] > ports[1]
    assert "a local Jupyter?" in result["a"]["reason"]
    if ports[0] == taken + 1:
        assert "another box's tunnel has it" in result["b"]["reason"]
    assert free_local_ports([], taken) == {}


def test_no_free_port_names_the_setting() -> None:
    with holding_a_port() as holder:
        taken = holder.getsockname()[1]
        with pytest.raises(AnsibleLookupError, match=f"no free local port in {taken}-{taken}; "
                                                     "set access_local_port to another start"):
            free_local_port(taken, tries=1, setting="access_local_port")


def test_the_lookup_gives_the_same_ports_to_the_same_boxes() -> None:
    with holding_a_port() as holder:
        start = holder.getsockname()[1] + 1  # a port likely free, next to one surely taken
    lookup_loader.add_directory(str(LOOKUPS))
    lookup = lookup_loader.get("spotbox_free_ports")  # as Ansible loads it (its options)
    # lookup('spotbox_free_ports', 'a', 'b', start=N) and query(..., ['a', 'b']) alike.
    first = lookup.run(["a", "b"], variables={}, start=start)
    again = lookup.run([["a", "b"]], variables={}, start=start)
    assert len(first) == 1 and first == again
    assert set(first[0]) == {"a", "b"}
    assert first[0]["a"]["port"] >= start and first[0]["b"]["port"] > first[0]["a"]["port"]


def free_stretch(length: int) -> int:
    """The first of length ports in a row that nothing listens on now."""
    for start in range(20000, 30000, length):
        if all(free_local_port(port)["port"] == port for port in range(start, start + length)):
            return start
    raise AssertionError("no free stretch of ports")


def test_a_box_gets_its_place_among_all_boxes_whatever_the_run_holds() -> None:
    everyone = ["spotbox-ana", "spotbox-ben", "spotbox-eve"]
    start = free_stretch(4)  # so that each box gets the port it asks for
    alone = free_local_ports(["spotbox-eve"], start, order=everyone)
    together = free_local_ports(everyone, start, order=everyone)
    assert alone["spotbox-eve"]["port"] == together["spotbox-eve"]["port"] == start + 2
    assert [together[name]["port"] for name in everyone] == [start, start + 1, start + 2]
    # A host the order does not know (an SSH host of your own) comes after the boxes.
    mixed = free_local_ports(["gpu", "spotbox-ben"], start, order=everyone)
    assert mixed["gpu"]["port"] == start + 3


def test_the_ports_of_kept_tunnels_are_not_given() -> None:
    start = free_stretch(3)
    chosen = free_local_ports(["spotbox-abe"], start, order=["spotbox-abe", "spotbox-ana"],
                              taken=[start])
    assert chosen["spotbox-abe"]["port"] == start + 1
    assert "another box's tunnel has it" in chosen["spotbox-abe"]["reason"]


def test_a_box_keeps_its_port_from_its_entry_even_while_its_tunnel_holds_it() -> None:
    everyone = ["spotbox-ana", "spotbox-ben", "spotbox-cal"]
    start = free_stretch(4)
    with holding_a_port() as tunnel:  # ana's open tunnel, on a port outside the stretch
        open_port = tunnel.getsockname()[1]
        chosen = free_local_ports(everyone, start, order=everyone,
                                  kept={"spotbox-ana": open_port, "spotbox-cal": start})
    assert chosen["spotbox-ana"]["port"] == open_port
    assert "in use on this machine (your open tunnel to the box?" in chosen["spotbox-ana"]["reason"]
    # cal keeps start, the first box's place (ana, with a port of her own, leaves it).
    assert chosen["spotbox-cal"] == {"port": start, "reason": f"{start} is kept from the "
                                     "box's ssh config entry (free on this machine)"}
    assert chosen["spotbox-ben"]["port"] == start + 1
    assert list(chosen) == everyone  # in the run's order, for the table


def test_a_new_box_is_not_given_a_kept_port_and_a_taken_kept_port_is_chosen_again() -> None:
    start = free_stretch(3)
    # A new box asks for the port that ben kept: it moves on.
    chosen = free_local_ports(["spotbox-abe", "spotbox-ben"], start,
                              order=["spotbox-abe", "spotbox-ben"], kept={"spotbox-ben": start})
    assert chosen["spotbox-ben"]["port"] == start
    assert chosen["spotbox-abe"]["port"] == start + 1
    # A kept port that another box's tunnel holds (taken) is not kept: chosen again.
    moved = free_local_ports(["spotbox-ben"], start, order=["spotbox-ben"], taken=[start],
                             kept={"spotbox-ben": start})
    assert moved["spotbox-ben"]["port"] == start + 1
    # A box outside the run keeps nothing here (the caller gives its port as taken): ben
    # gets the port that zed's entry names, which is ben's own place.
    assert free_local_ports(["spotbox-ben"], start + 2, kept={"spotbox-zed": start + 2})[
        "spotbox-ben"]["port"] == start + 2
