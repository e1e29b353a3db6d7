"""A worker that serves a range of stages (``last_stage``) can hold re-issues of one task
attempt for two stages at once: each is held under its own stage, released at its own earlier
issue's deadline, and runs. The worker is built as the agent builds it (``built_worker``: a real
onnxruntime engine in its inference thread), handed TASK frames through the loop's own
dispatch; its successors are never reached."""

from __future__ import annotations

import numpy as np
import pytest

from agent.net.transport import DATA
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.built_worker import clocked_worker, settle


@pytest.fixture
def worker(tmp_path):
    """(node, role, outbox, clock): worker w2a serving stages 2 and 3, whose loop reads
    ``clock[0]`` (starting at the real monotonic time: the inference thread's jobs never look
    expired)."""
    with clocked_worker(str(tmp_path / "run"), "w2a", alive={"s1", "w1a", "w3a", "w4a"},
                        last_stage=3) as parts:
        yield parts


def _frames(role, stage: int, attempt: int, ttl_s: float):
    spec = role.specs[stage]
    return wire.encode(Kind.TASK, "w1a", {
        "id": "a", "source": "s1", "stage": stage, "attempt": attempt, "created": 0.0,
        "hops": stage - 1, "resends": 0, "ttl_s": ttl_s, "token": "0" * 16},
        [np.zeros(spec.input_shape, spec.input_dtype)])


def test_reissues_of_one_attempt_for_two_stages_are_held_and_run_apart(worker):
    """Rule: re-issues are held by task key and stage. Attempt 0 of task a reached this
    stage-2..3 worker for stage 2 and (a copy run at stage 2 elsewhere) for stage 3; attempt 1
    comes for both stages before attempt 0's deadlines here (5.0 s and 5.5 s): both are held
    (the queue bounds count both tensors), and each runs once its own earlier deadline has
    passed; none is lost and nothing stays counted."""
    node, role, out, clock = worker
    t0 = clock[0]
    node._dispatch((DATA, b"w1a", _frames(role, 2, 0, 5.0)))
    node._dispatch((DATA, b"w1a", _frames(role, 3, 0, 5.5)))
    settle(role)
    assert out.counters["tasks_in"] == 2
    clock[0] = t0 + 4.75  # the source's deadline for attempt 0 passed: attempt 1
    node._dispatch((DATA, b"w1a", _frames(role, 2, 1, 5.0)))
    node._dispatch((DATA, b"w1a", _frames(role, 3, 1, 5.0)))
    nbytes = sum(np.zeros(role.specs[h].input_shape, role.specs[h].input_dtype).nbytes
                 for h in (2, 3))
    assert out.counters["reissue_held"] == 2 and len(role.reissues) == 2
    assert role.reissues.nbytes == nbytes
    for t in (t0 + 5.01, t0 + 5.51):  # attempt 0's deadline here for stage 2, then stage 3
        clock[0] = t
        out.run_timers(t, role.on_timer)
        role.on_clock(t)
        settle(role)
    assert out.counters["tasks_in"] == 4 and out.counters["duplicate_task"] == 0
    assert len(role.reissues) == 0 and role.reissues.nbytes == 0
    # every job taken in ran: the four taken, and the stage-2 ones' stage 3 kept here
    assert role.drain.ran == 4 + out.counters["kept_local"]
