"""A kill for good (kind kill, no duration) in the delay-per-phase table: its worker is down
from the kill until the load's end, so the tasks created meanwhile are "during" it, none are
"after", and the recovery column says "down for good" (it was a zero-length fault, every task
after the kill counted as "after" it)."""

from __future__ import annotations

import json

from agent.testbed.faults import Fault
from agent.testbed.inject import FaultRunner, add_fault_phases
from agent.testbed.phases import FOR_GOOD_LABEL, phase_lines
from agent.testbed.report import read_records, summarise_records
from tests.unit.test_testbed_fault_log import _Agents  # records the runner's kills and starts

T0 = 100.0  # the load's start (monotonic)
WARMUP_S, DURATION_S = 0.5, 3.0  # the load is planned to end at T0 + 3.5


def _records(tmp_path):
    """A source's records file: a task created every 0.25 s over the load, each 50 ms, the
    last one at 3.5 s (a Poisson source's last tasks may come after the planned end)."""
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps({
        "id": "cam-%d" % i, "source": "cam", "status": "completed",
        "created_mono": T0 + 0.25 * i, "finished_mono": T0 + 0.25 * i + 0.05,
        "created_wall": 1e9 + 0.25 * i, "finished_wall": 1e9 + 0.25 * i + 0.05,
        "delay_s": 0.05, "exit_stage": 2, "cls": 0, "label": 0, "correct": True,
        "confidence": 0.9, "hops": 2, "resends": 0, "attempts": 1, "worker": "w2",
        "reason": None}) + "\n" for i in range(15)))
    return {"cam": str(path)}


def _run(tmp_path, fault):
    """One rate's result with ``fault`` injected at 1 s, as the testbed fills it."""
    now = [T0]
    runner = FaultRunner([fault], _Agents(), clock=lambda: now[0])
    runner.start()
    now[0] = T0 + 1.0
    runner.poll()
    now[0] = T0 + 2.0
    runner.poll()
    now[0] = T0 + 4.0  # the drain is over
    runner.finish()
    records = _records(tmp_path)
    result = summarise_records(read_records(records["cam"]), "cf", 4.0, False,
                               duration_s=DURATION_S)
    add_fault_phases(result, runner, records, WARMUP_S)
    return result, runner


def test_a_kill_for_good_keeps_its_worker_down_in_the_phases_until_the_loads_end(tmp_path):
    """Rule: the tasks created from the kill (1 s) until the load's end (its last task, at
    3.5 s) are "during" it, none "after", and the table's recovery column says the worker was down for good; the
    fault log still says it ended when it began (down from then on) and marks it for good."""
    result, runner = _run(tmp_path, Fault(1.0, 0.0, "kill", "w1"))
    assert runner.windows() == [(T0 + 1.0, T0 + 1.0)]  # the log itself is as before
    assert [result.phases[p]["tasks"] for p in ("before", "during", "after")] == [2, 11, 0]
    assert result.recovery_s is None
    assert result.faults[0]["for_good"] is True
    assert result.faults[0]["ended_s"] == result.faults[0]["began_s"] == 1.0
    head, table = phase_lines([result])
    assert "a kill for good lasts until the load's end" in head
    assert table.splitlines()[1].endswith(FOR_GOOD_LABEL)


def test_a_kill_with_a_duration_ends_its_phase_when_its_worker_restarts(tmp_path):
    """Rule: a kill with a duration keeps its own end (1 s to 2 s): the tasks after it are
    "after" and the recovery time is measured from its end."""
    result, _ = _run(tmp_path, Fault(1.0, 1.0, "kill", "w1"))
    assert [result.phases[p]["tasks"] for p in ("before", "during", "after")] == [2, 4, 7]
    assert result.recovery_s == 0.0
    assert FOR_GOOD_LABEL not in phase_lines([result])[1]


def test_a_log_from_before_the_flag_is_read_as_a_kill_for_good_by_its_label(tmp_path):
    """Rule: a run folder's older fault log (no ``for_good`` key) gives the same phases: a kill
    whose label says "for 0s" is a kill for good."""
    result, runner = _run(tmp_path, Fault(1.0, 0.0, "kill", "w1"))
    for e in runner.log:
        del e["for_good"]
    add_fault_phases(result, runner, _records(tmp_path), WARMUP_S)
    assert [result.phases[p]["tasks"] for p in ("before", "during", "after")] == [2, 11, 0]
    assert phase_lines([result])[1].splitlines()[1].endswith(FOR_GOOD_LABEL)
