"""DTO-EE's slots through wall-clock steps: a Jetson without an RTC battery boots at a stale time
(1970, or the last shutdown's) and NTP steps the clock later, maybe while the agent serves. A
step forward starts the slot the clock now gives at the next tick, skips the slots between
(no burst of catch-up phases) and logs one INFO line; a loop that stalled is no step."""

from __future__ import annotations

from collections import deque

from agent.policies.dtoee.slotclock import SlotClock
from agent.policies.wallstep import STEP_MIN_S
from agent.protocol.wire import decode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario

SYNCED_S = 1796526000.0  # the wall clock once NTP has synced (December 2026)
LOGGER = "agent.policies.dtoee.agent"


def _node():
    nodes = _fleet(_scenario(3, 0.7), 4)
    return nodes, nodes["a0"]


def _lines(caplog, words):
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


def test_a_step_forward_from_1970_starts_the_clocks_slot_once_with_one_info_line(caplog):
    """Rule: a node that started at a 1970 clock, stepped forward 56 years by NTP, starts the
    slot the clock now gives at its next tick and logs one INFO line naming the step; the
    slots between are never run (no burst of phases), and the next ticks log nothing more."""
    _, (pol, view) = _node()
    length = pol.slot_length_s
    pol.wall = lambda: 40.0
    pol.on_tick(view, 40.0)  # booted at 1970 + 40 s
    assert pol.slot == int(40.0 // length)
    with caplog.at_level("INFO", logger=LOGGER):
        pol.wall = lambda: SYNCED_S
        assert pol.on_tick(view, 41.0)  # the new slot's requests go out at once
        slot = pol.slot
        assert slot == int(SYNCED_S // length) and pol.configuring
        pol.wall = lambda: SYNCED_S + 1.0
        pol.on_tick(view, 42.0)
        assert pol.slot == slot  # no catch-up slot after it
    steps = _lines(caplog, "stepped forward")
    assert len(steps) == 1, steps
    assert "about 1796525959 s" in steps[0] and "from slot %d (was 0)" % slot in steps[0]


def test_a_step_seen_after_a_neighbour_pulled_the_node_into_the_new_slot_is_still_named(caplog):
    """Rule: when a neighbour's message of the new slot reaches the node before its own tick
    (its clock was refused as too far behind until NTP stepped it), the tick still logs the
    step once, and the node stays in that slot."""
    nodes, (pol, view) = _node()
    src, src_view = nodes["s0"]
    pol.wall = lambda: 40.0
    pol.on_tick(view, 40.0)
    src.wall = lambda: SYNCED_S
    queue = deque()
    _deliver(nodes, "s0", src.on_tick(src_view, 500.0), queue)
    mine = [frames for dest, frames in queue if dest == "a0"]
    assert mine, "the source's requests reach a0"
    pol.wall = lambda: SYNCED_S  # NTP stepped a0's clock before the request came
    pol.on_control(decode(mine[0]), view, 41.0)
    slot = pol.slot
    assert slot == src.slot
    with caplog.at_level("INFO", logger=LOGGER):
        pol.on_tick(view, 41.5)
    assert pol.slot == slot
    assert len(_lines(caplog, "stepped forward")) == 1


def test_a_stalled_loop_moves_on_to_the_clocks_slot_without_a_step_line(caplog):
    """Rule: a loop that stalled for several slots (both clocks moved alike) starts the slot the
    wall clock gives, and no step is logged: only a jump of wall minus monotonic time is one."""
    _, (pol, view) = _node()
    length = pol.slot_length_s
    pol.wall = lambda: SYNCED_S
    pol.on_tick(view, 100.0)
    with caplog.at_level("INFO", logger=LOGGER):
        pol.wall = lambda: SYNCED_S + 5 * length
        pol.on_tick(view, 100.0 + 5 * length)
    assert pol.slot == int((SYNCED_S + 5 * length) // length)
    assert _lines(caplog, "stepped") == []


def test_a_step_back_is_warned_with_its_measured_size(caplog):
    """Rule: the step size a tick names is the change of wall minus monotonic time between
    ticks (an hour back reads 3600 s, not the slots' width), 0 at the first tick; a change
    under STEP_MIN_S is no step."""
    clock = SlotClock()
    assert clock.wall.step_s(10.0, SYNCED_S) == 0.0
    assert clock.wall.step_s(11.0, SYNCED_S + 1.0 + STEP_MIN_S / 2) == STEP_MIN_S / 2
    with caplog.at_level("INFO", logger=LOGGER):
        slot = clock.tick(-1, 12.0, SYNCED_S + 2.0, 5.0)
        assert slot == int((SYNCED_S + 2.0) // 5.0)
        assert clock.tick(slot, 13.0, SYNCED_S + 3.0 + STEP_MIN_S / 2, 5.0) == slot
        assert clock.tick(slot, 14.0, SYNCED_S - 3595.0, 5.0) == int((SYNCED_S - 3595.0) // 5.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "stepped back about 3600 s" in lines[0], lines
