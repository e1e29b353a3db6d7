"""The discrete-event simulator against queueing theory, the model's eq. 8, and its own rules."""

import dataclasses

import numpy as np
import pytest

from agent.policies.model import mean_response_time, wire_bytes
from agent.scenario.format import parse_scenario
from agent.sim import (COMPLETED, REJECTED, UNFINISHED, Decision, DynamicConfig, FixedPolicy,
                       SimConfig, SimPolicy, simulate)
from agent.sim.engine import Simulator
from engines.exit_profile import ExitProfile, exit_index


def three_stage(rate=8.0, capacities=(3e10, 4e10, 3e10, 3e10, 3e10), remaining=(1.0, 0.5, 1.0)):
    """4 sources -> 2 workers -> 2 workers (exit) -> 1 worker, 1 GFLOP per stage."""
    a1, a2, b1, b2, c1 = capacities
    return {
        "stages": [{"flops": 1e9, "input_bytes": 1e5, "exit": False},
                   {"flops": 1e9, "input_bytes": 1e5, "exit": True},
                   {"flops": 1e9, "input_bytes": 1e5, "exit": False}],
        "remaining": list(remaining),
        "sources": [{"id": "s%d" % i, "rate": rate} for i in range(4)],
        "workers": [{"id": "a1", "stage": 1, "capacity": a1},
                    {"id": "a2", "stage": 1, "capacity": a2},
                    {"id": "b1", "stage": 2, "capacity": b1},
                    {"id": "b2", "stage": 2, "capacity": b2},
                    {"id": "c1", "stage": 3, "capacity": c1}],
        "links": ([{"from": "s%d" % i, "to": t, "rate": 5e6 * (1 + i)}
                   for i in range(4) for t in ("a1", "a2")]
                  + [{"from": a, "to": b, "rate": 1e7} for a in ("a1", "a2") for b in ("b1", "b2")]
                  + [{"from": b, "to": "c1", "rate": 1.5e7} for b in ("b1", "b2")]),
    }


def test_mean_delay_matches_eq8_for_fixed_routing_at_moderate_load():
    """Long run, fixed non-uniform routing, busiest worker ~60%: simulated mean delay is within
    5% of the model's eq. 8 (agent.policies.model.mean_response_time)."""
    sc = parse_scenario(three_stage(rate=8.0))
    routing = {"s0": {"a1": 0.3, "a2": 0.7}, "s1": {"a1": 0.5, "a2": 0.5},
               "s2": {"a1": 0.6, "a2": 0.4}, "s3": {"a1": 0.4, "a2": 0.6},
               "a1": {"b1": 0.5, "b2": 0.5}, "a2": {"b1": 0.3, "b2": 0.7},
               "b1": {"c1": 1.0}, "b2": {"c1": 1.0}}
    model = mean_response_time(sc, routing)
    res = simulate(sc, FixedPolicy(routing), SimConfig(duration_s=1500.0, warmup_s=20.0, seed=3))
    s = res.summary()
    assert s["completed"] == s["tasks"] > 40000
    assert s["mean_delay_s"] == pytest.approx(model, rel=0.05)


def test_fifo_single_server_matches_pollaczek_khinchine():
    """One source, one FIFO worker with deterministic service: the mean response time is the
    M/D/1 formula S + rho*S/(2(1-rho)) plus the hop delay."""
    obj = {"stages": [{"flops": 1e9, "input_bytes": 1e5, "exit": False}], "remaining": [1.0],
           "sources": [{"id": "s", "rate": 14.0}],
           "workers": [{"id": "w", "stage": 1, "capacity": 2e10}],
           "links": [{"from": "s", "to": "w", "rate": 1e7}]}
    sc = parse_scenario(obj)
    res = simulate(sc, FixedPolicy(None), SimConfig(duration_s=3000.0, warmup_s=10.0,
                                                    discipline="fifo", seed=1))
    svc, rho = 1e9 / 2e10, 14.0 * 1e9 / 2e10
    expected = svc + rho * svc / (2 * (1 - rho)) + 1e5 / 1e7
    assert res.summary()["mean_delay_s"] == pytest.approx(expected, rel=0.04)


