"""``ReachWatch``: a configured peer never heard whose address does not resolve is named once,
with the config field, off the loop's thread."""

from __future__ import annotations

from agent.config.node import NodeConfig, Peer
from agent.node.reach import ReachWatch

GRACE_S = 10.0  # the loop's: 2 x max(5 s, 3 heartbeats)


def _watch(*peers: Peer) -> ReachWatch:
    cfg = NodeConfig(node_id="s9", role="source", stage=0, bundle="b", state_dir="s",
                     control_bind="tcp://127.0.0.1:7000", data_bind="tcp://127.0.0.1:7001",
                     heartbeat_interval_s=1.0, neighbour_timeout_rounds=3, peers=peers)
    return ReachWatch(cfg, GRACE_S)


def _peer(pid: str, host: str) -> Peer:
    return Peer(pid, 1, "tcp://%s:7100" % host, "tcp://%s:7101" % host)


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_an_unheard_peer_whose_host_does_not_resolve_is_named_once_with_its_fields(caplog):
    """Rule: after the grace, a peer never heard whose control and data addresses name a host
    that does not resolve gets one WARNING naming peers[i].control_address and
    peers[i].data_address and the host; peers that resolve, or were heard, get none; and
    nothing is logged again later."""
    w = _watch(_peer("w1", "127.0.0.1"), _peer("w2", "no-such-w2.invalid"),
               _peer("w3", "no-such-w3.invalid"))
    with caplog.at_level("WARNING", logger="agent.node.loop"):
        assert w.check(100.0, set(), 0) is None
        assert w.check(105.0, {"w3"}, 0) is None
        assert w.lookup is None  # within the grace: nothing looked up
        w.check(100.0 + GRACE_S, set(), 0)
        assert w.lookup is not None
        w.lookup.join(90)
        first = w.lookup
        w.check(200.0, set(), 0)
    assert w.lookup is first  # looked up once only
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("neighbour w2 not heard 10 s after start: ")
    assert ("peers[1].control_address tcp://no-such-w2.invalid:7100 and "
            "peers[1].data_address tcp://no-such-w2.invalid:7101: the host "
            "no-such-w2.invalid does not resolve") in line


def test_only_the_field_that_does_not_resolve_is_named(caplog):
    """Rule: a peer whose data address alone names a host that does not resolve has that
    field named, not the control address."""
    w = _watch(Peer("w1", 1, "tcp://127.0.0.1:7100", "tcp://no-such-data.invalid:7101"))
    with caplog.at_level("WARNING", logger="agent.node.loop"):
        w.check(0.0, set(), 0)
        w.check(GRACE_S, set(), 0)
        w.lookup.join(90)
    lines = _warnings(caplog)
    assert len(lines) == 1, lines
    assert ("peers[0].data_address tcp://no-such-data.invalid:7101: the host "
            "no-such-data.invalid does not resolve") in lines[0]
    assert "control_address" not in lines[0]


def test_peers_all_heard_start_no_lookup():
    """Rule: when every peer was heard within the grace, nothing is looked up."""
    w = _watch(_peer("w1", "no-such-w1.invalid"))
    w.check(0.0, {"w1"}, 1)
    w.check(GRACE_S + 1, set(), 1)
    assert w.lookup is None
