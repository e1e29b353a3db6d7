"""A source whose routing favours a successor not up yet waits for it (real agents on loopback).

The source routes ``{w1a: 1, w1b: 0}`` (the ``fixed`` policy's row). Tasks it makes before it
has heard ``w1a`` wait for it (``NodeView.joining``) instead of going to ``w1b``, which its
routing avoids; ``w1a`` is awaited for its silence limit from the source's start
(``neighbour_timeout_rounds`` x ``heartbeat_interval_s``), after which the tasks go on to
``w1b``, so a successor that never comes costs that wait and loses nothing.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.agent_cluster import Cluster, build_two_stage_bundle

ROUTING = {"routing": {"w1a": 1.0, "w1b": 0.0}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _cluster(tmp_path, bundle):
    return Cluster(str(tmp_path), bundle, {"s1": 0, "w1a": 1, "w1b": 1, "w2": 2},
                   policy="fixed", result_timeout_s=60.0)


def _start_w1b_and_w2(c):
    c.start("w1b")
    c.start("w2")
    c.wait_for(lambda: c.alive_at("w1b", ["w2"]), 60, "w1b to hear w2")


def _start_source(c, rounds, tasks):
    c.start("s1", arrival_rate_tasks_s=20.0, max_tasks=tasks, neighbour_timeout_rounds=rounds,
            policy_knobs=ROUTING)


def test_tasks_made_before_the_favoured_successor_is_heard_wait_for_it(bundle, tmp_path):
    """w1b and w2 up, then the source (its silence limit 30 s), then w1a a second later: no
    task goes to w1b, every one is answered, and the first ones waited for w1a."""
    c = _cluster(tmp_path, bundle)
    try:
        _start_w1b_and_w2(c)
        _start_source(c, rounds=150, tasks=30)
        c.wait_for(lambda: c.alive_at("s1", ["w1b"]), 60, "s1 to hear w1b")
        started = time.time()
        time.sleep(1.0)  # the source makes tasks meanwhile, with only w1b to send them to
        c.start("w1a")
        c.wait_for(lambda: c.finished("s1", 30), 120, "30 tasks answered")
    finally:
        c.stop_all()
    counters = c.counters("s1")
    assert counters.get("sent_to_w1b", 0) == 0, counters
    recs = c.records("s1")
    assert len(recs) == 30 and all(r["status"] == "completed" for r in recs)
    early = [r for r in recs if r["created_wall"] < started + 0.5]
    assert early and all(r["finished_wall"] > started + 1.0 for r in early), early


def test_a_favoured_successor_that_never_comes_is_waited_for_its_silence_limit_only(
        bundle, tmp_path):
    """w1a never starts; the source's silence limit is 2 s: its tasks wait about that long
    from its start, then go to w1b, and every one is answered."""
    c = _cluster(tmp_path, bundle)
    try:
        _start_w1b_and_w2(c)
        _start_source(c, rounds=10, tasks=20)
        c.wait_for(lambda: c.finished("s1", 20), 120, "20 tasks answered")
    finally:
        c.stop_all()
    counters = c.counters("s1")
    assert counters.get("sent_to_w1b", 0) == 20 and not counters.get("sent_to_w1a"), counters
    recs = sorted(c.records("s1"), key=lambda r: r["created_mono"])
    assert len(recs) == 20 and all(r["status"] == "completed" for r in recs)
    # the first task, made within the first tenths of a second, waited out most of the 2 s
    assert recs[0]["delay_s"] >= 1.0, recs[0]
