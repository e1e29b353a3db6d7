"""Data connections' drops and returns are logged bounded per peer, and the last line about a
peer always tells its present state (agent.node.linklog)."""

import logging

from agent.node.linklog import LinkLog


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if "data connection" in r.getMessage()]


def test_the_first_change_is_logged_at_once_and_a_flap_costs_one_line_a_minute(caplog):
    caplog.set_level(logging.INFO)
    now = [0.0]
    links = LinkLog(interval_s=60.0, clock=lambda: now[0])
    links.event("w2", up=False)
    assert _lines(caplog) == ["data connection to w2 dropped"]
    for i in range(99):  # ten a second for ten seconds, as a mismatched CURVE key does
        now[0] += 0.1
        links.event("w2", up=i % 2 == 0)
    links.flush()
    assert len(_lines(caplog)) == 1 and links.pending() == ["w2"]
    now[0] = 60.0
    links.flush()
    assert _lines(caplog)[1:] == [
        "data connection to w2 up (99 changes since the last line: dropped 49, up 50)"]
    assert links.pending() == []


def test_a_change_held_back_is_logged_with_the_present_state_when_due(caplog):
    """dropped at once; up and dropped again within the minute held back; the flush after the
    interval says dropped, the state the peer is in."""
    caplog.set_level(logging.INFO)
    now = [0.0]
    links = LinkLog(interval_s=60.0, clock=lambda: now[0])
    links.event("w2", up=False)
    now[0] = 1.0
    links.event("w2", up=True)
    now[0] = 2.0
    links.event("w2", up=False)
    now[0] = 61.0
    links.event("w3", up=False)  # another peer has its own limit
    links.flush()
    assert _lines(caplog) == [
        "data connection to w2 dropped",
        "data connection to w3 dropped",
        "data connection to w2 dropped (2 changes since the last line: dropped 1, up 1)"]


def test_changes_held_back_are_logged_when_the_node_stops(caplog):
    caplog.set_level(logging.INFO)
    now = [0.0]
    links = LinkLog(interval_s=60.0, clock=lambda: now[0])
    links.event("w2", up=False)
    links.event("w2", up=True)
    links.flush()
    assert _lines(caplog) == ["data connection to w2 dropped"]
    links.flush(final=True)
    assert _lines(caplog)[-1] == "data connection to w2 up"

