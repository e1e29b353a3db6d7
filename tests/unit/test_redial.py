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


class _Cut(_Sock):
    """A socket whose endpoint libzmq keeps dialling until it is disconnected."""


def _no_detail(r, sock, n, plane="data"):
    for _ in range(n):
        r.event(sock, "slow", plane, "tcp://slow:1", int(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL))


def test_broken_off_handshakes_in_a_row_under_curve_are_told_once_and_paced(caplog):
    """Rule: under CURVE, NO_DETAIL_IN_A_ROW broken-off handshakes with no success cut the
    connection (libzmq would dial again at once) and dial it every REDIAL_S; one WARNING
    names the peer and where its key came from, however long it lasts; fewer are left to
    libzmq."""
    from agent.net.redial import NO_DETAIL_IN_A_ROW

    r, now = _redial()
    r.key_sources["slow"] = "peers[1].public_key = KEY from /etc/keys/slow.key"
    sock = _Cut()
    with caplog.at_level("WARNING", logger="agent.net.transport"):
        _no_detail(r, sock, NO_DETAIL_IN_A_ROW - 1)
        assert sock.calls == [] and not r.due and not caplog.records
        _no_detail(r, sock, 1)
        assert sock.calls == [("disconnect", "tcp://slow:1")]
        r.run()
        assert len(sock.calls) == 1  # not before REDIAL_S
        now[0] += REDIAL_S
        r.run()
        assert sock.calls[-1] == ("connect", "tcp://slow:1")
        _no_detail(r, sock, 1)  # the next attempt fails too: cut again at once, no new line
        _no_detail(r, sock, 1, "control")
        assert sock.calls[-1] == ("disconnect", "tcp://slow:1")
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("handshake with slow keeps failing")
    assert "peers[1].public_key = KEY from /etc/keys/slow.key" in lines[0]
    assert "is probably not slow's" in lines[0]


def test_a_success_resets_the_count_and_reconnects_a_connection_cut_meanwhile():
    """Rule: a success between broken-off handshakes starts the count again; a success
    reported after the watch cut the connection dials it again at once (never left cut)."""
    from agent.net.redial import NO_DETAIL_IN_A_ROW

    r, now = _redial()
    sock = _Cut()
    _no_detail(r, sock, NO_DETAIL_IN_A_ROW - 1)
    r.event(sock, "slow", "data", "tcp://slow:1", int(zmq.EVENT_HANDSHAKE_SUCCEEDED))
    _no_detail(r, sock, NO_DETAIL_IN_A_ROW - 1)
    assert sock.calls == []
    _no_detail(r, sock, 1)
    assert sock.calls == [("disconnect", "tcp://slow:1")]
    r.event(sock, "slow", "data", "tcp://slow:1", int(zmq.EVENT_HANDSHAKE_SUCCEEDED))
    r.run()
    assert sock.calls[-1] == ("connect", "tcp://slow:1")


def test_broken_off_handshakes_without_curve_are_left_to_libzmq():
    """Rule: without CURVE a broken-off handshake says nothing about a key: never cut."""
    r = Redial(mode="none")
    sock = _Cut()
    _no_detail(r, sock, 50)
    assert sock.calls == [] and not r.due


def test_a_mechanism_mismatch_is_worded_for_this_nodes_mode(caplog):
    """Rule: a handshake failed on a mechanism mismatch names this node's security and the
    peer's; a security = none node is never told about its keys."""
    from agent.net.redial import MECHANISM_MISMATCH

    with caplog.at_level("WARNING", logger="agent.net.transport"):
        for mode in ("none", "curve"):
            Redial(mode=mode).event(_Sock(), "b", "data", "tcp://b:1",
                                    int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL), MECHANISM_MISMATCH)
    none, curve = [rec.getMessage() for rec in caplog.records]
    assert 'this node runs security = "none", the peer CURVE' in none and "key" not in none
    assert 'this node runs security = "curve", the peer none' in curve


def test_failed_handshakes_on_a_bound_socket_are_logged_bounded(caplog):
    """Rule: the first failed handshake on a bound socket is logged at once, the rest at most
    once per interval with their count (a node retrying ten times a second adds no lines)."""
    from agent.net.handshakes import CRYPTOGRAPHIC, ServerWatch

    now = [0.0]
    w = ServerWatch("curve", "fast", b"P" * 40, log_interval_s=60.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="agent.net.transport"):
        for _ in range(1300):  # 130 s at ten a second
            w.event("data", int(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL), CRYPTOGRAPHIC,
                    "tcp://127.0.0.1:7652")
            now[0] += 0.1
        w.flush(force=True)
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 4, lines  # the first, at 60 s and 120 s, the rest at stop
    assert "failed 600 more time(s)" in lines[1]
    assert "failed 1 time(s) on this node's data socket tcp://127.0.0.1:7652" in lines[0]
    assert "holds another public key for this node 'fast'" in lines[0] and "P" * 40 in lines[0]
    assert w.failed == 1300 and not w.pending
