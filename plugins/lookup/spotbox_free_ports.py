"""Lookup: a free local port on this controller for each box's SSH tunnel."""

from __future__ import annotations

import socket

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: spotbox_free_ports
short_description: A free local port on the controller for each box's SSH tunnel
description:
  - A box keeps its port from an earlier run (O(kept)). Any other box N of O(order), else of
    the terms, asks for O(start) + N (so that the same boxes keep the same ports across runs)
    and gets it if nothing listens there on 127.0.0.1 of this controller, else the next free
    one; no two boxes get the same port.
  - A lookup, not a filter, because it probes the controller (binds sockets).
  - "Returns one mapping per call, C({name: {port, reason}}); the reason says why a box did
    not get the port it asked for, for the access summary."
options:
  _terms:
    description: The boxes' names, in a stable order.
    type: list
    elements: str
    required: true
  start:
    description: The port the first box asks for.
    type: int
    default: 8888
  order:
    description:
      - All the boxes there are, in a stable order; box N of it asks for O(start) + N, so that
        a run for some boxes gives each the port it gets in a run for all. Boxes it does not
        list come after it, in the order of the terms.
    type: list
    elements: str
    default: []
  taken:
    description: Ports no box may get (the tunnels of boxes this run does not reach).
    type: list
    elements: int
    default: []
  kept:
    description:
      - "Each box's port in its ssh config entry from an earlier run, C({name: port}). A box of
        the terms keeps it, free or not (in use, it is most likely the box's own open tunnel),
        unless O(taken) or another box's kept port has it; no other box of the terms is given
        it. Entries of boxes outside the terms are ignored here (give their ports in O(taken))."
    type: dict
    default: {}
  setting:
    description: The setting to name when no port is free (the role's variable).
    type: str
    default: start
"""

EXAMPLES = r"""
- name: Choose the ports
  ansible.builtin.set_fact:
    ports: "{{ lookup('spotbox_free_ports', 'box-a', 'box-b', start=8888) }}"
"""

RETURN = r"""
_raw:
  description: "One mapping, box name to C({port, reason})."
  type: list
  elements: dict
"""

TRIES = 100


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing holds port on host of this controller now (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_local_port(requested: int = 8888, host: str = "127.0.0.1", tries: int = TRIES,
                    exclude: frozenset[int] = frozenset(), setting: str = "start") -> dict:
    """The requested port if nothing listens there on this controller, else the next free one.

    Ports in exclude (given to other boxes' tunnels) count as taken. Returns
    {"port": N, "reason": "..."} so that the summary can say which and why.
    """
    requested = int(requested)
    for port in range(requested, min(requested + tries, 65536)):
        if port in exclude or not bindable(port, host):
            continue
        if port == requested:
            return {"port": port, "reason": f"{port} is free on this machine"}
        why = "another box's tunnel has it" if requested in exclude else "a local Jupyter?"
        return {"port": port, "reason": f"{requested} is taken on this machine ({why}), "
                f"so the tunnel uses {port}"}
    raise AnsibleLookupError(f"no free local port in {requested}-{requested + tries - 1}; "
                             f"set {setting} to another start")


def kept_local_port(port: int, host: str = "127.0.0.1") -> dict:
    """A box's port from its ssh config entry, kept whether or not something listens there:
    the reason says which (in use, it is most likely the box's own open tunnel)."""
    if not bindable(port, host):
        return {"port": port, "reason": f"{port} is kept from the box's ssh config entry; it "
                "is in use on this machine (your open tunnel to the box? If something else "
                "holds it, remove the box's entry from the ssh config file and run again)"}
    return {"port": port, "reason": f"{port} is kept from the box's ssh config entry "
            "(free on this machine)"}


def free_local_ports(names: list[str], start: int = 8888, setting: str = "start",
                     order: list[str] | None = None, taken: list[int] | None = None,
                     kept: dict | None = None) -> dict:
    """A local port for each box's tunnel, all different: {name: {"port", "reason"}}.

    A box keeps its port from an earlier run (kept: its ssh config entry's), so that an
    open tunnel, or a box added or ended, moves no box's port. Any other box N asks for
    start + N and gets it when free; N is the box's place in order (all the boxes there
    are, so that a run for some of them gives each the port it has in a run for all),
    then in names for boxes order does not list. Ports in taken (other boxes' tunnels,
    kept from earlier runs) are not given.
    """
    names = [str(name) for name in names]
    order = [str(name) for name in order or []]
    others = [name for name in names if name not in order]
    taken_ports = frozenset(int(port) for port in taken or [])
    chosen: dict[str, dict] = {}
    for name, port in (kept or {}).items():
        if str(name) in names and int(port) not in taken_ports | {
                choice["port"] for choice in chosen.values()}:
            chosen[str(name)] = kept_local_port(int(port))
    for name in names:
        if name in chosen:
            continue
        place = order.index(name) if name in order else len(order) + others.index(name)
        given = taken_ports | {choice["port"] for choice in chosen.values()}
        chosen[name] = free_local_port(int(start) + place, exclude=given, setting=setting)
    return {name: chosen[name] for name in names}


class LookupModule(LookupBase):
    """lookup('spotbox_free_ports', *names, start=8888)."""

    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        names = []
        for term in terms:  # query('x', list) passes the list as one term
            names.extend(term if isinstance(term, list) else [term])
        return [free_local_ports(names, self.get_option("start"), self.get_option("setting"),
                                 self.get_option("order"), self.get_option("taken"),
                                 self.get_option("kept"))]
