"""Every node of a fleet runs one policy and, under DTO-EE, one slot_length_s, rounds_per_slot
and round_interval_s. A node restarted on mdi-exit among dtoee nodes had been taken without a
word: each policy dropped the other's control messages, DTO-EE's phases ended cut short, and
no counter moved. Heartbeats now carry ``policy`` (and ``dtoee_timing``); a receiver compares
them with its own config in ``take_heartbeat``: the heartbeat is kept all the same, the
difference counted and logged (at once, then hourly), and its end said once."""

from __future__ import annotations

import logging
from collections import Counter
from types import SimpleNamespace

import pytest

from agent.config.node import Peer
from agent.node.fleetcheck import MISMATCH_LOG_INTERVAL_S, FleetCheck, mismatches, own_fields
from agent.node.peerstate import take_heartbeat
from agent.protocol import wire
from agent.protocol.wire import Kind

W2 = Peer("w2a", 2, "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")  # a worker of stage 2 of 4


def _cfg(policy="dtoee", **over):
    cfg = dict(policy=policy, role="worker", stage=1, slot_length_s=5.0, rounds_per_slot=20,
               round_interval_s=0.05)
    cfg.update(over)
    return SimpleNamespace(**cfg)


def _beat(**extra):
    """A HEARTBEAT of w2a as it comes off the wire (``extra``: its optional fields)."""
    fields = dict(role="worker", stage=2, capacity_flops=1e9, input_queue=0, output_queue=0,
                  service_time_s=0.01, no_route=0)
    fields.update(extra)
    return wire.decode(wire.encode(Kind.HEARTBEAT, "w2a", fields))


class _Node:
    """What ``take_heartbeat`` needs of a node: its view, counters and a clock of the test's."""

    def __init__(self, policy="dtoee", **over):
        self.view = SimpleNamespace(peer_state={}, num_stages=4)
        self.counters: Counter = Counter()
        self.t = [100.0]
        self.fleet = FleetCheck(_cfg(policy, **over), self._count, lambda: self.t[0])

    def _count(self, name):
        self.counters[name] += 1

    def take(self, msg):
        return take_heartbeat(self.view, msg, W2, self.fleet)


def _lines(caplog, level=logging.WARNING):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_only_a_dtoee_node_tells_its_slot_settings():
    """Rule: every heartbeat names the sender's policy; a dtoee node adds its slot_length_s,
    rounds_per_slot, round_interval_s and step, other policies (which have no slots) do not."""
    assert own_fields(_cfg()) == {"policy": "dtoee", "dtoee_timing": [5.0, 20, 0.05, "default"]}
    assert own_fields(_cfg("mdi-exit")) == {"policy": "mdi-exit"}


def test_a_heartbeat_of_an_earlier_agent_is_not_compared():
    """Rule: a heartbeat without ``policy`` (an agent of an earlier version) is kept as before,
    with nothing compared, counted or logged."""
    node = _Node()
    assert node.take(_beat()) == ("", False)
    assert node.view.peer_state["w2a"]["stage"] == 2 and not node.counters
    assert mismatches("w2a", own_fields(_cfg()), _beat().fields) == {}


def test_another_policy_is_kept_counted_and_logged_once_with_the_fix(caplog):
    """Rule: a neighbour on mdi-exit among dtoee nodes: its heartbeat is kept (liveness and
    queue state hold), each one counted ``fleet_mismatch_policy``, the first logged at once
    naming both policies and the fix; its DTO-EE timing is not compared (it has none)."""
    caplog.set_level(logging.INFO, logger="agent.node.loop")
    node = _Node()
    for _ in range(3):
        assert node.take(_beat(policy="mdi-exit", input_queue=4)) == ("", False)
    assert node.view.peer_state["w2a"]["input_queue"] == 4
    assert node.counters == {"fleet_mismatch_policy": 3}
    assert _lines(caplog) == [
        "w2a runs mdi-exit, this node dtoee: a fleet runs one policy (each drops the other's "
        "control messages); render every node with one --policy and restart them all"]


