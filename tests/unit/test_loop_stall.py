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
    """Rule: a pass that comes more than a heartbeat interval after the time the loop asked to
    wake moves every last-heard time on by the time lost; the liveness check then keeps the
    neighbours; a neighbour silent while the node ran is still found gone."""
    cfg = node.cfg
    limit = cfg.neighbour_timeout_rounds * cfg.heartbeat_interval_s
    now = node.clock()
    node.view.alive.update({"s1", "w2a"})
    node.last_heard.update({"s1": now - 0.1, "w2a": now - 0.1})
    stalled = now - 10 * limit  # the loop asked to wake then, and ran again only now
    node.forgive_stall(stalled)
    node._heartbeat(node.clock())
    assert node.view.alive == {"s1", "w2a"}
    node.last_heard["w2a"] = node.clock() - 2 * limit  # silent while the node ran
    node.forgive_stall(node.clock())  # on time: nothing forgiven
    node._heartbeat(node.clock())
    assert node.view.alive == {"s1"}


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
