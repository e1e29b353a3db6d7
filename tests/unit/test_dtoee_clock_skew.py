"""DTO-EE's slots follow each node's wall clock: a neighbour whose clock is more than a slot
off never takes part in a phase. Its messages are refused, naming the skew and the fix (the
node loop counts them as ``bad_payload`` and logs the first from each sender), instead of a
bare "slot is in the future" on one side and silence on the other."""

from __future__ import annotations

from collections import deque

import pytest

from agent.policies.dtoee.protocol import slot_skew
from agent.protocol.wire import Kind, decode, encode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario
from tests.unit.test_dtoee_slot_start import _phase

SLOT_S = 1000.0  # slot_length_s in the test fleet's configs


def test_a_slot_more_than_one_off_names_the_skew_and_ntp_and_one_off_is_fine():
    """Rule: within a slot either way is no skew (a node just past a boundary); further off
    names the direction, about how many seconds, and the fix."""
    assert slot_skew(5, 5, SLOT_S) == slot_skew(6, 5, SLOT_S) == slot_skew(4, 5, SLOT_S) == ""
    ahead = slot_skew(8, 5, SLOT_S)
    assert ahead.startswith("slot 8 is 3 slots ahead of this node's (5): the sender's wall "
                            "clock is about 3000 s ahead of ours;") and "(NTP)" in ahead
    behind = slot_skew(2, 5, SLOT_S)
    assert "behind ours (or the message was that long on its way)" in behind


def test_both_sides_of_a_node_whose_clock_is_hours_ahead_refuse_with_the_skew():
    """Rule: a node whose clock jumped 3 slots ahead starts that slot; its neighbours refuse
    its messages (the sender's clock is ahead), and it refuses theirs (behind)."""
    nodes = _fleet(_scenario(3, 0.7), 6, knobs={"settle_rounds": 0})
    _phase(nodes, 5.0)  # slot 0 everywhere
    fast = "a0"
    pol, view = nodes[fast]
    pol.wall = lambda: 3 * SLOT_S + 5.0
    out = deque()
    _deliver(nodes, fast, pol.on_tick(view, 3 * SLOT_S + 5.0), out)
    assert pol.slot == 3 and out
    dest, frames = out.popleft()
    other, other_view = nodes[dest]
    with pytest.raises(ValueError, match=r"slot 3 is 3 slots ahead of this node's \(0\).*NTP"):
        other.on_control(decode(frames), other_view, 5.0)
    # and the node ahead refuses a neighbour's message of slot 0 (from the sender's clock)
    late = decode(encode(Kind.DTOEE_REQUEST, dest, {"to": fast, "payload": {}}, slot=0, round=0))
    with pytest.raises(ValueError, match=r"slot 0 is 3 slots behind this node's \(3\): the "
                       r"sender's wall clock is about 3000 s behind ours"):
        pol.on_control(late, view, 3 * SLOT_S + 5.0)
