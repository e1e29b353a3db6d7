"""DTO-EE's slots follow each node's wall clock: a neighbour whose clock is more than a slot
off never takes part in a phase. The node whose clock is behind refuses the other's messages
naming the skew and the fix (the node loop counts them as ``bad_payload`` and logs the first
from each sender), instead of a bare "slot is in the future"; messages from past slots stay
stale (a pause delays them too)."""

from __future__ import annotations

from collections import deque

import pytest

from agent.policies.dtoee.protocol import slot_skew
from agent.protocol.wire import Kind, decode, encode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario
from tests.unit.test_dtoee_slot_start import _phase

SLOT_S = 1000.0  # slot_length_s in the test fleet's configs


def test_a_slot_more_than_one_ahead_names_the_skew_and_ntp_and_behind_is_no_skew():
    """Rule: up to one slot ahead is no skew (a node just past a boundary), nor is any slot
    behind (a message a pause delayed: stale, dropped as before); further ahead names about
    how many seconds and the fix."""
    assert slot_skew(5, 5, SLOT_S) == slot_skew(6, 5, SLOT_S) == slot_skew(2, 5, SLOT_S) == ""
    ahead = slot_skew(8, 5, SLOT_S)
    assert ahead.startswith("slot 8 is 3 slots ahead of this node's (5): the sender's wall "
                            "clock is about 3000 s ahead of ours (or ours behind);")
    assert ahead.endswith("sync them (NTP)")


def test_the_node_whose_clock_is_behind_refuses_and_the_one_ahead_drops_stale_silently():
    """Rule: a node whose clock jumped 3 slots ahead starts that slot; its neighbours refuse
    its messages naming the skew, and it drops theirs of slot 0 as stale (as it drops those a
    pause delayed), without blaming anyone's clock."""
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
    late = decode(encode(Kind.DTOEE_REQUEST, dest, {"to": fast, "payload": {}}, slot=0, round=0))
    assert pol.on_control(late, view, 3 * SLOT_S + 5.0) == [] and pol.slot == 3
