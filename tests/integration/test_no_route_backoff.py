"""A sender's no_route hold about a source gone here grows while the source stays gone, so the
source's held tasks are not refused again every heartbeat interval, and ends when the source
is back, whose tasks then go on (agents over ZeroMQ)."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from .agent_cluster import Cluster, build_two_stage_bundle, stage_flops

TIMEOUT_S = 120.0
S1_TASKS = 60
# w2's refusals are counted over WINDOW_S, from SETTLE_S after its first one: the holds then
# last about 3 s and more (0.2 s doubled per offer, NO_ROUTE_HOLD_MAX_S at most), so each of
# s1's held tasks is offered (and refused) two or three times at most in the window; a hold of
# one heartbeat interval (0.2 s) refused them 50-80 times a second (300-480 in the window)
SETTLE_S, WINDOW_S = 3.0, 6.0
MAX_REFUSALS = 2 * S1_TASKS


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("no-route-backoff")))


def test_tasks_of_a_source_gone_for_good_are_refused_a_few_times_not_every_heartbeat(
        bundle, tmp_path):
    """Rule: stage-2 worker w2, with no route back to killed source s1, refuses s1's tasks
    no_route for that source alone; stage-1 worker w1, which holds them and hears s1 gone too,
    holds w2 off for them twice as long at each refusal, so over WINDOW_S w2 refuses at most
    MAX_REFUSALS (far fewer than one per held task each heartbeat interval). s1 restarted
    with the same id and state directory is back: every task it makes ends completed or
    rejected with a reason, none lost, and w1's held tasks of s1 all leave it."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "s2": 0, "w1": 1, "w2": 2},
                policy="fixed", result_timeout_s=60.0)  # s1's tasks outlive the window
    try:
        c.start("w1", emulate_capacity_flops=stage_flops(bundle, 1) * 10.0)  # 100 ms a task
        c.start("w2")  # s2 never runs: w2 has two sources, one (s1) to be cut off from
        c.start("s1", arrival_rate_tasks_s=40.0, max_tasks=S1_TASKS)
        c.wait_for(lambda: c.tasks("s1").get("created") == S1_TASKS
                   and (c.stats("w1") or {}).get("input_queue", 0) >= 10, TIMEOUT_S,
                   "s1 to have created its tasks, some queued at w1")
        c.kill("s1")
        c.wait_for(lambda: c.counters("w2").get("refused_no_route", 0) > 0, TIMEOUT_S,
                   "w2 to refuse s1's tasks (no route back to s1)")
        time.sleep(SETTLE_S)
        before = c.counters("w2").get("refused_no_route", 0)
        time.sleep(WINDOW_S)
        refused = c.counters("w2").get("refused_no_route", 0) - before
        w1_held = (c.stats("w1") or {}).get("output_queue", 0)

        os.remove(os.path.join(str(tmp_path), "s1", "stats.json"))  # the killed run's
        since = time.time()
        c.start("s1", arrival_rate_tasks_s=5.0, max_tasks=10)
        c.wait_for(lambda: c.finished("s1", 10), TIMEOUT_S, "restarted s1 to finish its tasks")
        c.wait_for(lambda: (c.stats("w1") or {}).get("output_queue", 1) == 0, TIMEOUT_S,
                   "w1's held tasks of s1 to leave it once s1 is back")
        tasks, w1 = c.tasks("s1"), c.counters("w1")
    finally:
        c.stop_all()
    recs = c.made_since("s1", since)  # every line written once s1 has stopped
    seen = "w2 refused %d in %.0f s (w1 held %d of s1's); restarted s1 %s, records %s; w1 %s" % (
        refused, WINDOW_S, w1_held, {k: tasks.get(k) for k in ("created", "completed",
                                                               "rejected", "lost")},
        sorted(Counter((r["status"], r.get("reason")) for r in recs).items()),
        {k: v for k, v in w1.items() if k.startswith(("refused", "drop", "sent"))})
    assert refused <= MAX_REFUSALS, seen
    assert w1_held > 0, seen  # s1's tasks still held there: the window counted their refusals
    assert tasks.get("lost", 0) == 0 and len(recs) == 10, seen
    assert all(r["status"] == "completed" or (r["status"] == "rejected" and r.get("reason"))
               for r in recs), seen
    assert sum(r["status"] == "completed" for r in recs) >= 5, seen
