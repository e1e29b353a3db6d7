"""A SIGHUP to a serving agent is said and ignored: the agent has no reload, and a death by
SIGHUP (its default action) ended it undrained, which systemd's Restart=on-failure takes for a
clean stop. A real source and worker on loopback."""

from __future__ import annotations

import os
import signal

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_sighup_is_logged_and_ignored_and_sigterm_still_drains(bundle, tmp_path):
    """Rule: after SIGHUP the source keeps serving (its tasks keep completing) and logs one
    WARNING saying it has no reload; SIGTERM then stops it cleanly (exit 0, every task
    recorded once)."""
    c = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2}, policy="fixed",
                thresholds=(0.6, 1.0))
    try:
        c.start("w1")
        c.start("w2")
        c.start("s1", arrival_rate_tasks_s=20.0, max_tasks=60)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 5, 90, "5 tasks answered")
        os.kill(c.procs["s1"].pid, signal.SIGHUP)
        c.wait_for(lambda: "SIGHUP ignored: the agent has no reload" in c.tail("s1", 200), 30,
                   "the SIGHUP warning")
        c.wait_for(lambda: c.finished("s1", 60), 90, "60 tasks answered after the SIGHUP")
        assert c.procs["s1"].poll() is None
    finally:
        c.stop_all()
    assert c.procs["s1"].returncode == 0
    recs = c.records("s1")
    assert len(recs) == 60 and len({r["id"] for r in recs}) == 60
