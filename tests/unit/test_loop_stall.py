"""A node that was not running (SIGSTOP, a suspended VM) does not take its own silence for its
neighbours': on waking it declared every neighbour gone and its next stages unreachable, and
told the sources so, though nobody had left. A real worker node, its sockets never bound."""

from __future__ import annotations

import pytest

from tests.unit.built_worker import built_worker


@pytest.fixture
def node(tmp_path):
    built = built_worker(str(tmp_path))
    built.node._publish_heartbeat = lambda: None  # nothing is bound to publish on
    yield built.node
    built.close()


def test_a_stall_of_its_own_does_not_make_neighbours_gone(node):
    """Rule: a poll that returns more than a heartbeat interval after the loop asked to wake
    moves every last-heard time on by the time lost; the liveness check then keeps the
    neighbours, and a data connection dropping just after (ZeroMQ's own heartbeats timed out
    over the same stall) does not make its neighbour gone; a neighbour silent while the node
    ran is still found gone, and a connection dropping later still makes its neighbour gone."""
    from agent.net.transport import LINK_DOWN

    cfg = node.cfg
    limit = cfg.neighbour_timeout_rounds * cfg.heartbeat_interval_s
    now = node.clock()
    node.view.alive.update({"s1", "w2a"})
    # heard just before the node stopped for ten timeouts; the poll returns that late
    node.last_heard.update({"s1": now - 10 * limit - 0.1, "w2a": now - 10 * limit - 0.1})
    node.forgive_stall(now - 10 * limit, now - 10 * limit)
    node._heartbeat(node.clock())
    node._dispatch((LINK_DOWN, "w2a", None))
    assert node.view.alive == {"s1", "w2a"}
    node._stall_grace_until = node.clock()  # the grace over
    node.last_heard["s1"] = node.clock() - 2 * limit  # silent while the node ran
    t = node.clock()
    node.forgive_stall(t, t)  # on time: nothing forgiven
    node._heartbeat(node.clock())
    node._dispatch((LINK_DOWN, "w2a", None))
    assert node.view.alive == set()


def test_without_the_stall_the_same_silence_is_a_neighbour_gone(node):
    """The check above is the stall's doing: the same last-heard times, judged without it,
    make both neighbours gone."""
    cfg = node.cfg
    limit = cfg.neighbour_timeout_rounds * cfg.heartbeat_interval_s
    now = node.clock()
    node.view.alive.update({"s1", "w2a"})
    node.last_heard.update({"s1": now - 10 * limit, "w2a": now - 10 * limit})
    node._heartbeat(node.clock())
    assert node.view.alive == set()
