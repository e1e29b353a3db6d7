"""What a worker whose next stage takes nothing tells its senders: when every successor of its
next stage refuses work while tasks already wait here for one, a new task is refused
``overload`` only when one of those successors is full; when each is stopping (it refused with
``shutdown`` while it drains) it is ``no_route``, so that its source rejects as ``no_route``
too, not as an overloaded fleet. The worker is built as the agent builds it (``built_worker``:
a real onnxruntime engine in its inference thread, a real outbox), handed TASK frames through
the loop's own dispatch; its successor's refusals come through ``Outbox.on_ack`` as an ACK's
``refused`` list does."""

from __future__ import annotations

import select

import numpy as np
import pytest

from agent.net.transport import DATA
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.built_worker import clocked_worker


@pytest.fixture
def worker(tmp_path):
    """(node, role, outbox, clock): stage-1 worker w1a whose loop reads ``clock[0]``."""
    with clocked_worker(str(tmp_path / "run"), alive={"s1", "w2a"}) as parts:
        yield parts


def _frames(role, tid: str):
    spec = role.specs[1]
    return wire.encode(Kind.TASK, "s1", {
        "id": tid, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
        "resends": 0, "ttl_s": 30.0, "token": "0" * 16},
        [np.zeros(spec.input_shape, spec.input_dtype)])


def _held_behind(node, role, out, clock, reason: str) -> None:
    """Task a runs here; its stage-2 TASK is refused by w2a (the only stage-2 successor) for
    ``reason`` and waits here."""
    node._dispatch((DATA, b"s1", _frames(role, "a")))
    while role.runner.queued or role.backlog:
        ready, _, _ = select.select(role.wake_fds(), [], [], 30.0)
        assert ready, "the inference thread gave no result within 30 s"
        role.on_fd(ready[0])
    assert out.items["a#0"].dest == "w2a"
    out.on_ack("w2a", [], clock[0], refused=["a#0"], retry_s=0.5, reason=reason)
    assert [i.key for i in out.waiting] == ["a#0"]


@pytest.mark.parametrize("reason, told", [("shutdown", "no_route"), ("overload", "overload")])
def test_a_worker_behind_a_stopping_next_stage_refuses_no_route_not_overload(worker, reason,
                                                                              told):
    """Rule: with a task waiting here for stage 2 and the only stage-2 successor refusing, a
    new task is refused overload when that successor is full, and no_route (with a retry_s of
    at least a heartbeat interval) when it is stopping: nothing takes tasks onward now, the
    fleet is not overloaded."""
    node, role, out, clock = worker
    _held_behind(node, role, out, clock, reason)
    node._dispatch((DATA, b"s1", _frames(role, "b")))
    assert out._replies[(b"s1", told)] == ["b#0"]
    assert out.counters["refused_" + told] == 1
    if told == "no_route":
        assert out._retry_s[b"s1"] >= role.cfg.heartbeat_interval_s
