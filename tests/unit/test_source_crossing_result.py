"""The source's custody of a task's issues ends with the task: when an earlier attempt's
RESULT crosses the latest re-issue, the latest issue's TASK leaves the source's outbox, whether
it was sent and not yet ACKed or held for want of a usable successor."""

from __future__ import annotations

import json

import pytest

from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.source_parts import serving_source


@pytest.fixture
def parts(tmp_path):
    yield from serving_source(tmp_path)


def _result(task_id, attempt, token):
    return wire.Message(Kind.RESULT, "w1", fields={
        "id": task_id, "attempt": attempt, "source": "s1", "exit_stage": 1, "cls": 2,
        "confidence": 0.9, "worker": "w1", "hops": 1, "resends": 0, "created": 0.0,
        "token": token})


@pytest.mark.parametrize("held", [False, True], ids=["sent_unacked", "held_waiting"])
def test_an_answered_task_leaves_no_issue_in_the_sources_custody(parts, held):
    """Rule: once a task is answered, no TASK of it stays in the source's outbox. Attempt 0's
    result arriving just after the deadline re-issued the task as attempt 1 completes it; the
    attempt-1 TASK (unACKed, or held while w1 refuses work) had stayed in custody until its own
    deadline, sent on to a worker that ran the answered task again, and counted in the source's
    queue, so new tasks were rejected as overload and a drain at SIGTERM waited for it."""
    side, out = parts.side, parts.out
    x, label = side.replay.sample(side.rng)
    side._create_task(x, label)
    (task_id,) = side.book.pending
    task = side.book.pending[task_id]
    token = side.tokens[task_id]
    if held:  # w1 refuses work for a while: the re-issue waits for a usable successor
        out.view.unavailable["w1"] = task.result_due + 60.0
    side.on_timer(task_id, task.result_due)
    assert task.attempt == 1 and out.held()[0] == 1
    assert [i.key for i in out.waiting] == (["%s#1" % task_id] if held else [])
    side.on_data(b"w1", _result(task_id, 0, token))
    assert out.held() == (0, 0) and not out.items and not out.waiting
    side.flush()
    with open(parts.records) as f:
        (rec,) = [json.loads(line) for line in f if line.strip()]
    assert rec["id"] == task_id and rec["status"] == "completed"
    side.on_data(b"w1", _result(task_id, 1, token))  # the re-issue's own result: no second record
    assert out.counters["duplicate_result"] == 1 and side.book.completed == 1
    out.view.unavailable.clear()
    side._create_task(x, label)  # the source's queue is empty again: the next task is admitted
    assert side.rejected == {} and len(side.book.pending) == 1
