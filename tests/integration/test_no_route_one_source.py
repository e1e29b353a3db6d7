"""A worker of one source names that source when it refuses a task with no route back to it, so
the sender's hold about a source gone there grows as it does for a worker of several sources,
instead of a whole-node hold of one heartbeat interval under which every held task was offered
and refused again some 80 times a second (agents over ZeroMQ)."""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from .agent_cluster import Cluster, build_two_stage_bundle, stage_flops

TIMEOUT_S = 120.0
S1_TASKS = 60
# w2's refusals are counted over WINDOW_S, from SETTLE_S after its first one: held off for s1's
# tasks with a hold that doubles per refusal (NO_ROUTE_HOLD_MAX_S at most), each of s1's tasks
# held at w1 is offered (and refused) a few times at most in the window; held one heartbeat
# interval (0.2 s) at a time, they were refused some 80 times a second (about 1200 here)
SETTLE_S, WINDOW_S = 5.0, 15.0
MAX_REFUSALS = 4 * S1_TASKS


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("no-route-one-source")))


def test_a_worker_of_one_source_cut_off_from_it_is_not_offered_its_tasks_every_heartbeat(
        bundle, tmp_path):
    """Rule: stage-2 worker w2, whose one source s1 is killed, refuses s1's tasks no_route
    naming s1, so stage-1 worker w1, which holds them and hears s1 gone too, holds w2 off for
    them twice as long at each refusal: over WINDOW_S w2 refuses at most MAX_REFUSALS (far
    fewer than one per held task each heartbeat interval). s1 restarted with the same id and
    state directory is served at once: every task it makes ends completed or rejected with a
    reason, none lost, and w1's held tasks of the killed run all leave it."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2},
                policy="fixed", result_timeout_s=60.0)  # s1's tasks outlive the window
    try:
        c.start("w1", emulate_capacity_flops=stage_flops(bundle, 1) * 10.0)  # 100 ms a task
        c.start("w2")  # one source: s1
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
        {k: v for k, v in w1.items() if k.startswith(("refused", "drop", "sent", "expired"))})
    assert refused <= MAX_REFUSALS, seen
    assert w1_held > 0, seen  # s1's tasks still held there: the window counted their refusals
    assert tasks.get("lost", 0) == 0 and len(recs) == 10, seen
    assert all(r["status"] == "completed" or (r["status"] == "rejected" and r.get("reason"))
               for r in recs), seen
    assert sum(r["status"] == "completed" for r in recs) >= 5, seen
