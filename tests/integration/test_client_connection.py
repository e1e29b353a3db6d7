"""``Client.check_connection``: before an input is sent, a client tells a running source from
an endpoint where nothing listens, an address that cannot be opened, a key the source refuses
and a wrong server key, with real ZeroMQ sockets and the source's own CURVE set-up
(``serve_clients_over_curve``). A decided case answers long before its wait is over."""

from __future__ import annotations

import time

import pytest
import zmq

from agent.fleet.client import Client, ClientKeys
from agent.net.security import CurveSecurity, serve_clients_over_curve
from agent.testbed.ports import free_ports
from tests.unit.endpoints import has_ipv6_loopback

WAIT_S = 30.0  # a decided case must answer well within this (asserted below 10 s)


def _endpoint(host: str = "127.0.0.1") -> str:
    return "tcp://%s:%d" % (host, free_ports(1)[0])


def _check(endpoint, keys=None, ctx=None, wait_s=WAIT_S):
    """(reason, seconds) of one check."""
    t0 = time.monotonic()
    with Client(endpoint, keys, ctx=ctx) as c:
        why = c.check_connection(wait_s)
    return why, time.monotonic() - t0


def test_a_listening_plain_source_passes_at_once_and_a_closed_port_is_named_refused(tmp_path):
    """Rule: a ZeroMQ peer at the endpoint gives "" as soon as the handshake succeeds; a port
    where nothing listens gives "nothing listens there" once the wait is over; an ipc path
    with nothing at it, or a host name that does not resolve (".invalid" never does), is
    named before any wait."""
    ctx = zmq.Context()
    src = ctx.socket(zmq.ROUTER)
    src.setsockopt(zmq.LINGER, 0)
    up = _endpoint()
    src.bind(up)
    try:
        why, took = _check(up, ctx=ctx)
        assert why == "" and took < 10, (why, took)
        why, took = _check(_endpoint(), ctx=ctx, wait_s=0.5)
        assert why.startswith("nothing listens there (connection refused after 0.5 s)"), why
        why, took = _check("ipc://%s/none.ipc" % tmp_path, ctx=ctx)
        assert why.startswith("nothing at the ipc path %s/none.ipc" % tmp_path) and took < 10, why
        why, _ = _check("tcp://no-such-host.invalid:5560", ctx=ctx)  # as long as DNS takes
        assert why == "the host no-such-host.invalid does not resolve", why
    finally:
        src.close()
        ctx.term()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
def test_an_ipv6_endpoint_connects():
    """Rule: the IPv6 endpoints a config may name work: a client reaches a source bound on
    [::1] (the sockets are dual stack)."""
    ctx = zmq.Context()
    src = ctx.socket(zmq.ROUTER)
    src.setsockopt(zmq.LINGER, 0)
    src.setsockopt(zmq.IPV6, 1)
    endpoint = _endpoint("[::1]")
    src.bind(endpoint)
    try:
        why, took = _check(endpoint, ctx=ctx)
        assert why == "" and took < 10, (why, took)
    finally:
        src.close()
        ctx.term()


def test_curve_source_refusing_the_key_or_with_another_key_is_named_at_once():
    """Rule: a CURVE source whose client allow-list lacks this client's key is "refused this
    client's key"; a wrong server key is "the CURVE handshake failed"; a client without keys
    is told the other end closed the handshake (a CURVE endpoint needs keys); the listed key
    with the right server key passes. Each is decided well within the wait."""
    server_pub, server_sec = zmq.curve_keypair()
    ok_pub, ok_sec = zmq.curve_keypair()
    other_pub, other_sec = zmq.curve_keypair()
    ctx = zmq.Context()
    security = CurveSecurity(server_pub, server_sec, [])
    security.start(ctx)
    src = ctx.socket(zmq.ROUTER)
    src.setsockopt(zmq.LINGER, 0)
    serve_clients_over_curve(security, src, [ok_pub])
    endpoint = _endpoint()
    src.bind(endpoint)
    try:
        cases = [(ClientKeys(ok_pub, ok_sec, server_pub), ""),
                 (ClientKeys(other_pub, other_sec, server_pub),
                  "the source refused this client's key"),
                 (ClientKeys(ok_pub, ok_sec, other_pub), "the CURVE handshake failed"),
                 (None, "the other end closed the connection during the handshake")]
        for keys, want in cases:
            why, took = _check(endpoint, keys, ctx)
            assert why.startswith(want) if want else why == "", (want, why)
            assert took < 10, (want, took)
    finally:
        src.close()
        security.stop()
        ctx.term()


def test_a_wait_that_is_not_a_finite_number_is_refused():
    """Rule: check_connection takes a finite wait >= 0 (inf or NaN would be a traceback from
    the poller), and only before the first input is sent."""
    with Client(_endpoint()) as c:
        for bad in (float("inf"), float("nan"), -1.0):
            with pytest.raises(ValueError, match="wait_s must be a finite number"):
                c.check_connection(bad)
