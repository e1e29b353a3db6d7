"""A node that was not running (SIGSTOP, a suspended VM) does not take its own silence for its
neighbours': on waking it declared every neighbour gone and its next stages unreachable, and
told the sources so, though nobody had left. A real worker node, its sockets never bound, on
a clock of the test's."""

from __future__ import annotations

import pytest

from agent.net.transport import LINK_DOWN
from tests.unit.built_worker import built_worker


def on_test_clock(built):
    """``built``'s node on a clock of the test's (``node.t[0]``), its neighbours s1 and w2a
    alive and heard at its start, its loop's first poll returned."""
    node = built.node
    node._publish_heartbeat = lambda: None  # nothing is bound to publish on
    t = [1000.0]
    node.clock = lambda: t[0]
    node.t = t
    node.view.alive.update({"s1", "w2a"})
    node.last_heard.update({"s1": t[0], "w2a": t[0]})
    node.note_awake()  # the loop's first poll returned
    return node


@pytest.fixture
def node(tmp_path):
    built = built_worker(str(tmp_path))
    yield on_test_clock(built)
    built.close()


def _limit(node):
    return node.cfg.neighbour_timeout_rounds * node.cfg.heartbeat_interval_s


def test_a_stop_during_the_poll_is_no_neighbours_silence(node):
    """Rule: a poll that returns ten timeouts after the wait it asked for moves the last-heard
    times on by the time lost: the liveness check keeps both neighbours, and a data connection
    dropping just after (ZeroMQ's heartbeats timed out over the stall) makes none gone."""
    node.t[0] += 0.1 + 10 * _limit(node)  # asked to wait 0.1 s
    node.note_awake(0.1)
    node._heartbeat(node.clock())
    node._dispatch((LINK_DOWN, "w2a", None))
    assert node.view.alive == {"s1", "w2a"}


def test_a_stop_during_the_passs_work_is_no_neighbours_silence(node):
    """Rule: a stop after the poll returned (while handling its messages) is found by the
    liveness check itself, before it judges anyone."""
    node.t[0] += 0.05
    node.note_awake(0.05)
    node.t[0] += 10 * _limit(node)  # stopped while dispatching
    node._heartbeat(node.clock())
    assert node.view.alive == {"s1", "w2a"}


def test_a_neighbour_silent_while_the_node_ran_is_still_gone(node):
    """Rule: the forgiveness covers only time the node did not listen: a slow loop (every
    pass a little over a heartbeat interval) still finds a neighbour that went silent gone
    within a few timeouts, and a connection dropping outside a stall's grace still makes its
    neighbour gone."""
    hb = node.cfg.heartbeat_interval_s
    for _ in range(int(10 * _limit(node) / hb)):
        node.t[0] += 1.2 * hb  # each pass 20% over an interval
        node.note_awake()
        node.last_heard["s1"] = node.t[0]  # s1 keeps talking, w2a is silent
        node._heartbeat(node.clock())
    assert node.view.alive == {"s1"}
    node.t[0] += 0.1
    node.note_awake(0.1)
    node._dispatch((LINK_DOWN, "s1", None))
    assert node.view.alive == set()
