"""DTO-EE's ``slot_start`` knob: where each slot's configuration phase starts its routing."""

import dataclasses
from collections import deque

import pytest

from agent.policies.dtoee.knobs import DtoeeParams, parse_agent_knobs, parse_knobs
from agent.policies.dtoee.network import run_dtoee
from agent.policies.dtoee.sim import dtoee_sim_policy
from agent.policies.setting import ScenarioError
from agent.protocol.wire import decode
from tests.unit.test_dtoee_agent_rounds import _deliver, _fleet, _gap, _scenario

ROUNDS = 12


def _tick(nodes, wall_s, queue):
    """Move every node's wall clock to ``wall_s`` and tick it once (a new slot starts)."""
    for n, (pol, view) in nodes.items():
        pol.wall = lambda: wall_s
        _deliver(nodes, n, pol.on_tick(view, wall_s), queue)


def _phase(nodes, wall_s):
    """Tick every node at ``wall_s`` and deliver messages until none is left; the routing the
    phase worked out (in force once it ends)."""
    queue = deque()
    _tick(nodes, wall_s, queue)
    while queue:
        dest, frames = queue.popleft()
        pol, view = nodes[dest]
        _deliver(nodes, dest, pol.on_control(decode(frames), view, wall_s), queue)
    return {n: dict(pol.work) for n, (pol, _) in nodes.items() if pol.work}


def _uniform(nodes):
    return {n: {s: 1.0 / len(pol.work) for s in pol.work} for n, (pol, _) in nodes.items()
            if pol.work}


def test_the_knob_defaults_to_the_last_routing_and_names_itself_when_wrong():
    """Rule: ``slot_start`` is "last" unless set; "uniform" is accepted by plan's and a node's
    readers; anything else is an error naming the field."""
    assert DtoeeParams().slot_start == "last"
    assert parse_knobs({"slot_start": "uniform"}).slot_start == "uniform"
    assert parse_agent_knobs({"slot_start": "uniform"}).slot_start == "uniform"
    with pytest.raises(ScenarioError, match="knobs.slot_start"):
        parse_knobs({"slot_start": "cold"})


def test_uniform_slot_start_makes_every_slot_the_papers_cold_phase():
    """Rule: with ``slot_start = "uniform"`` each slot's phase starts from 1/|L_i| (the paper's
    Algorithm 3, line 1): the first slot's N rounds among the agents are the driver's N rounds
    from uniform, and the second slot starts from uniform again, not from that result."""
    sc = _scenario(3, 0.7)
    nodes = _fleet(sc, ROUNDS, knobs={"settle_rounds": 0, "slot_start": "uniform"})
    first = _phase(nodes, 5.0)
    assert _gap(first, run_dtoee(sc, rounds=ROUNDS, stop_when_converged=False).routing) < 1e-9
    assert _gap(first, _uniform(nodes)) > 0.05  # the phase moved away from uniform
    _tick(nodes, 1005.0, deque())  # slot 1 (slot_length_s 1000 in the fleet's configs)
    assert all(pol.slot == 1 and pol.configuring for pol, _ in nodes.values())
    assert _gap({n: dict(pol.active) for n, (pol, _) in nodes.items() if pol.work}, first) < 1e-12
    assert _gap({n: dict(pol.work) for n, (pol, _) in nodes.items() if pol.work},
                _uniform(nodes)) < 1e-12


def test_last_slot_start_continues_from_the_routing_in_force():
    """Rule: by default a slot's phase starts from the routing the last one ended with."""
    sc = _scenario(3, 0.7)
    nodes = _fleet(sc, ROUNDS, knobs={"settle_rounds": 0})
    first = _phase(nodes, 5.0)
    assert _gap(first, _uniform(nodes)) > 0.05
    _tick(nodes, 1005.0, deque())
    assert _gap({n: dict(pol.work) for n, (pol, _) in nodes.items() if pol.work}, first) < 1e-12


def test_simulator_policy_honours_the_knob():
    """Rule: the simulator's ``dtoee`` re-plans each slot from the decision in force unless
    ``slot_start`` is "uniform", in which case every slot plans from uniform (plan and the
    simulator run the same driver as the agents' rounds)."""
    sc = _scenario(3, 0.7)
    cold = dataclasses.replace(sc, knobs={"slot_start": "uniform", "rounds": ROUNDS})
    warm = dataclasses.replace(sc, knobs={"rounds": ROUNDS})
    ref = run_dtoee(cold, rounds=ROUNDS).routing
    pol_cold, pol_warm = dtoee_sim_policy("dtoee"), dtoee_sim_policy("dtoee")
    d1 = pol_cold._planner(cold, None)
    d2 = pol_cold._planner(cold, d1)
    assert _gap(d2.routing, ref) < 1e-12
    w1 = pol_warm._planner(warm, None)
    w2 = pol_warm._planner(warm, w1)
    assert _gap(w2.routing, w1.routing) > 1e-6