def test_shared_link_queues_like_a_server():
    """With links as shared servers, a slow link adds its own queueing: mean delay exceeds the
    fixed-hop model and equals the PS sojourn b/(r - rate*b) of the link plus the worker's, b
    the wire bytes of a beta-byte tensor (what the policies plan with: model.hop_bytes)."""
    obj = {"stages": [{"flops": 1e8, "input_bytes": 1e5, "exit": False}], "remaining": [1.0],
           "sources": [{"id": "s", "rate": 20.0}],
           "workers": [{"id": "w", "stage": 1, "capacity": 1e11}],
           "links": [{"from": "s", "to": "w", "rate": 4e6}]}
    sc = parse_scenario(obj)
    res = simulate(sc, FixedPolicy(None), SimConfig(duration_s=2000.0, warmup_s=10.0,
                                                    link_model="shared", seed=2))
    b = float(wire_bytes(1e5))
    assert 1e5 < b < 1.1e5
    link = b / (4e6 - 20.0 * b)
    worker = 1e8 / (1e11 - 20.0 * 1e8)
    assert res.summary()["mean_delay_s"] == pytest.approx(link + worker, rel=0.05)


def test_one_link_model_is_planned_with_and_simulated():
    """Rule: the simulator simulates the link model its policies plan with: the config's when
    given (it overrides the scenario's knob for both), else the scenario's ``link_model`` knob,
    else the paper's "delay"; a scenario whose knob says "shared" is simulated with queueing
    links, as the shared-link rule above gives."""
    obj = {"stages": [{"flops": 1e8, "input_bytes": 1e5, "exit": False}], "remaining": [1.0],
           "sources": [{"id": "s", "rate": 20.0}],
           "workers": [{"id": "w", "stage": 1, "capacity": 1e11}],
           "links": [{"from": "s", "to": "w", "rate": 4e6}]}
    plain, shared = parse_scenario(obj), parse_scenario(dict(obj, knobs={"link_model": "shared"}))
    for sc, cfg, want in ((plain, SimConfig(), "delay"), (shared, SimConfig(), "shared"),
                          (shared, SimConfig(link_model="delay"), "delay"),
                          (plain, SimConfig(link_model="shared"), "shared")):
        sim = Simulator(sc, FixedPolicy(None), cfg)
        assert (sim.config.link_model, sim.scenario.knobs["link_model"]) == (want, want)
    res = simulate(shared, FixedPolicy(None), SimConfig(duration_s=2000.0, warmup_s=10.0, seed=2))
    b = float(wire_bytes(1e5))
    link, worker = b / (4e6 - 20.0 * b), 1e8 / (1e11 - 20.0 * 1e8)
    assert res.summary()["mean_delay_s"] == pytest.approx(link + worker, rel=0.05)


