"""A peer's older connection, renamed by ZeroMQ when the peer connects again under its id
(ROUTER_HANDOVER gives it a five-byte id, a zero byte and a counter): what it still carried is
counted as ``drop_stale_connection``, not as an impersonation with a WARNING, since the peer
holds it in custody and sends it again on the new connection. A real worker node is built (its
sockets are never bound) and handed messages as its transport would."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from agent.net.transport import DATA, handed_over
from agent.protocol import wire
from tests.unit.built_worker import built_worker


@pytest.fixture
def worker(tmp_path):
    built = built_worker(str(tmp_path))
    yield built.node
    built.close()


def _task(sender):
    x = np.zeros((1, 1, 28, 28), np.float32)
    return [bytes(f) for f in wire.encode(wire.Kind.TASK, sender, {
        "id": "t1", "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
        "resends": 0}, [x])]


def test_handed_over_ids_are_zeromqs_and_never_a_node_id():
    """Rule: ZeroMQ's generated routing ids (0x00 + 4 bytes) are told apart from node ids,
    which start with a letter or digit."""
    assert handed_over(b"\x00\x6b\x8b\x45\x6e")
    assert not handed_over(b"w2b") and not handed_over(b"\x00abc") and not handed_over(b"s1abc")


def test_a_peers_renamed_connection_is_a_stale_connection_not_an_impersonation(worker, caplog):
    """Rule: a TASK from a peer under a handed-over routing id is dropped as
    ``stale_connection``, without a WARNING; the same under a node id of another node, or a
    handed-over id claiming a node that is no peer, is still an impersonation (logged)."""
    caplog.set_level(logging.WARNING)
    out = worker.outbox
    worker._dispatch((DATA, b"\x00\x6b\x8b\x45\x6e", _task("s1")))
    assert out.counters["drop_stale_connection"] == 1
    assert not out.counters["drop_impersonation"] and not caplog.records
    worker._dispatch((DATA, b"w9", _task("s1")))
    worker._dispatch((DATA, b"\x00\x6b\x8b\x45\x6f", _task("w9")))
    assert out.counters["drop_impersonation"] == 2
    assert any("it says it is" in r.getMessage() for r in caplog.records)
