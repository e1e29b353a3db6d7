"""The bind endpoints a node holds before its engines load (``agent.net.bindprobe``,
``agent.ops.bindfault.hold_binds``), against real sockets and real libzmq binds: a bind the
probe refuses is one libzmq refuses, with the same one-line fault; one libzmq takes (a restart
over TIME_WAIT connections included) the probe takes too."""

from __future__ import annotations

import errno
import os
import socket
import time
from types import SimpleNamespace

import pytest
import zmq

from agent.errors import UsageError
from agent.net import addrfamily as af
from agent.net.bindprobe import BindHold, bind_address, endpoint_port, interface_address
from agent.ops.bindfault import bind_fault, hold_binds, node_binds
from agent.ops.doctor_binds import check_tcp_binds
from agent.ops.doctor_check import FAIL
from agent.testbed.ports import free_ports
from tests.unit.processes import tcp_sockets_on

WAIT_S = 30.0  # a listener libzmq closes on its I/O thread is gone within this


def _cfg(control: str, data: str, client: str = "", arrival: str = "poisson"):
    return SimpleNamespace(control_bind=control, data_bind=data, client_bind=client,
                           arrival=arrival)


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _zmq_bind(endpoint: str):
    """What libzmq's own bind of ``endpoint`` does, as the transport makes the socket: None
    where it binds, else its ``ZMQError``."""
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    try:
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IPV6, int(af.wants_ipv6(endpoint, bind=True)))
        s.bind(endpoint)
        return None
    except zmq.ZMQError as exc:
        return exc
    finally:
        s.close()
        ctx.term()


def _probe_line(cfg):
    try:
        hold_binds(cfg).close()
        return None
    except UsageError as exc:
        return str(exc)


def _listen(family: int, host: str, port: int = 0, reuse: bool = False) -> socket.socket:
    """A listener on ``host``:``port``; port 0: one the kernel picks (``_port``), so no other
    test can take it between the choice and the bind, as one did to a ``free_ports`` port."""
    s = socket.socket(family, socket.SOCK_STREAM)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and host == "::":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((host, port))
    s.listen(1)
    return s


def _port(s: socket.socket) -> int:
    return s.getsockname()[1]


def _wait_free(endpoint: str) -> None:
    """Until libzmq binds ``endpoint`` again (its listener is closed on its I/O thread)."""
    deadline = time.monotonic() + WAIT_S
    while _zmq_bind(endpoint) is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_port_a_plain_socket_listens_on_fails_with_the_line_libzmq_bind_gives():
    """Rule: a control or data port another process listens on is refused by the probe with
    exactly ``bind_fault``'s line for libzmq's own EADDRINUSE, naming that plane; the planes
    before it were held and are let go."""
    c, d = free_ports(2)
    for plane in ("control", "data"):
        with _listen(socket.AF_INET, "127.0.0.1") as taker:
            port = _port(taker)
            cfg = _cfg("tcp://127.0.0.1:%d" % (port if plane == "control" else c),
                       "tcp://127.0.0.1:%d" % (port if plane == "data" else d))
            exc = _zmq_bind("tcp://127.0.0.1:%d" % port)
            assert exc is not None and exc.errno == errno.EADDRINUSE
            line = _probe_line(cfg)
        want = bind_fault(cfg, {"control": cfg.control_bind} if plane == "data" else {}, exc)
        assert line == want, (line, want, tcp_sockets_on(c), tcp_sockets_on(port))
        assert line.startswith("%s_bind: cannot bind tcp://127.0.0.1:%d: Address already in "
                               "use (free the port or change the address)" % (plane, port))
    assert _zmq_bind(cfg.control_bind) is None  # nothing left held after the fault


