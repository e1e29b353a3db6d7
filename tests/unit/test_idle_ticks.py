"""Ticks of an idle node: DTO-EE asks for a tick every half round inside a configuration phase
and sleeps to the next slot's start between phases (at most ``IDLE_TICK_MAX_S``, so a stepped
wall clock is caught); a neighbour's message that starts a phase brings the ticks back at once;
the node loop re-offers held tasks every ``tick_interval_s`` whatever the policy asks."""

from __future__ import annotations

from collections import deque

import pytest

from agent.node.loop import Node
from agent.node.outitem import OutItem
from agent.node.status import NodeStatus
from agent.policies.api import AgentPolicy
from agent.policies.dtoee.agent import IDLE_TICK_MAX_S
from agent.protocol.wire import Kind, decode
from tests.unit.source_parts import source_parts
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _scenario

SLOT_S = 1000.0  # the fleet's slot_length_s


def _at(pol, wall_s):
    pol.wall = lambda: wall_s


def test_dtoee_ticks_in_a_phase_and_sleeps_to_the_next_slot_between_phases():
    """Rule: before its first tick a node ticks at once; in a phase every ``tick_interval_s``;
    once the phase is over, at the next slot's start but at most ``IDLE_TICK_MAX_S`` ahead,
    never 0 (no spin on the boundary); the new slot's tick starts its phase."""
    nodes = _fleet(_scenario(3, 0.7), 4)
    pol, view = nodes["a0"]
    assert 0 < pol.next_tick_s(0.0) <= 0.001
    pol.on_tick(view, 0.0)  # wall 5 s: slot 0's phase starts
    assert pol.configuring and pol.next_tick_s(0.0) == pol.tick_interval_s == 0.5
    _at(pol, 10.0)
    pol.on_tick(view, 5.0)  # past rounds * round_interval_s: the phase is over
    assert not pol.configuring
    assert pol.next_tick_s(5.0) == IDLE_TICK_MAX_S
    _at(pol, SLOT_S - 0.25)
    assert pol.next_tick_s(5.0) == pytest.approx(0.25)
    _at(pol, SLOT_S - 1e-9)
    assert pol.next_tick_s(5.0) == 0.001
    _at(pol, SLOT_S + 0.01)
    pol.on_tick(view, 6.0)
    assert pol.slot == 1 and pol.configuring and pol.next_tick_s(6.0) == 0.5


def test_a_neighbours_request_for_a_new_slot_ends_the_sleep():
    """Rule: a node sleeping between phases that hears a request of the next slot (its
    neighbour's clock is a little ahead) joins that phase and asks for ticks again at once."""
    nodes = _fleet(_scenario(3, 0.7), 4)
    pol, view = nodes["a0"]
    pol.on_tick(view, 0.0)
    _at(pol, 10.0)
    pol.on_tick(view, 5.0)
    assert not pol.configuring and pol.next_tick_s(5.0) == IDLE_TICK_MAX_S
    sender = view.predecessors[0]
    spol, sview = nodes[sender]
    _at(spol, SLOT_S + 0.01)  # the predecessor's clock is in slot 1 already
    queue = deque()
    _deliver(nodes, sender, spol.on_tick(sview, 0.0), queue)
    mine = [decode(frames) for dest, frames in queue if dest == "a0"]
    assert mine and all(m.kind == Kind.DTOEE_REQUEST and m.slot == 1 for m in mine)
    _at(pol, SLOT_S - 0.2)  # ours is still in slot 0
    pol.on_control(mine[0], view, 5.5)
    assert pol.slot == 1 and pol.configuring and pol.next_tick_s(5.5) == 0.5


class _Sleepy(AgentPolicy):
    """A policy with nothing to do for a long while."""

    tick_interval_s = 0.5

    def next_tick_s(self, now):
        return 30.0


@pytest.fixture
def node(tmp_path):
    policy = _Sleepy({}, {})
    parts = source_parts(tmp_path, policy)  # w1 not heard yet: no successor alive
    yield Node(parts.cfg, parts.transport, policy, parts.view, parts.out, parts.side,
               NodeStatus(parts.cfg, policy, parts.view, parts.out.counters))
    parts.close()


