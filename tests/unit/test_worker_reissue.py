"""A source's re-issue reaching the worker that took the earlier attempt is served, never
dropped as a duplicate: the worker's deadline for the earlier attempt runs from when its loop
read that TASK, so it ends after the source's (when the source re-issues) by the time the TASK
took to get read here. The worker is built as the agent builds it, with a real onnxruntime
engine in its inference thread, and handed TASK frames through the loop's own dispatch; its
successor w2a is never reached (its transport is not bound), so the earlier attempt waits in
the outbox and dies at its deadline, as a stuck issue does."""

from __future__ import annotations

import numpy as np
import pytest

from agent.net.transport import DATA
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.built_worker import clocked_worker, settle


@pytest.fixture
def worker(tmp_path):
    """(node, role, outbox, clock): a stage-1 worker whose loop reads ``clock[0]``, which starts
    at the real monotonic time (the inference thread's clock: its jobs never look expired)."""
    with clocked_worker(str(tmp_path / "run"), alive={"s1", "w2a"}) as parts:
        yield parts


def _frames(role, attempt: int, ttl_s: float):
    spec = role.specs[1]
    return wire.encode(Kind.TASK, "s1", {
        "id": "a", "source": "s1", "stage": 1, "attempt": attempt, "created": 0.0, "hops": 0,
        "resends": 0, "ttl_s": ttl_s, "token": "0" * 16},
        [np.zeros(spec.input_shape, spec.input_dtype)])


def _at(node, role, out, clock, t: float) -> None:
    """A pass of the loop at time ``t``: timers, the side's clock, the engine's answers."""
    clock[0] = t
    out.run_timers(t, role.on_timer)
    role.on_clock(t)
    settle(role)


def test_a_reissue_read_before_the_earlier_attempts_deadline_here_still_runs(worker):
    """Rule: a higher attempt is its source's re-issue and is served once the earlier attempt's
    deadline here has passed. Attempt 0 left its source with 5 s to live and was read here
    0.3 s later; the source re-issued at its deadline (0.25 s before this worker's) and
    attempt 1 was read at once. It was ACKed and dropped as a duplicate while attempt 0 died
    at its deadline in the outbox: nothing of the task was left anywhere until attempt 1's
    own deadline at the source (a lost attempt)."""
    node, role, out, clock = worker
    t0 = clock[0]
    node._dispatch((DATA, b"s1", _frames(role, 0, 5.0)))
    settle(role)
    assert out.items["a#0"].fields["stage"] == 2  # attempt 0 ran; its forward waits for w2a
    clock[0] = t0 + 4.75  # the source's deadline (t0 + 4.7 here) passed: attempt 1
    node._dispatch((DATA, b"s1", _frames(role, 1, 5.0)))
    assert out._replies[(b"s1", "")] == ["a#0", "a#1"]  # both ACKed: the sender lets go
    assert out.counters["duplicate_task"] == 0 and out.counters["reissue_held"] == 1
    assert role.held()[0] == 2 and role.in_flight()  # it counts in the queue bounds meanwhile
    _at(node, role, out, clock, t0 + 4.9)  # attempt 0 may still run here: attempt 1 waits
    assert "a#1" not in out.items and role.reissues.jobs
    _at(node, role, out, clock, t0 + 5.01)  # attempt 0 is dead here: attempt 1 runs
    assert "a#0" not in out.items and out.counters["drop_deadline"] == 1
    assert out.items["a#1"].fields["stage"] == 2 and out.counters["tasks_in"] == 2
    assert not role.reissues.jobs and role.reissues.nbytes == 0


def test_a_copy_of_an_attempt_taken_already_runs_nothing(worker):
    """Rule: the same attempt again (a re-send after a lost ACK) is ACKed and dropped as a
    duplicate, whether it was run or is held as a re-issue; a lower attempt too."""
    node, role, out, clock = worker
    t0 = clock[0]
    node._dispatch((DATA, b"s1", _frames(role, 0, 5.0)))
    node._dispatch((DATA, b"s1", _frames(role, 0, 5.0)))
    clock[0] = t0 + 4.75
    node._dispatch((DATA, b"s1", _frames(role, 1, 5.0)))
    node._dispatch((DATA, b"s1", _frames(role, 1, 5.0)))
    node._dispatch((DATA, b"s1", _frames(role, 0, 5.0)))
    assert out.counters["duplicate_task"] == 3
    assert out.counters["tasks_in"] == 2 and len(role.reissues) == 1