def test_a_lasting_difference_is_logged_again_hourly_with_the_count_and_its_end_once(caplog):
    """Rule: while a neighbour still differs, one more WARNING per MISMATCH_LOG_INTERVAL_S,
    with the heartbeats since; when it agrees again, one INFO line, and a later difference is
    logged at once again."""
    caplog.set_level(logging.INFO, logger="agent.node.loop")
    node = _Node()
    node.take(_beat(policy="mdi-exit"))
    for _ in range(5):
        node.t[0] += 10.0
        node.take(_beat(policy="mdi-exit"))
    assert len(_lines(caplog)) == 1
    node.t[0] += MISMATCH_LOG_INTERVAL_S
    node.take(_beat(policy="mdi-exit"))
    assert len(_lines(caplog)) == 2
    assert _lines(caplog)[1].endswith("(and 5 more such heartbeats since the last line)")
    node.take(_beat(policy="dtoee", dtoee_timing=[5.0, 20, 0.05]))
    node.take(_beat(policy="dtoee", dtoee_timing=[5.0, 20, 0.05]))
    assert _lines(caplog, logging.INFO) == ["w2a now runs dtoee, as this node does"]
    assert node.counters == {"fleet_mismatch_policy": 7}
    node.take(_beat(policy="fixed"))
    assert len(_lines(caplog)) == 3 and "w2a runs fixed, this node dtoee" in _lines(caplog)[2]


@pytest.mark.parametrize("timing,said", [
    ([10.0, 20, 0.05], "w2a has slot_length_s 10, this node 5: every node of a DTO-EE fleet "
                       "needs the same slot_length_s, rounds_per_slot, round_interval_s"),
    ([5.0, 30, 0.03], "w2a has rounds_per_slot 30, this node 20; round_interval_s 0.03, this "
                      "node 0.05:"),
    ([5.0, "20", 0.05], "w2a sends dtoee_timing [5.0, '20', 0.05], not [slot_length_s, "
                        "rounds_per_slot, round_interval_s] as numbers"),
    ([5.0, 20], "w2a sends dtoee_timing [5.0, 20], not"),
])
def test_a_dtoee_neighbour_with_other_slot_settings_is_kept_counted_and_named(timing, said,
                                                                                caplog):
    """Rule: between two dtoee nodes, a slot_length_s, rounds_per_slot or round_interval_s of
    the neighbour's that differs from this node's (or a timing that is not three numbers) is
    counted ``fleet_mismatch_dtoee_timing`` and logged naming each setting and both values;
    the heartbeat is kept."""
    caplog.set_level(logging.WARNING, logger="agent.node.loop")
    node = _Node()
    assert node.take(_beat(policy="dtoee", dtoee_timing=timing)) == ("", False)
    assert "w2a" in node.view.peer_state
    assert node.counters == {"fleet_mismatch_dtoee_timing": 1}
    assert len(_lines(caplog)) == 1 and said in _lines(caplog)[0]


def test_matching_settings_and_a_later_versions_extra_items_pass_without_a_word(caplog):
    """Rule: the same policy and the same three settings are no difference; items after the
    three (settings of a later version) are not compared; a mdi-exit node does not compare
    timing at all, nor is a QUEUE_STATE (no policy in it) compared."""
    caplog.set_level(logging.INFO, logger="agent.node.loop")
    node = _Node()
    node.take(_beat(policy="dtoee", dtoee_timing=[5.0, 20, 0.05]))
    node.take(_beat(policy="dtoee", dtoee_timing=[5, 20, 0.05, "later"]))
    mdi = _Node("mdi-exit")
    mdi.take(_beat(policy="mdi-exit", dtoee_timing=[1.0, 2, 0.1]))
    state = wire.decode(wire.encode(Kind.QUEUE_STATE, "w2a", dict(
        role="worker", stage=2, capacity_flops=1e9, input_queue=1, output_queue=0,
        service_time_s=0.01)))
    assert mdi.take(state) == ("", False)
    assert not node.counters and not mdi.counters and not caplog.records


def test_a_refused_heartbeat_is_not_compared():
    """Rule: a heartbeat its sender's config rules out is refused as before (bad_heartbeat,
    in the caller), and its policy is neither compared nor counted."""
    node = _Node()
    why, _ = node.take(_beat(policy="mdi-exit", stage=7))
    assert "claims to be a worker of stage 7" in why and not node.counters


def test_a_peers_unprintable_policy_is_shown_quoted_and_cut():
    """Rule: the peer's policy is its word: a long or unprintable one is shown quoted and cut
    to 40 characters, so a log line stays one readable line."""
    line = mismatches("w2a", own_fields(_cfg()), {"policy": "x\n" * 100})["policy"]
    assert "\n" not in line and line.startswith("w2a runs 'x\\nx\\n") and "...," in line
