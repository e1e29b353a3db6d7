"""``Redial``: which handshake events dial a connection again, and when (a fake socket and
clock: the real sockets are in tests/integration/test_curve_redial.py)."""

from __future__ import annotations

import zmq

from agent.net.redial import REDIAL_S, Redial


class _Sock:
    """Records the disconnects and connects ``Redial.run`` makes."""

    def __init__(self):
        self.calls = []

    def disconnect(self, endpoint):
        self.calls.append(("disconnect", endpoint))

    def connect(self, endpoint):
        self.calls.append(("connect", endpoint))


def _redial():
    now = [100.0]
    return Redial(clock=lambda: now[0]), now


def test_a_refused_handshake_is_dialled_again_after_redial_s_and_logged_once(caplog):
    """Rule: an auth or protocol failure dials the socket again REDIAL_S later (not before),
    and is logged once per peer and plane however often it repeats."""
    r, now = _redial()
    sock = _Sock()
    with caplog.at_level("WARNING", logger="agent.net.transport"):
        r.event(sock, "b", "data", "tcp://b:1", int(zmq.EVENT_HANDSHAKE_FAILED_AUTH))
        r.run()
        assert sock.calls == []
        now[0] += REDIAL_S
        r.run()
        assert sock.calls == [("disconnect", "tcp://b:1"), ("connect", "tcp://b:1")]
        r.event(sock, "b", "data", "tcp://b:1", int(zmq.EVENT_HANDSHAKE_FAILED_AUTH))
    assert r.redials == 1 and len(caplog.records) == 1 and r.due


def test_a_handshake_that_succeeds_cancels_the_dial_and_one_broken_off_schedules_none():
    """Rule: a success after a failure leaves the working connection alone (it was dialled
    again 5 s later, dropping it); a handshake that broke off (NO_DETAIL: a reset, a peer
    killed mid-handshake) is left to libzmq, which reconnects it by itself."""
    r, now = _redial()
    sock = _Sock()
    r.event(sock, "b", "data", "tcp://b:1", int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL))
    r.event(sock, "b", "data", "tcp://b:1", int(zmq.EVENT_HANDSHAKE_SUCCEEDED))
    r.event(sock, "b", "data", "tcp://b:1", int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL))
    now[0] += 10 * REDIAL_S
    r.run()
    assert sock.calls == [] and not r.due
