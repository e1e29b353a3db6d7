"""A stopping worker (SIGTERM) refuses new tasks at once and finishes what it holds, with a real
onnxruntime engine in a real inference thread (the transport is built but never bound)."""

from __future__ import annotations

import select

import numpy as np
import pytest

from agent.node.loop_drain import custody_left
from agent.node.outitem import OutItem
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.test_node_worker import _worker


@pytest.fixture
def worker(tmp_path):
    yield from _worker(tmp_path, threshold=0.0)  # every task exits at stage 1: a RESULT


def _task(tid, x, source="s1"):
    return wire.Message(Kind.TASK, source, fields={
        "id": tid, "source": source, "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
        "resends": 0, "ttl_s": 30.0}, tensors=[x])


def _run_all(side):
    """Carry out the inference thread's results until the worker holds no job."""
    while side.in_flight():
        ready, _, _ = select.select(side.wake_fds(), [], [], 30.0)
        assert ready, "inference thread gave no result within 30 s"
        side.on_fd(ready[0])


def test_a_stopping_worker_refuses_new_tasks_for_the_rest_of_its_drain_but_acks_copies(worker):
    """Rule: from the stop on, a new TASK is refused (reason ``shutdown``) with a ``retry_s`` of
    what is left of ``drain_timeout_s``, and nothing enters the queue; a copy of a task taken
    before the stop is still ACKed (its sender stops re-sending it: this worker finishes it)."""
    side, out, spec = worker
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
    side.on_data(b"s1", _task("a", x))
    out._replies.clear()
    side.stop_arrivals()
    assert side.drain_time_s == side.cfg.drain_timeout_s > 0
    side.on_data(b"s1", _task("b", x))
    side.on_data(b"s1", _task("a", x))
    assert out._replies == {(b"s1", "shutdown"): [wire.task_key("b", 0)],
                            (b"s1", ""): [wire.task_key("a", 0)]}
    assert 0 < out._retry_s[b"s1"] <= side.cfg.drain_timeout_s
    assert out._retry_s[b"s1"] > side.cfg.drain_timeout_s - 5.0  # the drain has just begun
    assert out.counters["refused_shutdown"] == 1 and out.counters["tasks_in"] == 1
    assert side.input_queue() == 1 and side.in_flight()
    _run_all(side)
    assert [i.fields["id"] for i in out.items.values()] == ["a"]  # its RESULT, in custody


def test_a_stopping_worker_drops_queued_tasks_of_a_gone_source_instead_of_running_them(worker):
    """Rule: once stopping, a queued task whose source was heard and is gone is dropped
    (``drop_source_gone``), not run; the stop's line says how many were handed back, run,
    dropped and abandoned."""
    side, out, spec = worker
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
    out.view.peer_state["s1"] = {}  # heard
    for i in range(12):  # ENGINE_DEPTH go to the engine at once, the rest wait in the backlog
        side.on_data(b"s1", _task("t%d" % i, x))
    in_engine, backlog = side.runner.queued, len(side.backlog)
    assert backlog > 0 and in_engine + backlog == 12
    side.stop_arrivals()
    out.view.alive.discard("s1")  # the source stopped
    _run_all(side)
    assert out.counters["drop_source_gone"] == backlog
    assert side.drain.ran == in_engine  # the engine's jobs were under way: they end
    line = side.drain.line(side.input_queue(), side.clock())
    assert "of 12 queued" in line and "ran %d job(s)" % in_engine in line
    assert "source gone %d" % backlog in line and "abandoned 0 queued" in line


def test_a_stopping_node_waits_for_acks_only_from_live_destinations_and_sources(worker):
    """Rule: a stopping node waits for the ACK of a result or task in custody only while its
    destination, and the task's source, are alive (``custody_left``): one for a gone node is
    given up at once instead of holding the stop for its whole bound."""
    side, out, spec = worker
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
    side.on_data(b"s1", _task("a", x))
    _run_all(side)
    assert len(out.items) == 1  # a RESULT to s1, not ACKed (the transport is not bound)
    assert custody_left(out) == (1, 0)
    out.view.alive.discard("s1")
    assert custody_left(out) == (0, 1)


def test_a_task_sent_to_a_gone_successor_is_waited_for_while_another_of_its_stage_lives(worker):
    """Rule: a stopping node keeps waiting for a task it sent to a successor found gone since
    (by its silence: the task stays in custody until its ACK deadline) while another successor
    of that stage is alive, since the outbox sends it there at that deadline; with none left it
    is given up."""
    side, out, spec = worker
    view = out.view
    view.successors = tuple(view.successors) + ("w2b",)
    view.peer_stages["w2b"] = (2, 2)
    view.alive.add("w2b")
    item = OutItem(Kind.TASK, wire.task_key("t", 0), {
        "id": "t", "source": "s1", "stage": 2, "attempt": 0, "created": 0.0, "hops": 1,
        "resends": 0}, None, dest="w2")
    out.items[item.key] = item
    assert custody_left(out) == (1, 0)
    view.alive.discard("w2")  # found gone by its silence
    assert custody_left(out) == (1, 0)
    view.alive.discard("w2b")
    assert custody_left(out) == (0, 1)
    del out.items[item.key]