def test_a_client_sources_taken_client_port_is_refused_and_other_arrivals_are_not_tried():
    """Rule: a client-fed source's ``client_bind`` is tried after control and data, and only
    where ``arrival = "client"``."""
    c, d = free_ports(2)
    with _listen(socket.AF_INET, "127.0.0.1") as taker:
        ep = "tcp://127.0.0.1:%d" % _port(taker)
        client = _probe_line(_cfg("tcp://127.0.0.1:%d" % c, "tcp://127.0.0.1:%d" % d, ep,
                                  "client"))
        other = _probe_line(_cfg("tcp://127.0.0.1:%d" % c, "tcp://127.0.0.1:%d" % d, ep))
    assert client is not None and client.startswith("client_bind: cannot bind %s: Address "
                                                     "already in use" % ep), client
    assert other is None
    assert [p for p, _ in node_binds(_cfg("a", "b", "c", "client"))] == ["control", "data",
                                                                          "client"]


def test_an_address_none_of_this_machines_and_a_name_that_does_not_resolve_give_libzmqs_line():
    """Rule: an IP address this machine does not hold (EADDRNOTAVAIL) and a host name that
    does not resolve (ENODEV) fail the probe with the line libzmq's bind gives them."""
    port = free_ports(1)[0]
    for bad in ("tcp://198.51.100.7:%d" % port, "tcp://no-such-host.invalid:%d" % port):
        exc = _zmq_bind(bad)
        assert exc is not None, bad
        cfg = _cfg(bad, "tcp://127.0.0.1:%d" % free_ports(1)[0])
        assert _probe_line(cfg) == bind_fault(cfg, {}, exc)


def test_the_probe_agrees_with_libzmq_on_wildcards_names_interfaces_and_ipv6():
    """Rule: for each bind form (address, ``*`` dual stack, ``localhost``, interface ``lo``,
    IPv6 addresses) against each listener (IPv4 loopback, IPv4 any, IPv6 loopback, dual-stack
    any), the probe refuses exactly where libzmq's own bind fails, with its line. A pair that
    disagrees is tried again on fresh ports (up to three in all): other tests running beside
    this one take ports too, and one that takes this port in the other family between the two
    binds makes them disagree once, where a fault of the probe disagrees on every port."""
    v6 = _has_ipv6()
    takers = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")]
    takers += [(socket.AF_INET6, "::1"), (socket.AF_INET6, "::")] if v6 else []
    forms = ["tcp://127.0.0.1:%d", "tcp://*:%d", "tcp://localhost:%d", "tcp://lo:%d"]
    forms += ["tcp://[::1]:%d", "tcp://[::]:%d"] if v6 else []
    for family, host in takers:
        for form in forms:
            seen = []
            while len(seen) < 3 and (not seen or seen[-1][1] != seen[-1][2]):
                with _listen(family, host) as taker:
                    ep = form % _port(taker)
                    cfg = _cfg(ep, "tcp://127.0.0.1:%d" % free_ports(1)[0])
                    exc = _zmq_bind(ep)
                    line = _probe_line(cfg)
                seen.append((ep, line, None if exc is None else bind_fault(cfg, {}, exc)))
                _wait_free(ep)
            assert seen[-1][1] == seen[-1][2], (host, seen)


def test_a_restart_over_time_wait_connections_is_not_refused():
    """Rule: a port whose last agent closed its connections first (TIME_WAIT left on the
    port, which a bind without SO_REUSEADDR would refuse) is taken by the probe, and libzmq
    binds it while the probe still holds it (held, not listening)."""
    port = free_ports(1)[0]
    ep = "tcp://127.0.0.1:%d" % port
    ctx = zmq.Context()
    try:
        router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
        for s in (router, dealer):
            s.setsockopt(zmq.LINGER, 0)
        router.bind(ep)
        dealer.connect(ep)
        dealer.send(b"task")
        assert router.poll(int(WAIT_S * 1000)) and router.recv_multipart()[1] == b"task"
        router.close()  # the bound side closes first: its connection stays in TIME_WAIT
        _wait_free(ep)
        with socket.socket() as plain:  # the TIME_WAIT is there: without SO_REUSEADDR, refused
            with pytest.raises(OSError) as refused:
                plain.bind(("127.0.0.1", port))
        assert refused.value.errno == errno.EADDRINUSE
        with hold_binds(_cfg(ep, "tcp://127.0.0.1:%d" % free_ports(1)[0])) as held:
            assert held.bound["control"] == ep
            assert _zmq_bind(ep) is None
        dealer.close()
    finally:
        ctx.term()


