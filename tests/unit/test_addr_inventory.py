"""Inventory hosts with an IPv6 zone id (``fe80::1%eth0``) on every Python the agent supports:
the address is parsed without its zone (Python 3.8's ``ipaddress`` refuses any zone id, 3.9+
takes any), and the zone is checked as an interface name."""

from __future__ import annotations

import pytest

from agent.fleet.inventory import host_problem, split_zone


@pytest.mark.parametrize("host,parts", [
    ("fe80::1%eth0", ("fe80::1", "eth0")),
    ("fe80::1%", ("fe80::1", "")),
    ("fd00::2", ("fd00::2", None)),
    ("10.0.0.2", ("10.0.0.2", None)),
    ("jetson-2.lab", ("jetson-2.lab", None)),
])
def test_the_zone_id_is_split_off_before_the_address_is_parsed(host, parts):
    """Rule: ``ADDRESS%ZONE`` splits at the first ``%``; no ``%``, no zone (None)."""
    assert split_zone(host) == parts


@pytest.mark.parametrize("host", ["fe80::1%eth0", "fe80::1%3", "fe80::1%wlan0.100"])
def test_a_link_local_address_with_an_interface_zone_is_a_host(host):
    """Rule: an IPv6 address with an interface-name zone id is accepted (on Python 3.8 too,
    where ``ipaddress`` alone refuses it)."""
    assert host_problem(host) == ""


@pytest.mark.parametrize("host,words", [
    ("fe80::1%", "has the zone id ''"),
    ("fe80::1%a b", "has the zone id 'a b'"),
    ("10.0.0.2%eth0", "is neither an IP address nor a host name"),
])
def test_an_empty_or_odd_zone_or_a_zone_on_ipv4_is_refused(host, words):
    """Rule: an empty zone id, one that is no interface name, and any zone on an IPv4
    address are host problems."""
    assert words in host_problem(host)
