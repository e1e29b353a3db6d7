"""A worker's duplicate table keeps its entries oldest first, a re-issued task's included: a
task re-issued with a new attempt neither holds older entries past their time nor is the
first to be pushed out of a full table while its own copies can still come."""

from __future__ import annotations

import numpy as np
import pytest

import agent.node.worker as worker_mod
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.built_worker import built_worker


@pytest.fixture
def side(tmp_path):
    built = built_worker(str(tmp_path / "run"))
    role = built.node.role
    role.out.view.alive.update({"s1", "w2a"})
    now = [1000.0]
    role.clock = lambda: now[0]
    try:
        yield role, now
    finally:
        built.close()


def _task(side, tid, attempt=0):
    spec = side.specs[1]
    return wire.Message(Kind.TASK, "s1", fields={
        "id": tid, "source": "s1", "stage": 1, "attempt": attempt, "created": 0.0, "hops": 0,
        "resends": 0, "ttl_s": 5.0}, tensors=[np.zeros(spec.input_shape, spec.input_dtype)])


def test_a_reissued_task_does_not_keep_older_entries_in_the_duplicate_table(side):
    """Rule: an entry is forgotten once its task's deadline is result_timeout_s past, whatever
    came before it. Task a re-issued (attempt 1, after its first deadline) had its entry
    refreshed in place at the front of the table, which held b's entry until a's new one
    expired too."""
    role, now = side
    role.on_data(b"s1", _task(role, "a"))
    now[0] += 1.0
    role.on_data(b"s1", _task(role, "b"))
    now[0] = 1006.0  # past a's first deadline (1005): its re-issue is taken in
    role.on_data(b"s1", _task(role, "a", 1))
    assert role.out.counters["tasks_in"] == 3
    now[0] = 1006.0 + role.cfg.result_timeout_s + 0.5  # b's deadline (1006) + keep, not a's
    role.on_clock(now[0])
    assert set(role.seen) == {("a", 1)}


def test_a_full_duplicate_table_pushes_out_the_oldest_entry_not_a_reissued_one(side,
                                                                                monkeypatch):
    """Rule: past SEEN_KEYS entries the oldest goes, so a copy of a re-issued attempt still
    within its deadline (a re-send after a lost ACK) is a duplicate and runs nothing. The
    re-issue's entry stayed at the front and was the one pushed out, and its copy ran again."""
    role, now = side
    monkeypatch.setattr(worker_mod, "SEEN_KEYS", 2)
    role.on_data(b"s1", _task(role, "p"))
    now[0] += 1.0
    role.on_data(b"s1", _task(role, "q"))
    now[0] = 1006.0
    role.on_data(b"s1", _task(role, "p", 1))
    role.on_data(b"s1", _task(role, "r"))  # a third entry: one of the two older ones goes
    assert set(role.seen) == {("p", 1), ("r", 1)}
    role.on_data(b"s1", _task(role, "p", 1))  # a copy of p's attempt 1
    assert role.out.counters["duplicate_task"] == 1 and role.out.counters["tasks_in"] == 4
