"""DTO-EE's configuration phase ends when it has converged: every node's quiet streak (carried
in its requests and statuses) reaches ``settle_rounds``, the nodes end within a few rounds of
each other, nobody waits for a node that has ended, and the routing is the converged one."""

from __future__ import annotations

from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.network import run_dtoee
from agent.policies.model import compile_network, network_delay, routing_vector
from agent.policies.dtoee.protocol import quiet_streak
from agent.protocol.wire import Kind
from tests.unit.test_dtoee_agent_rounds import _run_phase, _scenario, _with_profile


def test_quiet_streak_counts_rounds_in_which_nothing_within_reach_moved():
    """A move or a threshold change resets the streak; otherwise it grows by one from the least
    of the node's own and its neighbours' streaks (a missing neighbour counts 0)."""
    assert quiet_streak(5, 0.0, 1e-3, False, [7, 9]) == 6
    assert quiet_streak(5, 0.0, 1e-3, False, [2]) == 3
    assert quiet_streak(5, 2e-3, 1e-3, False, [7]) == 0
    assert quiet_streak(5, 0.0, 1e-3, True, [7]) == 0
    assert quiet_streak(0, 0.0, 1e-3, False, []) == 1


def test_the_phase_ends_early_everywhere_at_the_converged_routing():
    """With settle_rounds, a 200-round phase at moderate load ends long before round 200 on
    every node, close together, without a stalled round (the harness gives no stall ticks: a
    node left waiting would stay unsettled); the model delay of the routing is within 1% of the
    driver's after 200 rounds, and ended neighbours stop talking to each other."""
    sc = _scenario(3, 0.5)
    mine, nodes, kinds = _run_phase(sc, 200, knobs={"settle_rounds": 8})
    rounds = [p.round for p, _ in nodes.values()]
    assert all(p.settling.settled and not p.configuring for p, _ in nodes.values())
    assert max(rounds) < 150 and max(rounds) - min(rounds) <= 16, rounds
    ref = run_dtoee(sc, rounds=200, params=DtoeeParams(), stop_when_converged=False)
    net = compile_network(sc)
    delay = network_delay(net, routing_vector(net, mine), sc.remaining)
    assert delay <= 1.01 * ref.delay_s
    assert all(p.active == p.work for p, _ in nodes.values() if p.offloader)
    assert kinds[Kind.DTOEE_REQUEST] < (max(rounds) + 2) * len(sc.links)


def test_without_settle_rounds_every_round_runs():
    """settle_rounds 0 keeps the old behaviour: the phase runs all its rounds."""
    sc = _scenario(3, 0.5)
    _, nodes, _ = _run_phase(sc, 40, knobs={"settle_rounds": 0})
    assert all(p.round == 40 for p, _ in nodes.values() if p.offloader)
    assert not any(p.settling.settled for p, _ in nodes.values())


def test_with_threshold_tuning_the_phase_still_ends_without_a_stalled_round():
    """Thresholds tuned at two exit stages, heavy load: the streak needs a threshold cycle with
    no change, every node still ends before the last round, and the siblings of a node that
    ended get its report (so nobody waits out round_interval_s: no stall ticks here)."""
    sc = _with_profile(_scenario(3, 0.85), (1, 2, 3), 1.0)
    th = {1: 0.8, 2: 0.8}
    _, nodes, kinds = _run_phase(sc, 300, thresholds=th, knobs={"settle_rounds": 8})
    assert all(p.settling.settled for p, _ in nodes.values())
    assert max(p.round for p, _ in nodes.values()) < 300
    assert all(p.settling.needed == 11 for p, _ in nodes.values())  # m=5 rounds x 2 exits + 1
    assert kinds[Kind.THRESHOLD] > 0
