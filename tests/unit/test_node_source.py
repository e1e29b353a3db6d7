"""The source side with its real book, records file and outbox (the transport is built but
never bound): admission answers with a reason, and only a RESULT echoing the task's token is
recorded."""

from __future__ import annotations

import json

import pytest

from agent.policies.api import AgentPolicy
from agent.protocol import wire
from agent.protocol.wire import Kind
from tests.unit.source_parts import source_parts


@pytest.fixture
def source(tmp_path):
    parts = source_parts(tmp_path, AgentPolicy({}, {}))
    parts.view.alive.add("w1")
    yield parts.side, parts.out, parts.records
    parts.close()


def _result(task_id, token):
    return wire.Message(Kind.RESULT, "w1", fields={
        "id": task_id, "attempt": 0, "source": "s1", "exit_stage": 1, "cls": 2,
        "confidence": 0.9, "worker": "w1", "hops": 1, "resends": 0, "created": 0.0,
        "token": token})


def _records(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_only_a_result_with_the_tasks_token_is_recorded(source):
    """Task ids are unpredictable (64 random bits) and a RESULT must echo the TASK's secret
    token: the right id with a wrong token is dropped as forged_result, never recorded."""
    side, out, records = source
    x, label = side.replay.sample(side.rng)
    side._create_task(x, label)
    (task_id,) = side.book.pending
    assert len(task_id.rsplit("-", 1)[1]) == 16  # 8 random bytes, hex
    (item,) = list(out.items.values()) or out.waiting
    assert item.fields["token"] == side.tokens[task_id] and item.fields["ttl_s"] > 0
    side.on_data(b"w1", _result(task_id, "0" * 16))
    assert out.counters["drop_forged_result"] == 1 and side.book.pending
    side.on_data(b"w1", _result(task_id, item.fields["token"]))
    side.flush()
    (rec,) = _records(records)
    assert rec["id"] == task_id and rec["status"] == "completed"
    side.on_data(b"w1", _result(task_id, item.fields["token"]))  # a second answer: not recorded
    assert out.counters["duplicate_result"] == 1


def test_a_task_the_fleet_cannot_take_is_rejected_at_once_with_its_reason(source):
    """No route (view.no_route set by the loop) or every stage-1 successor refusing: the task
    is recorded as rejected, reason no_route / overload, and nothing is sent."""
    side, out, records = source
    x, label = side.replay.sample(side.rng)
    out.view.no_route = 2
    side._create_task(x, label)
    out.view.no_route = 0
    out.view.unavailable["w1"] = out.clock() + 60.0
    side._create_task(x, label)
    side.flush()
    assert [(r["status"], r["reason"]) for r in _records(records)] == [
        ("rejected", "no_route"), ("rejected", "overload")]
    assert not out.items and not out.waiting and not side.book.pending


def test_each_result_of_a_results_batch_is_acked_checked_and_recorded_on_its_own(source):
    """A RESULTS batch is taken result by result: every key is ACKed (in one ACK for the
    sender), a result with its task's token is recorded, a forged one is dropped and a repeat
    counted as a duplicate, exactly as if each had come in a RESULT of its own."""
    side, out, records = source
    for _ in range(2):
        x, label = side.replay.sample(side.rng)
        side._create_task(x, label)
    a, b = sorted(side.book.pending)
    items = [dict(_result(a, side.tokens[a]).fields), dict(_result(b, "0" * 16).fields),
             dict(_result(a, side.tokens[a]).fields)]
    side.on_data(b"w1", wire.Message(Kind.RESULTS, "w1", fields={"items": items}))
    assert out._replies == {(b"w1", ""): ["R:%s#0" % a, "R:%s#0" % b, "R:%s#0" % a]}
    assert out.counters["drop_forged_result"] == 1 and out.counters["duplicate_result"] == 1
    side.flush()
    assert [(r["id"], r["status"]) for r in _records(records)] == [(a, "completed")]
    assert list(side.book.pending) == [b]  # still waiting for its genuine result


def test_a_task_rejected_for_no_route_does_not_use_up_an_admission_place(tmp_path):
    """MDI-Exit admission spaces admitted tasks by mu: a task the source rejects for its own
    reason (no route) is not admitted, so the next arrival half a mu later is admitted, not
    rejected as ``admission``."""
    from agent.policies.registry import make_policy

    pol = make_policy("mdi-exit", {1: 0.7}, {"admission_control": True}, seed=0)
    parts = source_parts(tmp_path, pol)
    try:
        side, view = parts.side, parts.view
        view.alive.add("w1")
        t = [100.0]
        side.clock = lambda: t[0]
        mu = pol.admission.interarrival_s
        x, _ = side.replay.sample(side.rng)
        view.no_route = 1
        side._create_task(x.copy(), -1)
        view.no_route = 0
        t[0] += mu / 2
        side._create_task(x.copy(), -1)
        assert side.rejected == {"no_route": 1} and len(side.book.pending) == 1
    finally:
        parts.close()


def test_a_client_answer_goes_out_after_its_record_line_is_written(source):
    """Rule: a local client's answer leaves in the loop pass that completed its task, and only
    once the task's record line is in records.jsonl, so a SIGKILL can never leave a client
    holding a `completed` answer that the restarted source records as lost (crash); the
    periodic flush (records_flush_interval_s) had left up to a second of answered tasks
    unwritten."""
    side, out, records = source
    sent = []
    out.answer_client = lambda identity, fields: sent.append(
        (identity, fields["outcome"], [r["status"] for r in _records(records)]))
    x, label = side.replay.sample(side.rng)
    side._create_task(x, label, client=(b"c1", "mine-1"))
    (task_id,) = side.book.pending
    side.on_data(b"w1", _result(task_id, side.tokens[task_id]))
    assert sent == [] and _records(records) == []  # nothing yet: the pass is not over
    side.on_clock(out.clock())
    assert sent == [(b"c1", "completed", ["completed"])]


def test_arrivals_and_images_do_not_depend_on_the_policys_own_draws(tmp_path):
    """Rule: a source's arrival times and replay rows come from a generator of their own,
    seeded by its config: a policy that draws more random numbers as it routes (MDI-Exit's
    neighbour choice) sees the same tasks as one that draws fewer (they shared one generator,
    and only 17 of 68 images matched between two policies' runs)."""
    rows = []
    for extra_draws in (0, 3):
        parts = source_parts(tmp_path / str(extra_draws), AgentPolicy({}, {}))
        parts.view.alive.add("w1")
        side, got = parts.side, []
        now = 0.0
        for _ in range(20):
            now = max(now, side.next_arrival)
            side.on_clock(now)
            for _ in range(extra_draws):
                side.policy.rng.random()  # a policy's own decisions
            got.append(now)
        rows.append((got, [t.row for t in side.book.pending.values()]))
        parts.close()
    assert rows[0] == rows[1] and len(rows[0][1]) == 20
