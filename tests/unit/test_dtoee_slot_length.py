"""DTO-EE's slot numbers are wall-clock time divided by ``slot_length_s``: a node configured
with another slot length sends slot numbers that look like a clock decades off. When the
implied skew is beyond a day and the sender's slot number fits this node's clock with another
valid slot length, the refusal names the two lengths and the fix (one render for every node),
on both sides; a plausible skew still names NTP."""

from __future__ import annotations

import pytest

from agent.config.node import NodeConfig, Peer
from agent.policies.dtoee.protocol import sender_slot_length_s, slot_skew
from agent.protocol.wire import decode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario

WALL_S = 1796434516.0  # a wall clock of 2026


def test_the_reported_slot_numbers_name_both_slot_lengths_and_one_render():
    """Rule: a 2 s node's slot (898217258) reaching a 5 s node (slot 359286903) names
    slot_length_s, about 2 s for the sender and 5 s here, and `fleet render`, not an 85-year
    clock skew."""
    text = slot_skew(898217258, 359286903, 5.0)
    assert text.startswith("slot 898217258 is 538930355 slots ahead of this node's "
                           "(359286903): the sender's slot_length_s probably differs")
    assert "slots of about 2 s, this node's are 5 s" in text
    assert "render every node's config from one topology (edge-agent fleet render)" in text
    assert "wall clock is about" not in text
    assert sender_slot_length_s(898217258, 359286903, 5.0) == pytest.approx(2.0, rel=1e-6)


def test_the_slower_sender_is_named_by_the_node_with_shorter_slots_too():
    """Rule: a 5 s node's slot reaching a 2 s node is far behind, not stale: it names the
    sender's 5 s slots and this node's 2 s ones."""
    text = slot_skew(359286903, 898217258, 2.0)
    assert text.startswith("slot 359286903 is 538930355 slots behind this node's (898217258)")
    assert "slots of about 5 s, this node's are 2 s" in text


def test_plausible_skews_still_name_ntp_and_stale_slots_stay_silent():
    """Rule: a skew within a day, or one that no valid slot length explains (this node's clock
    near 1970, as on a device booted without a clock battery), names NTP; a slot up to a day
    behind is stale (""), as is one two days behind at the same length (a paused node)."""
    hour = int(3600 // 2.0)
    assert slot_skew(898217258 + hour, 898217258, 2.0).endswith("sync them (NTP)")
    assert "3600 s ahead" in slot_skew(898217258 + hour, 898217258, 2.0)
    epoch = slot_skew(898217258, 500, 2.0)  # our clock at 1000 s after 1970
    assert "wall clock is about" in epoch and epoch.endswith("sync them (NTP)")
    assert "slot_length_s probably" not in epoch
    assert slot_skew(898217258 - hour, 898217258, 2.0) == ""
    assert slot_skew(898217258 - 86400, 898217258, 2.0) == ""  # 2 days behind, same length


def _reconfigured(nodes, node, slot_length_s):
    """Configure ``node`` again as its node loop would with another ``slot_length_s`` (its
    peers: successors, predecessors and siblings, as in the test fleet)."""
    pol, view = nodes[node]
    stage = {n: v.stage for n, (_, v) in nodes.items()}
    ids = tuple(view.successors) + tuple(view.predecessors) + tuple(sorted(pol.siblings))
    cfg = NodeConfig(node_id=node, role=view.role, stage=view.stage, bundle="/b",
                     state_dir="/s", control_bind="tcp://127.0.0.1:1",
                     data_bind="tcp://127.0.0.1:2",
                     peers=tuple(Peer(p, stage[p], "tcp://x:1", "tcp://x:2") for p in ids),
                     slot_length_s=slot_length_s, rounds_per_slot=pol.rounds,
                     round_interval_s=1.0)
    pol.configure(cfg, view)
    assert pol.slot_length_s == slot_length_s


def test_agents_with_another_slot_length_refuse_each_other_naming_the_lengths():
    """Rule: in a fleet of 1000 s slots with one 2500 s node, at a present-day wall clock, the
    odd node refuses its predecessors' messages naming their 1000 s slots, and its successors
    refuse its messages naming its 2500 s slots (neither blames the clocks alone)."""
    nodes = _fleet(_scenario(3, 0.7), 6, knobs={"settle_rounds": 0})
    odd = "a0"
    _reconfigured(nodes, odd, 2500.0)
    for pol, _ in nodes.values():
        pol.wall = lambda: WALL_S
    odd_pol, odd_view = nodes[odd]
    pred = odd_view.predecessors[0]
    pred_pol, pred_view = nodes[pred]
    to_odd = []
    _deliver(nodes, pred, pred_pol.on_tick(pred_view, WALL_S), to_odd)
    frames = next(f for dest, f in to_odd if dest == odd)
    with pytest.raises(ValueError, match=r"slots of about 1000 s, this node's are 2500 s"):
        odd_pol.on_control(decode(frames), odd_view, WALL_S)
    from_odd = []
    _deliver(nodes, odd, odd_pol.on_tick(odd_view, WALL_S), from_odd)
    dest, frames = next((d, f) for d, f in from_odd if d in odd_view.successors)
    other, other_view = nodes[dest]
    other.on_tick(other_view, WALL_S)
    with pytest.raises(ValueError, match=r"slots of about 2500 s, this node's are 1000 s.*"
                                         r"edge-agent fleet render"):
        other.on_control(decode(frames), other_view, WALL_S)
