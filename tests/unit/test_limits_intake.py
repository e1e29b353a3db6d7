"""A worker's intake under overload: a task that would expire behind the tasks in or waiting
for its engine is refused (``overload``, counted ``refused_overload``), as is one that would
queue here while every successor of the next stage refuses work; a worker with nothing in its
engine takes any task, whatever its service time. A real stage-1 worker of the demo bundle is
built with an emulated capacity (its sockets never bound, its inference thread not started,
so what it accepted stays ahead of the next task) and handed TASKs as its transport would."""

from __future__ import annotations

import numpy as np
import pytest

from agent.net.transport import DATA
from agent.node.outitem import OutItem
from agent.protocol import wire
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.built_worker import built_worker

SERVICE_S = 0.5  # the emulated service time per task


@pytest.fixture
def worker(tmp_path):
    flops = float(load_bundle(DEMO_BUNDLE_DIR).stage(1).flops)
    built = built_worker(str(tmp_path), emulate_capacity_flops=flops / SERVICE_S,
                         result_timeout_s=20.0, warmup_runs=0, timing_runs=1)
    yield built.node
    built.close()


def _task(i, ttl_s):
    x = np.zeros((1, 1, 28, 28), np.float32)
    return [bytes(f) for f in wire.encode(wire.Kind.TASK, "s1", {
        "id": "t%d" % i, "source": "s1", "stage": 1, "attempt": 0, "created": 0.0, "hops": 0,
        "resends": 0, "ttl_s": float(ttl_s)}, [x])]


def _offer(node, i, ttl_s):
    """Hand the worker task ``i``; True when it took it (ACKed and queued)."""
    before = node.outbox.counters["tasks_in"]
    node._dispatch((DATA, b"s1", _task(i, ttl_s)))
    return node.outbox.counters["tasks_in"] > before


def test_a_task_that_would_expire_behind_the_engines_queue_is_refused(worker):
    """Rule: with k tasks in or waiting for the engine, a task whose remaining ttl_s is below
    k x the service time is refused as overload; one that fits is taken, so the queue grows
    to what the deadline allows and no further (ttl 2.2 s at 0.5 s a task: 5 tasks)."""
    assert worker.view.service_time_s == pytest.approx(SERVICE_S, rel=1e-6)
    took = [_offer(worker, i, 2.2) for i in range(8)]
    assert took == [True] * 5 + [False] * 3, took
    assert worker.role.input_queue() == 5
    assert worker.outbox.counters["refused_overload"] == 3
    assert _offer(worker, 8, 10.0)  # a task with time left still fits behind the five
    assert worker.outbox.counters["drop_deadline"] == 0


def test_an_idle_worker_takes_a_task_whatever_its_service_time_estimate(worker):
    """Rule: with nothing in or waiting for its engine a worker takes a task even when its
    service time (a start-up or emulated estimate) is longer than the task's remaining time;
    the next such task, which would wait behind it, is refused."""
    assert _offer(worker, 0, 0.1)
    assert not _offer(worker, 1, 0.1)
    assert worker.outbox.counters["refused_overload"] == 1


def test_a_task_is_refused_while_every_next_stage_successor_refuses_and_tasks_wait_here(worker):
    """Rule: while tasks already wait here for a successor of the next stage and every one
    heard holds this node off after refusing it, a new task is refused as overload rather than
    queued behind them; none heard yet (start-up) or all gone is no refusal (the task waits,
    or no_route says so); once a successor is usable again it is taken."""
    out, view = worker.outbox, worker.view
    now = out.clock()
    x = np.zeros((1, 8, 14, 14), np.float32)
    held = OutItem(wire.Kind.TASK, wire.task_key("h1", 0), {
        "id": "h1", "source": "s1", "stage": 2, "attempt": 0, "created": 0.0, "hops": 1,
        "resends": 0}, x, expires=now + 10.0)
    out.send(held, now)  # no stage-2 successor heard yet: it waits here
    assert out.waiting
    assert _offer(worker, 0, 10.0)  # none heard yet: taken, it waits with the other
    view.alive.add("w2a")
    view.unavailable["w2a"] = now + 5.0  # it refused this node lately: held off
    assert not _offer(worker, 1, 10.0)
    assert out.counters["refused_overload"] == 1
    del view.unavailable["w2a"]
    assert _offer(worker, 2, 10.0)
