"""``ReachWatch``: a node that hears its peers while none connects to it says so once."""

from __future__ import annotations

from agent.config.node import NodeConfig
from agent.node.reach import ReachWatch


def _watch() -> ReachWatch:
    cfg = NodeConfig(node_id="w9", role="worker", stage=2, bundle="b", state_dir="s",
                     control_bind="tcp://127.0.0.1:7000", data_bind="tcp://127.0.0.1:7001",
                     heartbeat_interval_s=1.0, neighbour_timeout_rounds=3)
    return ReachWatch(cfg, 10.0)  # the loop's: 2 x max(5 s, 3 heartbeats) = 10 s


def test_warns_once_when_peers_are_heard_for_the_grace_and_none_connected(caplog):
    """Heard for the grace with no connection in: one WARNING naming the node id, its data
    address and the peers heard; never again."""
    w = _watch()
    assert w.check(100.0, {"w1"}, 0) is None
    assert w.check(109.0, {"w1", "s1"}, 0) is None
    with caplog.at_level("WARNING", logger="agent.node.loop"):
        text = w.check(110.0, {"w1", "s1"}, 0)
    assert text and "'w9'" in text and "tcp://127.0.0.1:7001" in text and "s1, w1" in text
    assert [r.getMessage() for r in caplog.records] == [text]
    assert w.check(200.0, {"w1", "s1"}, 0) is None


def test_silent_before_any_peer_is_heard():
    """Peers not heard at all (not started yet, or the node's own addresses for them are
    wrong: that shows as neighbours never alive) start no clock."""
    w = _watch()
    for t in range(0, 100, 5):
        assert w.check(float(t), set(), 0) is None
    assert w.check(100.0, {"w1"}, 0) is None  # the grace counts from the first hearing


def test_one_connection_in_ends_the_watch():
    """A peer that connected even once shows the peers know the node: no warning later, even
    with no connection counted since (the count only grows)."""
    w = _watch()
    assert w.check(0.0, {"w1"}, 1) is None
    assert w.check(1000.0, {"w1"}, 0) is None


def test_the_grace_starts_again_when_no_peer_is_heard_meanwhile():
    """Rule: a peer heard and then gone before the grace ran out starts no clock for the next
    one heard much later: that one gets the whole grace."""
    w = _watch()
    assert w.check(0.0, {"w1"}, 0) is None
    assert w.check(5.0, set(), 0) is None
    assert w.check(100.0, {"w2"}, 0) is None
    assert w.check(109.0, {"w2"}, 0) is None
    assert w.check(110.0, {"w2"}, 0) is not None
