"""``agent.net.addrfamily``: which endpoints get an IPv6 socket, and what a name's resolution
tells about a peer that cannot be reached.

Resolution is handed in as a function of the host name where a test needs a name with given
addresses (one with IPv6 and IPv4 addresses, one with IPv6 only): no machine is sure to have
such names. Interface names and ``.invalid`` names are this machine's own."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from agent.net import addrfamily
from agent.net.addrfamily import (IPV4, IPV6, choose, endpoint_host, interface_families,
                                  resolution_problem, resolve_all, wants_ipv6)


def _names(table):
    """A resolver over ``{name: families}`` (a name not in it does not resolve)."""
    return lambda host: frozenset(table.get(host, ()))


NAMES = _names({"dual.lab": (IPV6, IPV4), "six.lab": (IPV6,), "four.lab": (IPV4,)})


@pytest.mark.parametrize("endpoint,bind,ipv6", [
    ("tcp://[fd00::2]:5552", False, True),      # an IPv6 address, bracketed
    ("tcp://[fe80::1%eth0]:5552", False, True),  # ... with a zone id
    ("tcp://::1:5552", False, True),             # bare, as libzmq also reads it
    ("tcp://[::]:5551", True, True),
    ("tcp://*:5551", True, True),                # a wildcard bind: dual stack
    ("tcp://10.0.0.2:5552", False, False),
    ("tcp://0.0.0.0:5551", True, False),
    ("tcp://dual.lab:5552", False, False),       # AAAA and A records: IPv4
    ("tcp://dual.lab:5551", True, False),
    ("tcp://six.lab:5552", False, True),         # IPv6 addresses only
    ("tcp://four.lab:5552", False, False),
    ("tcp://nowhere.lab:5552", False, False),    # does not resolve (yet): IPv4
    ("ipc:///run/edge-agent/n/client.sock", True, False),
    ("inproc://x", False, False),
])
def test_ipv6_only_for_ipv6_addresses_star_binds_and_names_without_an_ipv4_address(
        endpoint, bind, ipv6):
    """Rule: IPV6 is on for an IPv6 address, a ``*`` bind and a name whose addresses are all
    IPv6; off for IPv4 addresses, names with an IPv4 address (libzmq would take the first
    address, often the IPv6 one, and miss a peer bound on IPv4), names that do not resolve
    and non-tcp endpoints."""
    assert wants_ipv6(endpoint, bind, resolve=NAMES) is ipv6


def test_the_host_of_an_endpoint_is_found_without_brackets_port_or_source_part():
    """Rule: the host is what lies between ``tcp://`` (or a connect's ``SRC;``) and the last
    ``:``, brackets removed; other schemes have none."""
    assert endpoint_host("tcp://[fd00::2]:5552") == "fd00::2"
    assert endpoint_host("tcp://jetson-2.lab:5552") == "jetson-2.lab"
    assert endpoint_host("tcp://eth0;10.0.0.2:5552") == "10.0.0.2"
    assert endpoint_host("tcp://*:5551") == "*"
    assert endpoint_host("ipc:///tmp/x.sock") is None


@pytest.mark.skipif("lo" not in {n for _, n in socket.if_nameindex()},
                    reason="no interface named lo here")
def test_a_bind_on_an_interface_with_an_ipv4_address_stays_ipv4():
    """Rule: in a bind, an interface name counts by the interface's own addresses (libzmq
    takes an interface before a host name there): ``lo`` holds 127.0.0.1, so its socket is
    IPv4 and binds that address, not ::1."""
    fams = interface_families("lo")
    assert fams is not None and IPV4 in fams
    assert wants_ipv6("tcp://lo:5551", bind=True) is False
    assert interface_families("no-such-if0") is None


def test_names_resolve_together_and_a_slow_resolver_costs_the_wait_only():
    """Rule: every name of a node resolves at once, each on its own thread, for ``wait_s`` in
    all; a name whose resolver hangs counts as not resolved (IPv4) and holds nothing up."""
    release = threading.Event()

    def slow(host):
        if host == "slow.lab":
            release.wait(60)
        return NAMES(host)
    t0 = time.monotonic()
    try:
        got = resolve_all(["slow.lab", "six.lab", "dual.lab"], 0.3, slow)
        took = time.monotonic() - t0
        chosen = choose([("tcp://slow.lab:1", False), ("tcp://six.lab:1", False)], 0.3, slow)
    finally:
        release.set()
    assert got == {"slow.lab": None, "six.lab": frozenset([IPV6]),
                   "dual.lab": frozenset([IPV6, IPV4])}
    assert took < 10, took  # the wait, not the resolver's minute
    assert chosen == {("tcp://slow.lab:1", False): False, ("tcp://six.lab:1", False): True}


def test_a_name_that_does_not_resolve_is_named():
    """Rule: a host name with no address here is "the host X does not resolve" (``.invalid``
    never resolves); addresses and ``*`` have no resolution problem."""
    assert (resolution_problem("tcp://no-such-peer.invalid:5552", None)  # as long as DNS takes
            == "the host no-such-peer.invalid does not resolve")
    for ep in ("tcp://10.0.0.2:5552", "tcp://[fd00::2]:5552", "tcp://*:5551", "ipc:///x"):
        assert resolution_problem(ep) == ""


def test_a_name_now_ipv6_only_whose_socket_was_made_ipv4_is_named(monkeypatch):
    """Rule: a socket made for IPv4 (its name had an IPv4 address, or none, then) cannot
    reach a name that now resolves to IPv6 addresses only: said, with the remedy; the same
    name behind an IPv6 socket, or now with an IPv4 address, is no problem."""
    monkeypatch.setattr(addrfamily, "_chosen", {})
    ep = "tcp://moved.lab:5552"
    choose([(ep, False)], resolve=_names({}))  # did not resolve when the socket was made
    text = resolution_problem(ep, resolve=_names({"moved.lab": (IPV6,)}))
    assert "moved.lab resolves only to IPv6 addresses" in text and "made again" in text
    assert resolution_problem(ep, resolve=_names({"moved.lab": (IPV6, IPV4)})) == ""
    choose([(ep, False)], resolve=_names({"moved.lab": (IPV6,)}))
    assert resolution_problem(ep, resolve=_names({"moved.lab": (IPV6,)})) == ""


def test_a_resolution_slower_than_the_wait_is_said_so():
    """Rule: a name whose resolution takes longer than the wait is named with the wait."""
    release = threading.Event()
    try:
        text = resolution_problem("tcp://slow.lab:1", 0.2, lambda h: release.wait(60) and
                                  frozenset())
    finally:
        release.set()
    assert text == "resolving the host slow.lab takes longer than 0.2 s"
