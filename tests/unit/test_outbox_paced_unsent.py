"""A paced send that fails (the destination gone) backs off as an unpaced one does.

With emulated links (``emulate_links``, every testbed run on loopback) each message leaves
through its link's pacer. A result whose source was down failed its send, was put back due at
once and sent again through the pacer in the same pass, over and over: an exit worker re-sent
one result about 30,000 times a second for as long as its source was down, using most of a
core. A real worker node (sockets never bound) with a transport whose sends all fail."""

from __future__ import annotations

from agent.node.outitem import OutItem
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.built_worker import built_worker


def test_a_failed_paced_send_backs_off_instead_of_spinning(tmp_path):
    """Rule: over one second with its destination down, a paced result is re-sent a handful
    of times (back-off of 0.02 s per re-send so far, up to ack_timeout_s), not once per pass."""
    built = built_worker(str(tmp_path), "w4a", emulate_links=True, ack_timeout_s=1.0)
    try:
        out = built.node.outbox
        sends = []
        built.transport.send = lambda peer, frames: sends.append(peer) and False
        item = OutItem(Kind.RESULT, "R:" + wire.task_key("t1", 0), {
            "id": "t1", "attempt": 0, "source": "s1", "exit_stage": 4, "cls": 1,
            "confidence": 0.9, "worker": "w4a", "hops": 4, "resends": 0, "created": 0.0,
            "token": ""}, None, dest="s1", keep_until=1e9)
        now = 100.0
        out.send(item, now)
        for _ in range(1000):  # one loop pass a millisecond, as a busy worker's
            now += 0.001
            out.run_paced(now)
            out.run_timers(now, lambda key, t: None)
        assert 3 <= len(sends) <= 20, len(sends)
        assert out.counters["resends"] == len(sends) - 1
        assert out.items.get(item.key) is item  # still held: a result is kept until keep_until
    finally:
        built.close()
