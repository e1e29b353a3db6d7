"""A peer's host name never reaches libzmq (``agent.net.peeraddr``): libzmq resolves a name on
its I/O thread, at each connect and reconnect, so a name slow to fail stalled every socket of
the node, heartbeats included. Real transports on 127.0.0.1; the resolver is passed in."""

from __future__ import annotations

import threading
import time

import zmq

from agent.config.node import Peer
from agent.net.addrfamily import IPV4, endpoint_host, literal_family
from agent.net.peeraddr import getaddrinfo_addresses, with_host
from agent.net.redial import Redial
from agent.net.transport import CONTROL, DATA, Transport
from agent.protocol.wire import BROADCAST
from agent.testbed.ports import free_ports
from tests.unit.test_redial import _Sock

NOWHERE = "nowhere.invalid"


class _Lookup:
    """Resolves ``localhost`` to 127.0.0.1 and ``NOWHERE`` to nothing, until ``later`` is
    set: from then on a lookup of ``NOWHERE`` waits for ``gate`` (a slow resolver) and gives
    127.0.0.1."""

    def __init__(self):
        self.later = False
        self.gate = threading.Event()
        self.asked = []

    def __call__(self, host):
        self.asked.append(host)
        if host == "localhost":
            return ((IPV4, "127.0.0.1"),)
        if host == NOWHERE:
            if not self.later:
                return ()
            self.gate.wait(60)
            return ((IPV4, "127.0.0.1"),)
        return getaddrinfo_addresses(host)


def _flows(receiver, sender, peer, timeout_s=30.0, publisher=None):
    """``sender``'s data message reaches ``receiver`` and ``publisher``'s (default:
    ``receiver``'s) heartbeat reaches ``sender``'s SUB for ``peer``, or fail."""
    publisher = publisher or receiver
    got = set()
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and got != {DATA, CONTROL}:
        sender.send(peer, [b"task"])
        publisher.publish(BROADCAST, [b"heartbeat"])
        got |= {ev[0] for ev in receiver.poll(0.02) if ev[0] == DATA}
        got |= {ev[0] for ev in sender.poll(0.02) if ev[0] == CONTROL and ev[1] == peer}
    assert got == {DATA, CONTROL}, "only %s flowed in %g s" % (sorted(got), timeout_s)


def _numeric(endpoint):
    host = endpoint_host(endpoint)
    return host is not None and literal_family(host) is not None


def test_names_are_dialled_as_addresses_and_one_that_does_not_resolve_waits():
    """Rule: every socket a node connects is handed a numeric endpoint, never the name; a
    peer whose name does not resolve gets sockets that stay unconnected while the others
    carry data and heartbeats (a resolver that hangs included: it runs off the loop's
    thread); once the name resolves, its sockets connect and the peer is heard. Logs and
    ``peers`` keep the configured names."""
    pa, pb, pc = free_ports(2), free_ports(2), free_ports(2)
    ep = lambda host, ports, i: "tcp://%s:%d" % (host, ports[i])  # noqa: E731
    lookup = _Lookup()
    ctx = zmq.Context()
    a = Transport(ctx, "a", ep("127.0.0.1", pa, 0), ep("127.0.0.1", pa, 1),
                  [Peer("b", 1, ep("localhost", pb, 0), ep("localhost", pb, 1)),
                   Peer("c", 2, ep(NOWHERE, pc, 0), ep(NOWHERE, pc, 1))], lookup=lookup)
    b = Transport(ctx, "b", ep("127.0.0.1", pb, 0), ep("127.0.0.1", pb, 1),
                  [Peer("a", 0, ep("127.0.0.1", pa, 0), ep("127.0.0.1", pa, 1))])
    c = Transport(ctx, "c", ep("127.0.0.1", pc, 0), ep("127.0.0.1", pc, 1), [])
    a.addrs.retry_s = 0.05  # the retry's period, not a wait the test depends on
    try:
        for t in (a, b, c):
            t.open()
        assert a.addrs.dialled == {("b", "control"): ep("127.0.0.1", pb, 0),
                                   ("b", "data"): ep("127.0.0.1", pb, 1)}
        assert set(a.addrs.waiting) == {("c", "control"), ("c", "data")}
        assert a.peers["b"].data_address == ep("localhost", pb, 1)  # configured names kept
        assert "c" in a.dealers and "c" in a.subs  # made, not connected
        for sock in (a.subs["b"], a.dealers["b"], b.subs["a"], b.dealers["a"]):
            assert _numeric(sock.getsockopt(zmq.LAST_ENDPOINT).decode())  # what libzmq got
        for sock in (a.subs["c"], a.dealers["c"]):
            assert sock.getsockopt(zmq.LAST_ENDPOINT) == b""  # never connected
        lookup.later = True  # the next lookup of NOWHERE hangs until the gate opens
        end = time.monotonic() + 30
        while lookup.asked.count(NOWHERE) < 2 and time.monotonic() < end:
            a.poll(0.02)  # the retry starts its resolver thread from here
        assert lookup.asked.count(NOWHERE) >= 2, "no retry resolved the name again"
        _flows(a, b, "a")  # while it hangs: b -> a data, a's heartbeat to b
        _flows(b, a, "b")  # a -> b data (to a peer named by a name), b's heartbeat to a
        assert set(a.addrs.waiting) == {("c", "control"), ("c", "data")}
        lookup.gate.set()  # NOWHERE resolves now
        _flows(c, a, "c")  # a's sockets to c connect: a -> c data, c's heartbeat to a
        assert not a.addrs.waiting
        assert a.addrs.dialled[("c", "data")] == ep("127.0.0.1", pc, 1)
        assert a.addrs.dialled[("c", "control")] == ep("127.0.0.1", pc, 0)
    finally:
        lookup.gate.set()
        for t in (a, b, c):
            t.close()
        ctx.term()


