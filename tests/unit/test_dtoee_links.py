"""DTO-EE with links as servers (``link_model`` "shared", the default): one model everywhere.

- eq. 8 charges a link L/(r - L) with L its wire bytes/s, infinite at capacity; the paper's
  "delay" model keeps beta/r;
- the central optimum keeps every link below capacity, and DTO-EE converges to it on random
  link-bound networks: within 1% by round 50 at light and moderate load, every worker and link
  below capacity by round 50 at heavy load;
- the agent's per-node functions give the driver's routing with the link term too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.network import run_dtoee
from agent.policies.model import (
    compile_network,
    link_utilisation,
    loads,
    network_delay,
    node_rates,
    routing_vector,
    wire_bytes,
    with_link_model,
)
from agent.policies.optimum import optimum
from agent.scenario.format import parse_scenario
from tests.unit.dtoee_scenarios import link_bound_scenario
from tests.unit.test_dtoee_protocol import _per_node_run

SMALL = dict(sources=4, workers=(3, 3, 2, 2))
LIGHT = [(7100 + i, load) for i, load in enumerate((0.3, 0.3, 0.4, 0.5, 0.6, 0.6))]
HEAVY = [(7200 + i, 0.85) for i in range(4)]


def _one_link(rate_bytes_s: float, tasks_s: float, model: str):
    return parse_scenario({
        "stages": [{"flops": 1e9, "input_bytes": 10000.0, "exit": False}],
        "remaining": [1.0], "tradeoff": 0.5, "knobs": {"link_model": model},
        "sources": [{"id": "s", "rate": tasks_s}],
        "workers": [{"id": "w", "stage": 1, "capacity": 1e11}],
        "links": [{"from": "s", "to": "w", "rate": rate_bytes_s}]})


def test_a_shared_link_queues_and_the_paper_link_does_not():
    """Shared: T = alpha/(mu - lambda) + b/(r - L) with b the wire bytes; delay: + beta/r."""
    b = float(wire_bytes(10000.0))
    assert b > 10000.0
    for model, hop in (("shared", b / (1e6 - 50 * b)), ("delay", 10000.0 / 1e6)):
        sc = _one_link(1e6, 50.0, model)
        net = compile_network(sc)
        t = network_delay(net, np.ones(1), sc.remaining)
        assert t == pytest.approx(1e9 / (1e11 - 50e9) + hop, rel=1e-12)
    # 95 tasks/s of wire bytes exceed the link (not its 10,000-byte tensors): infinite under
    # "shared" only
    for model, finite in (("shared", False), ("delay", True)):
        sc = _one_link(1e6, 95.0, model)
        assert math.isfinite(network_delay(compile_network(sc), np.ones(1), sc.remaining)) \
            == finite


def test_node_delay_with_shared_links_is_compute_plus_mean_queued_hop():
    """eq. 7 with links as servers: T_w = alpha/(mu - lambda) + b/(r - L) for its one link."""
    from agent.policies.model import node_delays

    b = float(wire_bytes(10000.0))
    sc = _one_link(1e6, 50.0, "shared")
    net = compile_network(sc)
    t = node_delays(net, np.ones(1), sc.remaining)
    assert t[net.index()["w"]] == pytest.approx(1e9 / (1e11 - 50e9) + b / (1e6 - 50 * b))


def _gap_history(sc, rounds):
    best = optimum(sc)
    assert best.converged and math.isfinite(best.delay_s)
    res = run_dtoee(sc, rounds=rounds, params=DtoeeParams(), stop_when_converged=False,
                    track=True)
    return np.asarray(res.history) / best.delay_s - 1.0, res


@pytest.mark.parametrize("seed,load", LIGHT)
def test_light_and_moderate_link_bound_load_within_1pct_in_50_rounds(seed, load):
    """At light and moderate load DTO-EE is within 1% of the link-aware optimum by round 50."""
    gaps, _ = _gap_history(link_bound_scenario(seed, load, **SMALL), 50)
    assert gaps[-1] <= 0.01, gaps[[9, 24, 49]]


@pytest.mark.parametrize("seed,load", HEAVY)
def test_heavy_link_bound_load_feasible_by_round_50(seed, load):
    """At 85% every worker and every link is below capacity at round 50."""
    sc = link_bound_scenario(seed, load, **SMALL)
    gaps, res = _gap_history(sc, 50)
    net = compile_network(sc)
    p = routing_vector(net, res.routing)
    assert np.all(link_utilisation(net, p, sc.remaining) < 1.0)
    w = net.stage > 0
    assert np.all(loads(net, node_rates(net, p, sc.remaining))[w] < net.capacity[w])
    assert math.isfinite(gaps[-1])


def test_optimum_keeps_links_below_capacity_where_the_paper_model_overloads_them():
    """The paper's model (fixed beta/r) puts a source's tasks on a fast-looking link past its
    capacity; the shared model's optimum keeps every link below it."""
    sc = link_bound_scenario(7300, 0.85, **SMALL)
    for model in ("shared", "delay"):
        s2 = with_link_model(sc, model)
        net = compile_network(s2)
        top = link_utilisation(compile_network(sc), routing_vector(
            net, optimum(s2).routing), sc.remaining).max()
        if model == "shared":
            assert top < 1.0
    assert top > 1.0  # the "delay" optimum, measured with the wire bytes


