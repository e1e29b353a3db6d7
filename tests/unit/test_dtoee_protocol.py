"""DTO-EE per node: running the per-node functions message by message (RUR wave, then the RUS
wave from the last stage back) gives exactly the whole-network driver's routing, and a node
that loses a successor moves the mass off it."""

from __future__ import annotations

import dataclasses

import numpy as np

from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.protocol import (
    arrival_rate,
    make_requests,
    offloader_step,
    receiver_status,
)
from agent.policies.dtoee.network import run_dtoee
from agent.policies.model import link_model_of
from tests.unit.dtoee_scenarios import random_scenario


def _per_node_run(sc, rounds, params):
    # the nodes use the scenario's link model, as run_dtoee does
    params = dataclasses.replace(params, link_model=link_model_of(sc.knobs))
    h_max = sc.num_stages
    stage = {s.id: 0 for s in sc.sources}
    stage.update({w.id: w.stage for w in sc.workers})
    cap = {w.id: w.capacity for w in sc.workers}
    rate = {s.id: s.rate for s in sc.sources}
    rem = (1.0,) + tuple(sc.remaining)
    flops = (0.0,) + tuple(s.flops for s in sc.stages)
    size = (0.0,) + tuple(s.input_bytes for s in sc.stages)
    nodes = [s.id for s in sc.sources] + [w.id for w in sc.workers]
    succ = {n: sc.successors(n) for n in nodes}
    routing = {n: {s: 1.0 / len(succ[n]) for s in succ[n]} for n in nodes if succ[n]}
    # round 0: rates of the initial routing, as the agent knows them from the last slot
    phi = dict(rate)
    for h in range(1, h_max + 1):
        for w in sc.workers_of_stage(h):
            phi[w.id] = sum(routing[p][w.id] * phi[p] * rem[h - 1] for p in sc.predecessors(w.id))
    outbox = {n: make_requests(n, 0, routing[n], phi[n], rem[stage[n]], flops[stage[n] + 1],
                               {}, 0) for n in routing}
    last_status = {}
    last_rate = dict(phi)
    last_change = {}
    for t in range(rounds):
        inbox = {n: [] for n in nodes}
        for n, reqs in outbox.items():
            for dst, r in reqs.items():
                inbox[dst].append(r)
        rates = {n: (rate[n] if stage[n] == 0 else arrival_rate(inbox[n], flops[stage[n]]))
                 for n in nodes}
        status = {}
        for h in range(h_max, -1, -1):
            for n in [x for x in nodes if stage[x] == h]:
                res = None
                if n in routing:
                    res = offloader_step(n, t, routing[n], rates[n], rem[h], flops[h + 1],
                                         size[h + 1], {s: sc.link_rate(n, s) for s in succ[n]},
                                         {s: status[s] for s in succ[n]}, params, {}, 0,
                                         last_rate[n], last_change.get(n))
                    routing[n] = res.routing
                    last_change[n] = res.change
                    outbox[n] = res.requests
                if h > 0:
                    status[n] = receiver_status(n, t, cap[n], inbox[n], res, {}, 0,
                                                last_status.get(n))
        last_status = status
        last_rate = rates
    return routing


def test_per_node_steps_match_the_network_driver():
    """The agent's per-node functions and run_dtoee compute the same routing, round by round."""
    sc = random_scenario(7, 0.7, sources=5, workers=(3, 3, 2, 2))
    params = DtoeeParams()
    for rounds in (1, 3, 12):
        mine = _per_node_run(sc, rounds, params)
        ref = run_dtoee(sc, rounds=rounds, params=params, stop_when_converged=False).routing
        for node, row in ref.items():
            for s, p in row.items():
                assert abs(mine[node][s] - p) < 1e-9, (rounds, node, s)


def test_per_node_paper_rule_matches_the_network_driver():
    """The paper's rule (eq. 19) is the same through both paths too."""
    sc = random_scenario(8, 0.5, sources=4, workers=(3, 2, 2, 2))
    params = DtoeeParams(step="paper")
    mine = _per_node_run(sc, 6, params)
    ref = run_dtoee(sc, rounds=6, params=params, stop_when_converged=False).routing
    for node, row in ref.items():
        for s, p in row.items():
            assert abs(mine[node][s] - p) < 1e-12


def test_gone_successor_gets_no_mass():
    """A successor without a status this round gets probability 0; the rest still sums to 1."""
    from agent.policies.dtoee.protocol import Status
    params = DtoeeParams()
    st = {s: Status(s, 3, 5e10, 1e11, 0.05, 0.0, 2, {}, 0) for s in ("a", "b")}
    res = offloader_step("x", 3, {"a": 0.2, "b": 0.3, "c": 0.5}, 10.0, 1.0, 2e9, 1e5,
                         {"a": 1e7, "b": 1e7, "c": 1e7}, st, params, {}, 0)
    assert res.routing["c"] == 0.0
    assert abs(res.routing["a"] + res.routing["b"] - 1.0) < 1e-12
    assert set(res.requests) == {"a", "b"}
    empty = offloader_step("x", 3, {"c": 1.0}, 10.0, 1.0, 2e9, 1e5, {"c": 1e7}, st, params,
                           {}, 0)
    assert empty.routing == {} and empty.requests == {}
    assert np.isfinite(res.omega_s)