def test_the_loop_follows_the_policy_but_re_offers_held_tasks_every_tick_interval(node):
    """Rule: the node's next tick is the policy's ``next_tick_s``, except while tasks wait for a
    successor: then every ``tick_interval_s``, as before policies could sleep."""
    assert node._tick_gap_s(0.0) == 30.0
    node.outbox.send(OutItem(Kind.TASK, "t1:0", {"id": "t1", "stage": 1}, None), 0.0)
    assert len(node.outbox.waiting) == 1  # no successor alive: held
    assert node._tick_gap_s(0.0) == 0.5


def test_the_node_hands_its_wall_clock_to_its_policy(tmp_path):
    """Rule: a node has one wall clock: the one it is built with is the one its policy aligns
    DTO-EE slots to (a node built with a stepped clock must not run slots on real time)."""
    nodes = _fleet(_scenario(3, 0.7), 4)
    pol, _ = nodes["a0"]
    parts = source_parts(tmp_path, pol)
    try:
        Node(parts.cfg, parts.transport, pol, parts.view, parts.out, parts.side,
             NodeStatus(parts.cfg, pol, parts.view, parts.out.counters), wall=lambda: 7.5)
        assert pol.wall() == 7.5
        pol.on_tick(parts.view, 0.0)  # the slot it starts is the one of that clock's time
        assert pol.slot == int(7.5 // pol.slot_length_s)
    finally:
        parts.close()


def test_a_wall_clock_stepped_back_is_followed_at_the_next_tick_with_one_line(caplog):
    """Rule: when the wall clock steps back more than a slot (an NTP correction), the next
    tick starts a phase in the slot the clock now gives and logs one INFO line saying so (the
    node's WARNING on the step comes from its status line: agent.node.clockstep); the
    node neither idles until the clock passes its old slot again (1 h back: 720 slots of 5 s
    without configuration) nor warns again in the next slots. A clock one slot behind (a
    neighbour's request pulled it ahead) is no step."""
    nodes = _fleet(_scenario(3, 0.7), 4)
    pol, view = nodes["a0"]
    _at(pol, 10 * SLOT_S + 5.0)
    pol.on_tick(view, 0.0)
    assert pol.slot == 10
    _at(pol, 10 * SLOT_S + 10.0)
    pol.on_tick(view, 5.0)  # its phase ends: slot 10 stays
    assert not pol.configuring
    _at(pol, 9 * SLOT_S + 1.0)  # one slot behind: waits for slot 10's end as before
    assert pol.on_tick(view, 6.0) == [] and pol.slot == 10 and not pol.configuring
    _at(pol, 3 * SLOT_S + 1.0)  # stepped back 7 slots
    with caplog.at_level("INFO", logger="agent.policies.dtoee.agent"):
        pol.on_tick(view, 7.0)
        assert pol.slot == 3 and pol.configuring
        _at(pol, 4 * SLOT_S + 1.0)
        pol.on_tick(view, 8.0)
    assert pol.slot == 4
    steps = [r.getMessage() for r in caplog.records if "stepped back" in r.getMessage()]
    assert len(steps) == 1 and "slot 3 (was 10)" in steps[0], steps


def test_a_phase_cut_short_is_counted_in_the_saved_state_and_logged_at_info(caplog):
    """Rule: a configuration phase that ends before its rounds are done (its time ran out: a
    neighbour late or gone) counts as ``cut_short`` in ``dtoee_phases`` of the policy's saved
    state and logs one INFO line naming the slot and the rounds done (then at the 10th, 100th
    ...), except the first phase after start (its neighbours may still be starting: every
    agent's first phase is cut short so); one that ends settled or after all its rounds counts
    as such, without a line."""
    nodes = _fleet(_scenario(3, 0.7), 4)
    pol, view = nodes["a0"]
    with caplog.at_level("INFO", logger="agent.policies.dtoee.agent"):
        for k in range(3):
            _at(pol, k * SLOT_S + 5.0)
            pol.on_tick(view, 10.0 * k)  # slot k's phase starts: no neighbour answers
            _at(pol, k * SLOT_S + 10.0)
            pol.on_tick(view, 10.0 * k + 5.0)  # past its end after round 0
            assert not pol.configuring
    assert pol.snapshot()["dtoee_phases"] == {"settled": 0, "all_rounds": 0, "cut_short": 3}
    lines = [r.getMessage() for r in caplog.records if "cut short" in r.getMessage()]
    assert lines == ["configuration phase of slot 1 ended after 0 of %d rounds (a neighbour "
                     "late or gone; 2 phase(s) cut short so far)" % pol.rounds]
