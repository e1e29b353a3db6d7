"""``Client.check_connection``: before an input is sent, a client tells a running source from
an endpoint where nothing listens, a key the source refuses and a wrong server key, with real
ZeroMQ sockets and the source's own CURVE set-up (``serve_clients_over_curve``)."""

from __future__ import annotations

import zmq

from agent.fleet.client import Client, ClientKeys
from agent.net.security import CurveSecurity, serve_clients_over_curve
from agent.testbed.procs import free_ports


def _endpoint() -> str:
    return "tcp://127.0.0.1:%d" % free_ports(1)[0]


def _keys(public, secret, server) -> ClientKeys:
    return ClientKeys(public, secret, server)


def test_a_listening_plain_source_passes_and_a_closed_port_is_named_refused():
    """Rule: a ZeroMQ peer at the endpoint gives "" (the handshake succeeded); a port where
    nothing listens gives the "nothing listens there" reason once the wait is over."""
    ctx = zmq.Context()
    src = ctx.socket(zmq.ROUTER)
    src.setsockopt(zmq.LINGER, 0)
    up = _endpoint()
    src.bind(up)
    try:
        with Client(up, ctx=ctx) as c:
            assert c.check_connection(10.0) == ""
        with Client(_endpoint(), ctx=ctx) as c:
            why = c.check_connection(0.5)
        assert why.startswith("nothing listens there (connection refused for 0.5 s)"), why
    finally:
        src.close()
        ctx.term()


def test_curve_source_refusing_the_key_or_with_another_key_is_named_at_once():
    """Rule: a CURVE source whose client allow-list lacks this client's key is "refused this
    client's key"; a wrong server key (or a plain client) is "the handshake ... failed"; the
    listed key with the right server key passes. Each is decided well within the wait."""
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
        cases = [(_keys(ok_pub, ok_sec, server_pub), ""),
                 (_keys(other_pub, other_sec, server_pub), "refused this client's key"),
                 (_keys(ok_pub, ok_sec, other_pub), "the handshake with the source failed"),
                 (None, "the handshake with the source failed")]
        for keys, want in cases:
            with Client(endpoint, keys, ctx=ctx) as c:
                why = c.check_connection(20.0)
            assert (why == "") if not want else (want in why), (keys, why)
    finally:
        src.close()
        security.stop()
        ctx.term()
