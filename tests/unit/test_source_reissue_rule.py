"""The source's rule at a task's result deadline: a new attempt while attempts are left, with
or without a route on (a restart of a stage's only worker looks like a stage gone for good
then); lost at the last attempt's deadline, reason ``no_route`` when no route is on then,
``deadline`` otherwise."""

from __future__ import annotations

import json

import pytest

from tests.unit.source_parts import serving_source


@pytest.fixture
def parts(tmp_path):
    yield from serving_source(tmp_path)


def _one_task(side):
    x, label = side.replay.sample(side.rng)
    side._create_task(x, label)
    (task_id,) = side.book.pending
    return task_id, side.book.pending[task_id]


def _records(parts):
    parts.side.flush()
    with open(parts.records) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("no_route", [0, 2], ids=["route_on", "no_route_to_stage_2"])
def test_a_deadline_re_issues_the_task_while_attempts_are_left(parts, no_route):
    """Rule: each deadline before the last gives a new attempt (its TASK in the outbox, counted
    ``reissued``), whether or not a route is on; no record is written for the task yet."""
    side, out = parts.side, parts.out
    task_id, task = _one_task(side)
    out.view.no_route = no_route
    for attempt in range(1, parts.cfg.max_attempts):
        side.on_timer(task_id, task.result_due)
        assert task.attempt == attempt and task_id in side.book.pending
    assert out.counters["reissued"] == parts.cfg.max_attempts - 1
    assert out.held()[0] == 1  # the latest issue only: each earlier one left custody
    assert _records(parts) == []


@pytest.mark.parametrize("no_route,reason", [(0, "deadline"), (2, "no_route")])
def test_the_last_deadline_records_the_task_lost_with_the_route_state(parts, no_route, reason):
    """Rule: the last attempt's deadline records the task lost, reason ``no_route`` when no
    route is on at that moment (the operator's cue: a stage has no worker), else ``deadline``;
    its TASK leaves the outbox."""
    side, out = parts.side, parts.out
    task_id, task = _one_task(side)
    for _ in range(1, parts.cfg.max_attempts):
        side.on_timer(task_id, task.result_due)
    out.view.no_route = no_route
    side.on_timer(task_id, task.result_due)
    assert task_id not in side.book.pending and out.held() == (0, 0)
    (rec,) = _records(parts)
    assert (rec["id"], rec["status"], rec["reason"]) == (task_id, "lost", reason)
    assert rec["attempts"] == parts.cfg.max_attempts
