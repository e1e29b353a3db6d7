"""A worker of one source names that source when it refuses a task with no route back to it
(``refusal_scope.scope_of``), so its sender's hold about a source gone there grows
(``SourceHolds``) instead of holding the worker off for every task one heartbeat interval at a
time. A real worker side and outbox with a real onnxruntime engine (``test_node_worker``)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.node.outitem import OutItem
from agent.node.refusal_scope import scope_of
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.test_node_worker import _worker

ASKED_S = 0.2  # the worker's retry_s for no_route: its heartbeat interval


@pytest.fixture
def worker(tmp_path):
    yield from _worker(tmp_path)


def test_a_worker_of_one_source_names_it_in_a_no_route_refusal_only():
    """Rule: a worker of one source names it when it refuses no_route (the sender's hold about
    a gone source grows only when named), but not for an overload (every task it gets is its
    source's: the sender holds it off for every task, as before)."""
    assert scope_of("s1", {"s1"}, "no_route") == "s1"
    assert scope_of("s1", {"s1"}, "overload") == "" and scope_of("s1", {"s1"}) == ""
    assert scope_of("s1", {"s1", "s2"}, "overload") == "s1"


def test_a_worker_of_one_source_cut_off_from_it_is_held_off_for_its_tasks_longer_each_time(
        worker):
    """Rule: stage-1 worker w1, whose one source s1 was heard and is gone, with results to it
    held undelivered, refuses s1's task no_route naming s1; at its sender, where s1 is gone
    too, the ACK holds w1 off for s1's tasks alone, twice as long at each refusal (not one
    heartbeat interval each time), and not for every task."""
    side, out, spec = worker
    assert side.sources == {"s1"}
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
    out.view.alive.discard("s1")
    out.view.peer_state["s1"] = {"no_route": 0}  # heard, then gone
    held = OutItem(Kind.RESULT, "R:old#0", {"id": "old"}, None, dest="s1")
    out.items[held.key] = held  # a result to s1 waiting here: it cannot go back
    side.on_data(b"w2", wire.Message(Kind.TASK, "w2", fields={
        "id": "t1", "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
        "resends": 0}, tensors=[x]))
    assert out._replies == {(b"w2", "no_route", "s1"): ["t1#0"]}
    ((identity, reason, source), keys), = out._replies.items()

    # the same outbox as the sender of that ACK (its refusing successor: w2), s1 gone there
    lengths = []
    now = 100.0
    for _ in range(4):
        out.on_ack("w2", [], now, refused=keys, retry_s=ASKED_S, reason=reason, source=source)
        lengths.append(out.source_holds.held_for("s1", now)["w2"] - now)
        assert "w2" not in out.view.unavailable  # other sources' tasks still go there
        now += lengths[-1]  # offered again when the hold ends, refused again
    assert lengths == pytest.approx([0.2, 0.4, 0.8, 1.6])