def test_per_node_steps_match_the_network_driver_with_links():
    """The agent's per-node functions and run_dtoee compute the same routing with link terms."""
    sc = link_bound_scenario(7400, 0.7, **SMALL)
    params = DtoeeParams()
    for rounds in (1, 4, 12):
        mine = _per_node_run(sc, rounds, params)
        ref = run_dtoee(sc, rounds=rounds, params=params, stop_when_converged=False).routing
        for node, row in ref.items():
            for s, p in row.items():
                assert abs(mine[node][s] - p) < 1e-9, (rounds, node, s)


def test_ngto_best_response_with_shared_links_equalises_marginal_delays():
    """NGTO's best response with links as servers: every used receiver has the same marginal
    delay alpha F/(F - alpha x)^2 + b r/(r - b x)^2, unused ones a higher one at x = 0."""
    from agent.policies.baselines.plans import best_response

    alpha, b, flow = 2e9, 3570.0, 30.0
    free = np.array([8e10, 5e10, 2e10, 6e10])
    rate = np.array([2e5, 6e4, 3e5, 1e4])
    x = best_response(flow, alpha, free, 0.0, rate, b) * flow
    assert x.sum() == pytest.approx(flow)
    assert np.all(b * x < rate) and np.all(alpha * x < free)
    g = alpha * free / (free - alpha * x) ** 2 + b * rate / (rate - b * x) ** 2
    used = x > 1e-9
    assert used.sum() >= 2
    assert np.ptp(g[used]) <= 1e-6 * g[used].max()
    assert np.all(g[~used] >= g[used].max() * (1 - 1e-9))


def test_plan_link_model_flag_and_link_utilisation(tmp_path, capsys):
    """`plan --link-model delay` plans in the paper's model (its delay_s is eq. 8 with beta/r)
    and every plan reports each link's utilisation, wire bytes under the shared default."""
    import json

    from agent.cli import main
    from agent.policies.model import mean_response_time

    sc = link_bound_scenario(7500, 0.6, sources=3, workers=(2, 2, 2, 1))
    obj = {"stages": [{"flops": s.flops, "input_bytes": s.input_bytes, "exit": s.exit}
                      for s in sc.stages],
           "remaining": list(sc.remaining), "tradeoff": 0.5,
           "sources": [{"id": s.id, "rate": s.rate} for s in sc.sources],
           "workers": [{"id": w.id, "stage": w.stage, "capacity": w.capacity}
                       for w in sc.workers],
           "links": [{"from": ln.src, "to": ln.dst, "rate": ln.rate} for ln in sc.links]}
    path = str(tmp_path / "s.json")
    with open(path, "w") as f:
        json.dump(obj, f)
    out = {}
    for model in ("shared", "delay"):
        assert main(["plan", "-s", path, "-p", "optimum", "--link-model", model, "--json"]) == 0
        out[model] = json.loads(capsys.readouterr().out)
        want = mean_response_time(with_link_model(sc, model), out[model]["routing"])
        assert out[model]["delay_s"] == pytest.approx(want, rel=1e-9)
    shared = out["shared"]["link_utilisation"]
    assert max(u for row in shared.values() for u in row.values()) < 1.0
    assert set(shared) == {ln.src for ln in sc.links}