def _profile(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    conf = rng.random((n, 2))
    correct = rng.random((n, 2)) < np.array([0.6, 0.8])
    return ExitProfile(3, (2, 3), conf, correct, synthetic=True)


def with_profile(sc):
    """The scenario with thresholds tuned on a random exit profile instead of fixed ratios."""
    return dataclasses.replace(sc, remaining=None, exit_profile=_profile())


def test_tasks_exit_by_should_exit_on_their_sample():
    """Every task leaves at the head the exit rule picks for its own sample, and accuracy is
    the correctness of that head on that sample."""
    sc = with_profile(parse_scenario(three_stage(rate=3.0)))
    res = simulate(sc, FixedPolicy(None, {2: 0.55}), SimConfig(duration_s=200.0, seed=4))
    ok = res.status == COMPLETED
    assert ok.all()
    cols = exit_index(sc.exit_profile, {2: 0.55})[res.sample]
    assert np.array_equal(res.exit_stage, np.array([2, 3])[cols])
    assert np.array_equal(res.correct.astype(bool), sc.exit_profile.correct[res.sample, cols])


def test_decision_applies_after_its_configuration_rounds():
    """A decision with 250 rounds at 2 ms takes effect 0.5 s into the slot; before, the old
    thresholds (1.0: no early exit) hold. The threshold is read when a task reaches the exit."""
    sc = with_profile(parse_scenario(three_stage(rate=20.0)))
    res = simulate(sc, FixedPolicy(None, {2: 0.0}, rounds=250),
                   SimConfig(duration_s=2.0, round_delay_s=0.002, configured_start=False))
    late = res.created_s > 0.5
    assert (res.exit_stage[late] == 2).all()
    early = res.finished_s < 0.5  # passed the stage-2 exit before the decision applied
    assert early.sum() > 5 and (res.exit_stage[early] == 3).all()
    assert res.slots[0]["config_s"] == pytest.approx(0.5)
    configured = simulate(sc, FixedPolicy(None, {2: 0.0}, rounds=250), SimConfig(duration_s=2.0))
    assert (configured.exit_stage == 2).all()  # configured before the first task


def test_no_task_is_lost_when_a_worker_is_overloaded():
    """Routing everything to a too-slow worker: tasks pile up, and those not served within the
    drain limit are counted as unfinished, not dropped."""
    sc = parse_scenario(three_stage(rate=8.0, capacities=(3e10, 4e10, 3e10, 3e10, 1e10)))
    res = simulate(sc, FixedPolicy(None), SimConfig(duration_s=50.0, drain_limit_s=1.0))
    s = res.summary()
    assert s["unfinished"] > 0
    assert s["completed"] + s["unfinished"] + s["rejected"] == s["tasks"] == len(res.status)
    assert np.isnan(res.finished_s[res.status == UNFINISHED]).all()


def test_dynamic_mode_redraws_rates_and_power_modes_with_common_random_numbers():
    """Dynamic slots change source rates and capacities every slot; two policies with the
    same seed see the same tasks."""
    obj = three_stage(rate=5.0)
    obj["workers"][0]["power_modes"] = {"MAXN": 3e10, "15W": 1.5e10}
    sc = parse_scenario(obj)
    cfg = SimConfig(duration_s=30.0, slot_s=5.0, dynamic=DynamicConfig(), seed=9)
    a = simulate(sc, FixedPolicy(None, name="a"), cfg)
    b = simulate(sc, FixedPolicy({"s0": {"a1": 1.0, "a2": 0.0}}, name="b"), cfg)
    assert np.array_equal(a.created_s, b.created_s) and np.array_equal(a.sample, b.sample)
    rates = {round(sum(s["rates"]), 6) for s in a.slots}
    assert len(a.slots) == 6 and len(rates) == 6
    assert {s["capacities"][0] for s in a.slots} <= {3e10, 1.5e10}
    assert len({s["capacities"][2] for s in a.slots}) > 1  # no power_modes: base x factor
    assert len(a.slot_series()) == 6


class ShortestQueue(SimPolicy):
    """A queue-based per-task policy: join the successor with the fewest tasks; hold tasks at
    sources until the first tick; refuse every third task at admission."""

    name = "jsq"
    per_task = True
    admission = True
    tick_s = 0.5

    def __init__(self):
        self.ticks = 0

    def route(self, node, task, view):
        if self.ticks == 0 and view.stage[view.index[node]] == 0:
            return None
        succ = [view.names[j] for j in view.succ[view.index[node]]]
        return min(succ, key=lambda j: (view.input_queue(j) + 1) * view.compute_delay_s(j)
                   + view.link_delay_s(node, j))

    def admit(self, source, task, view):
        return task % 3 != 0

    def on_tick(self, view):
        self.ticks += 1


def test_per_task_hook_holds_admits_and_routes_by_queue_length():
    """The hook a queue-based policy (MDI-Exit) needs: per-task routing from live queue
    lengths, held tasks released after a tick, admission control recorded as rejected."""
    sc = parse_scenario(three_stage(rate=8.0))
    res = simulate(sc, ShortestQueue(), SimConfig(duration_s=100.0, seed=5))
    s = res.summary(start_s=0.0)
    assert s["rejected"] == len(range(0, s["tasks"], 3))
    assert s["completed"] + s["rejected"] == s["tasks"]
    held = (res.created_s < 0.5) & (res.status == COMPLETED)
    assert (res.finished_s[held] > 0.5).all()
    assert (res.status[::3] == REJECTED).all()


def test_same_seed_same_result():
    """Runs are reproducible: the seed fixes arrivals, samples, routing draws and service."""
    sc = parse_scenario(three_stage(rate=6.0))
    cfg = SimConfig(duration_s=40.0, seed=11, service="exponential")
    a, b = simulate(sc, FixedPolicy(None), cfg), simulate(sc, FixedPolicy(None), cfg)
    assert np.array_equal(a.finished_s, b.finished_s)


def test_bad_sim_config_names_the_field():
    """A wrong SimConfig value raises ValueError naming the field."""
    with pytest.raises(ValueError, match="discipline"):
        SimConfig(discipline="lifo").validate()
    with pytest.raises(ValueError, match="slot_s"):
        SimConfig(slot_s=0).validate()


def test_policy_routing_to_a_non_successor_is_refused():
    """A decision routing to a node without a link is a policy bug and fails loudly."""
    sc = parse_scenario(three_stage())
    with pytest.raises(ValueError, match="s0"):
        simulate(sc, FixedPolicy({"s0": {"c1": 1.0}}), SimConfig(duration_s=1.0))


def test_decision_is_a_plain_value():
    """Decision defaults keep the table and thresholds in force."""
    d = Decision()
    assert d.routing is None and d.thresholds is None and d.rounds == 0