def test_a_redial_dials_the_numeric_endpoint_and_names_the_configured_one(caplog):
    """Rule: a connection refused at the handshake is dialled again at the numeric endpoint
    its socket was connected to (libzmq never gets the name), while the warning names the
    configured endpoint."""
    now = [0.0]
    r = Redial(clock=lambda: now[0])
    sock = _Sock()
    with caplog.at_level("WARNING", logger="agent.net.transport"):
        r.event(sock, "b", "data", "tcp://b.example:1", int(zmq.EVENT_HANDSHAKE_FAILED_AUTH),
                0, "tcp://10.0.0.2:1")
        now[0] += 60
        r.run()
    assert sock.calls == [("disconnect", "tcp://10.0.0.2:1"), ("connect", "tcp://10.0.0.2:1")]
    assert "tcp://b.example:1" in caplog.text and "10.0.0.2" not in caplog.text


def test_the_host_is_replaced_by_the_address_and_nothing_else():
    """Rule: only the host part of a tcp:// endpoint changes: an IPv6 address is bracketed,
    the port and a connect's source part are kept."""
    assert with_host("tcp://b.example:5551", "10.0.0.2") == "tcp://10.0.0.2:5551"
    assert with_host("tcp://b.example:5551", "fd00::2") == "tcp://[fd00::2]:5551"
    assert (with_host("tcp://10.0.0.1:0;b.example:5551", "10.0.0.2")
            == "tcp://10.0.0.1:0;10.0.0.2:5551")


def dialling_by_name(ctx, host, lookup):
    """Transports a and b on 127.0.0.1, a dialling b by the name ``host`` through ``lookup``
    and re-resolving it every 0.05 s (the refresh's period, not a wait a test depends on):
    (a, b, ep(host, ports, i) -> endpoint, b's ports)."""
    pa, pb = free_ports(2), free_ports(2)
    ep = lambda h, ports, i: "tcp://%s:%d" % (h, ports[i])  # noqa: E731
    a = Transport(ctx, "a", ep("127.0.0.1", pa, 0), ep("127.0.0.1", pa, 1),
                  [Peer("b", 1, ep(host, pb, 0), ep(host, pb, 1))], lookup=lookup)
    b = Transport(ctx, "b", ep("127.0.0.1", pb, 0), ep("127.0.0.1", pb, 1),
                  [Peer("a", 0, ep("127.0.0.1", pa, 0), ep("127.0.0.1", pa, 1))])
    a.addrs.refresh_s = 0.05
    return a, b, ep, pb


def test_a_name_whose_address_moves_is_dialled_at_its_new_address():
    """Rule: the names a node dialled are resolved again now and then (off the loop's
    thread): a peer whose name now gives another address (a device back with a new lease) is
    disconnected from the old address and connected to the new one, and its data and
    heartbeats flow; a round in which the name resolves to nothing (DNS down) keeps the
    address it has."""
    where = {"mover": ((IPV4, "127.0.0.2"),)}  # nothing listens there: b binds 127.0.0.1
    ctx = zmq.Context()
    a, b, ep, pb = dialling_by_name(ctx, "mover", lambda host: where.get(host, ()))
    try:
        a.open()
        b.open()
        assert a.addrs.dialled[("b", "data")] == ep("127.0.0.2", pb, 1)
        where["mover"] = ((IPV4, "127.0.0.1"),)
        end = time.monotonic() + 30.0
        while a.addrs.dialled[("b", "data")] != ep("127.0.0.1", pb, 1) and \
                time.monotonic() < end:
            a.poll(0.02)
        assert a.addrs.dialled == {("b", "data"): ep("127.0.0.1", pb, 1),
                                   ("b", "control"): ep("127.0.0.1", pb, 0)}
        assert a.addrs.moved == 2
        _flows(b, a, "b")
        where.pop("mover")  # DNS down: a round finds nothing
        rounds = a.addrs.lookup
        asked = []
        a.addrs.lookup = lambda host: asked.append(host) or rounds(host)
        end = time.monotonic() + 30.0
        while len(asked) < 2 and time.monotonic() < end:
            a.poll(0.02)
        a.poll(0.1)
        assert asked and a.addrs.dialled[("b", "data")] == ep("127.0.0.1", pb, 1)
        assert a.addrs.moved == 2
        _flows(b, a, "b")
    finally:
        a.close()
        b.close()
        ctx.term()