def test_a_held_port_refuses_connections_and_is_let_go_on_close():
    """Rule: while held the port takes no connection (bound, not listening: a peer meets a
    refused connect, as before the agent started), and after ``close`` it is free."""
    port = free_ports(1)[0]
    hold = BindHold([("control", "tcp://127.0.0.1:%d" % port)])
    hold.take()
    try:
        with socket.socket() as peer:
            assert peer.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED
    finally:
        hold.close()
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", port))  # no SO_REUSEADDR: nothing of the hold is left


def test_an_ipc_path_a_live_socket_serves_is_refused_before_the_engines(tmp_path):
    """Rule: an ``ipc://`` bind a live process serves fails the hold with ``bind_fault``'s
    ipc line; a stale socket file is left for ZeroMQ to replace."""
    path = os.path.join(str(tmp_path), "data.sock")
    ep = "ipc://" + path
    cfg = _cfg("tcp://127.0.0.1:%d" % free_ports(1)[0], ep)
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(1)
    try:
        line = _probe_line(cfg)
    finally:
        live.close()
    assert line == "data_bind: cannot bind %s: another process serves on this path (stop it or "\
                   "give this node its own path)" % ep
    assert _probe_line(cfg) is None  # the file is still there, nobody listens: replaced


def test_endpoint_ports_and_interface_addresses():
    """Rule: ``*`` is port 0 (any), a port out of range or not a number is not tried; the
    loopback interface binds 127.0.0.1 for IPv4; ``*`` binds every address of its family."""
    assert endpoint_port("tcp://*:*") == 0
    assert endpoint_port("tcp://127.0.0.1:5551") == 5551
    assert endpoint_port("tcp://127.0.0.1:70000") is None
    assert endpoint_port("tcp://127.0.0.1:x") is None
    assert interface_address("lo", af.IPV4) == ("127.0.0.1", 0)
    assert interface_address("no-such-nic0", af.IPV4) is None
    assert bind_address("tcp://*:5551", True, {}) == (af.IPV6, ("::", 0, 0, 0))
    assert bind_address("tcp://*:5551", False, {}) == (af.IPV4, ("0.0.0.0", 0))
    assert bind_address("tcp://slow.example:5551", False, {"slow.example": None}) is None
    with pytest.raises(zmq.ZMQError) as nodev:
        bind_address("tcp://gone.example:5551", False, {"gone.example": ()})
    assert nodev.value.errno == errno.ENODEV


def test_doctor_fails_a_taken_port_and_a_foreign_address_and_leaves_names_to_addresses(tmp_path):
    """Rule: doctor's "node binds" line FAILs a port another process listens on (run's line,
    a fix naming the port) and an address none of this machine's; a host name that does not
    resolve is left to the "node addresses" line (no line); free binds give no line."""
    c, d = free_ports(2)
    cfg = SimpleNamespace(control_bind="tcp://127.0.0.1:%d" % c, data_bind="tcp://127.0.0.1:%d"
                          % d, client_bind="", arrival="poisson", state_dir=str(tmp_path),
                          node_id="w1")
    assert check_tcp_binds(cfg) is None
    with _listen(socket.AF_INET, "127.0.0.1") as taker:
        d = _port(taker)
        cfg.data_bind = "tcp://127.0.0.1:%d" % d
        taken = check_tcp_binds(cfg)
    assert taken.status == FAIL and taken.detail.startswith("data_bind: cannot bind tcp://127."
                                                            "0.0.1:%d: Address already in use" % d)
    assert "port %d" % d in taken.fix and "data_bind" in taken.fix
    foreign = check_tcp_binds(SimpleNamespace(**dict(
        vars(cfg), control_bind="tcp://198.51.100.7:%d" % c)))
    assert foreign.status == FAIL and "198.51.100.7 is no address of this machine" in \
        foreign.detail, foreign
    unresolved = SimpleNamespace(**dict(vars(cfg), control_bind="tcp://no-such.invalid:%d" % c))
    assert check_tcp_binds(unresolved) is None
