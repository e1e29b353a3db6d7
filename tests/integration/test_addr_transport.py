"""Nodes reach each other whatever form their endpoints take: real transports on loopback, a
node bound by an interface name, an IPv6 address or ``*``, its peer dialling it by an IPv4
address, an IPv6 address or a name with IPv6 and IPv4 addresses (``agent.net.addrfamily``).

With ``zmq.IPV6`` on every socket, as before, a bind on ``lo`` took ::1 and a name resolving
to ::1 first never reached a peer bound on 127.0.0.1: no heartbeat, no task."""

from __future__ import annotations

import socket
import time

import pytest
import zmq

from agent.config.node import Peer
from agent.net.transport import CONTROL, DATA, Transport
from agent.protocol.wire import BROADCAST
from agent.testbed.ports import free_ports
from tests.unit.endpoints import has_ipv6_loopback


def _dual_loopback_name() -> str:
    """A name resolving to ::1 first and to 127.0.0.1 too (Debian's localhost), or ""."""
    for name in ("localhost", "ip6-localhost", "localhost6"):
        try:
            addrs = [a[4][0] for a in socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)]
        except OSError:
            continue
        if addrs and addrs[0] == "::1" and "127.0.0.1" in addrs:
            return name
    return ""


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(),
                                reason="no IPv6 loopback (::1) on this machine")


def _pair(bind_host: str, dial_host: str):
    """Node "a" bound on ``bind_host``, node "b" (on 127.0.0.1) with "a" as its peer at
    ``dial_host``; both open, with the one context they share."""
    pa, pb = free_ports(2), free_ports(2)
    ctx = zmq.Context()
    a = Transport(ctx, "a", "tcp://%s:%d" % (bind_host, pa[0]), "tcp://%s:%d" % (bind_host, pa[1]),
                  [Peer("b", 1, "tcp://127.0.0.1:%d" % pb[0], "tcp://127.0.0.1:%d" % pb[1])])
    b = Transport(ctx, "b", "tcp://127.0.0.1:%d" % pb[0], "tcp://127.0.0.1:%d" % pb[1],
                  [Peer("a", 0, "tcp://%s:%d" % (dial_host, pa[0]),
                        "tcp://%s:%d" % (dial_host, pa[1]))])
    a.open()
    b.open()
    return ctx, a, b, pa


def _both_planes_flow(a: Transport, b: Transport, timeout_s: float = 30.0) -> None:
    """b's task reaches a's data socket and a's heartbeat reaches b's SUB, or fail."""
    got = set()
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and got != {DATA, CONTROL}:
        b.send("a", [b"task"])
        a.publish(BROADCAST, [b"heartbeat"])
        got |= {ev[0] for ev in a.poll(0.05) if ev[0] == DATA}
        got |= {ev[0] for ev in b.poll(0.05) if ev[0] == CONTROL}
    assert got == {DATA, CONTROL}, "only %s flowed in %g s" % (sorted(got), timeout_s)


def _close(ctx, *transports):
    for t in transports:
        t.close()
    ctx.term()


@pytest.mark.skipif("lo" not in {n for _, n in socket.if_nameindex()},
                    reason="no interface named lo here")
def test_an_interface_name_bind_takes_its_ipv4_address_and_says_which(caplog):
    """Rule: a node bound on ``tcp://lo:PORT`` listens on 127.0.0.1 (not ::1), a peer
    dialling 127.0.0.1 reaches both its sockets, and the node logs the address each bind
    took (``Transport.bound``)."""
    with caplog.at_level("INFO", logger="agent.net.transport"):
        ctx, a, b, pa = _pair("lo", "127.0.0.1")
    try:
        assert a.bound == {"control": "tcp://127.0.0.1:%d" % pa[0],
                           "data": "tcp://127.0.0.1:%d" % pa[1]}
        for plane, port in zip(("control", "data"), pa):
            assert ("%s socket tcp://lo:%d bound at tcp://127.0.0.1:%d" % (plane, port, port)
                    in caplog.text)
        _both_planes_flow(a, b)
    finally:
        _close(ctx, a, b)


@pytest.mark.skipif(not _dual_loopback_name(),
                    reason="no name here resolves to ::1 first and to 127.0.0.1 too")
def test_a_peer_named_by_a_name_with_ipv6_and_ipv4_addresses_is_reached_on_ipv4():
    """Rule: a peer address whose name resolves to ::1 first and 127.0.0.1 too reaches a
    node bound on 127.0.0.1 (the socket is IPv4: libzmq with IPv6 on takes the first address
    only and never connected)."""
    ctx, a, b, _ = _pair("127.0.0.1", _dual_loopback_name())
    try:
        _both_planes_flow(a, b)
    finally:
        _close(ctx, a, b)


@needs_ipv6
def test_an_ipv6_address_bind_is_reached_at_that_address():
    """Rule: a node bound on ``tcp://[::1]:PORT`` is reached by a peer dialling [::1]."""
    ctx, a, b, pa = _pair("[::1]", "[::1]")
    try:
        assert a.bound["data"] == "tcp://[::1]:%d" % pa[1]
        _both_planes_flow(a, b)
    finally:
        _close(ctx, a, b)


@needs_ipv6
@pytest.mark.parametrize("dial", ["127.0.0.1", "[::1]"])
def test_a_star_bind_is_reached_over_ipv4_and_ipv6(dial):
    """Rule: a node bound on ``tcp://*:PORT`` listens on both families (dual stack): a peer
    dialling 127.0.0.1 and one dialling [::1] both reach it."""
    ctx, a, b, _ = _pair("*", dial)
    try:
        _both_planes_flow(a, b)
    finally:
        _close(ctx, a, b)
