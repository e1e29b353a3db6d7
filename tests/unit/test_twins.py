"""Two agents running with one node id are told apart from a restart (agent.node.twins)."""

from __future__ import annotations

import logging

from agent.node.twins import TwinWatch


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if "two agents are running" in r.getMessage()]


def test_a_restart_is_not_a_twin_even_while_the_old_heartbeats_are_in_flight(caplog):
    now = [0.0]
    w = TwinWatch(grace_s=2.0, clock=lambda: now[0])
    w.connected("w1", "aaaa")
    for _ in range(5):
        now[0] += 0.5
        assert not w.heard("w1", "aaaa")
    w.connected("w1", "bbbb")  # restarted: its new process opens a new data connection
    now[0] += 0.4
    assert not w.heard("w1", "aaaa")  # the old process's last heartbeat, still in flight
    for _ in range(10):
        now[0] += 0.5
        assert not w.heard("w1", "bbbb")
    assert not _warnings(caplog)


def test_heartbeats_from_one_process_and_the_data_connection_from_another_are_twins(caplog):
    """The copy connected its data socket (and took the id's connection over); the original
    still publishes at the configured address: after the grace, every heartbeat shows it, and
    the warning comes once a minute at most, naming both runs."""
    caplog.set_level(logging.WARNING)
    now = [0.0]
    w = TwinWatch(grace_s=2.0, clock=lambda: now[0])
    w.connected("w1", "aaaa")
    now[0] = 10.0
    w.connected("w1", "cccc")  # the copy
    clashes = []
    for _ in range(200):  # 100 s of heartbeats from the original
        now[0] += 0.5
        clashes.append(w.heard("w1", "aaaa"))
    assert clashes[:3] == [False] * 3 and all(clashes[4:])
    lines = _warnings(caplog)
    assert len(lines) == 2
    assert "node w1" in lines[0] and "run aaaa" in lines[0] and "run cccc" in lines[0]
    assert "(and 119 heartbeats since the last line)" in lines[1]


def test_agents_that_send_no_run_are_never_taken_for_twins():
    now = [0.0]
    w = TwinWatch(grace_s=2.0, clock=lambda: now[0])
    w.connected("w1", "")
    now[0] = 10.0
    assert not w.heard("w1", "aaaa")
    w.connected("w1", "aaaa")
    now[0] = 20.0
    assert not w.heard("w1", "")
