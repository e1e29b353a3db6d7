"""Two agents under one node id, told apart by the run id in their handshake (agent.net.twins)."""

import logging

from agent.net.twins import MAX_IDS, MAX_RUNS, Twins, new_run_id


def _twins(now, **kw):
    return Twins("own", clock=lambda: now[0], **kw)


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if "two agents" in r.getMessage()]


def test_a_restarted_sender_is_not_a_twin(caplog):
    """Rule: a new run id under a node id (a restart: the old one never comes back), even
    several in a row, warns nothing and counts nothing."""
    now = [0.0]
    t = _twins(now)
    for run in ("a", "a", "b", "b", "c"):
        now[0] += 1.0
        assert t.observe("s1", run, "10.0.0.5") is False
    assert t.seen == 0 and _lines(caplog) == []


def test_a_replaced_run_that_comes_back_is_a_second_agent_logged_with_both_hosts(caplog):
    """Rule: a run id that had been replaced under a node id and sends again within window_s
    means two processes take turns: counted each time, logged at once naming both runs and
    hosts, then at most once per log_interval_s per node id with the returns since."""
    caplog.set_level(logging.WARNING)
    now = [0.0]
    t = _twins(now, window_s=120.0, log_interval_s=60.0)
    assert not t.observe("s1", "a", "10.0.0.5")
    now[0] = 1.0
    assert not t.observe("s1", "b", "10.0.0.9")
    now[0] = 2.0
    assert t.observe("s1", "a", "10.0.0.5")
    lines = _lines(caplog)
    assert len(lines) == 1 and "'s1'" in lines[0]
    assert "run a at 10.0.0.5" in lines[0] and "run b at 10.0.0.9" in lines[0]
    for i in range(4):  # they go on taking turns
        now[0] = 3.0 + i
        assert t.observe("s1", "b" if i % 2 == 0 else "a", "")
    assert t.seen == 5 and len(_lines(caplog)) == 1
    now[0] = 62.5
    assert t.observe("s1", "b", "10.0.0.9")
    lines = _lines(caplog)
    assert len(lines) == 2 and "(4 more times since the last line)" in lines[1]
    assert t.observe("s2", "x", "") is False  # another id: its own history


def test_a_run_back_after_the_window_counts_as_a_restart(caplog):
    """Rule: a run id that comes back only after window_s is not taken for a twin (its last
    sign of life is too old to tell two live processes from a restart)."""
    now = [0.0]
    t = _twins(now, window_s=10.0)
    t.observe("s1", "a")
    now[0] = 5.0
    t.observe("s1", "b")
    now[0] = 30.0
    assert t.observe("s1", "a") is False
    assert t.seen == 0 and _lines(caplog) == []


def test_messages_without_a_run_id_are_not_observed():
    """Rule: a sender that sets no run id (an agent of an older version) is never reported."""
    t = Twins("own")
    assert not t.observe("s1", None) and not t.observe("s1", "") and t.seen == 0


def test_memory_stays_bounded_by_node_ids_and_runs_per_id():
    """Rule: however many node ids and run ids are offered (an unauthenticated endpoint takes
    any), at most MAX_IDS ids and MAX_RUNS runs per id are remembered."""
    now = [0.0]
    t = _twins(now)
    for i in range(5 * MAX_IDS):
        t.observe("n%d" % i, "r")
    assert len(t._ids) == MAX_IDS
    for i in range(100):
        now[0] += 0.01
        t.observe("s1", "r%d" % i)
    assert len(t._ids["s1"][1]) <= MAX_RUNS


def test_run_ids_differ_per_process_call():
    """Each process gets a fresh random run id (16 hex digits)."""
    a, b = new_run_id(), new_run_id()
    assert a != b and len(a) == 16 and int(a, 16) >= 0
