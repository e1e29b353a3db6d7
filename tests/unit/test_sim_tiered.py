"""DIMEE and MLCI in the simulator on the tiered demo scenarios (spec checks D-8, D-9, M-10,
M-11): the simulator's per-task answers agree with the exit-profile replay row by row, and the
policies that cannot run on tiers refuse them in one line."""

import dataclasses
import json
import re

import numpy as np
import pytest

from agent.cli import main as cli
from agent.commands.scenario import TIERED_SETTINGS
from agent.policies.dimee import replay as DP
from agent.policies.dimee import rules as DR
from agent.policies.mlci import replay as MP
from agent.policies.mlci import rules as MR
from agent.policies.registry import make_sim_policy, plan
from agent.policies.setting import ScenarioError
from agent.policies.sim_api import TIERS_NEED_PER_TASK
from agent.scenario.format import load_scenario, save_scenario
from agent.scenario.tiered import SETTINGS, dimee_demo, mlci_demo, tiered_setting
from agent.sim import SimConfig, simulate


@pytest.fixture(scope="module")
def dimee_sc():
    return dimee_demo()


@pytest.fixture(scope="module")
def mlci_sc():
    return mlci_demo()


def _run(sc, name, duration_s, seed=0, **overrides):
    policy = make_sim_policy(name, options={name: overrides} if overrides else None)
    res = simulate(sc, policy, SimConfig(duration_s=duration_s, seed=seed, sample_rows="test"))
    return res, policy


def _positions(rows):
    pos = np.full(int(rows.max()) + 1, -1)
    pos[rows] = np.arange(len(rows))
    return pos


def test_d8_dimee_f_answers_every_task_as_the_replay_does(dimee_sc):
    """D-8: dimee-f on dimee-demo at 5 tasks/s, >= 4000 tasks on test rows: every task done;
    per task the tier is the nearest pool mean's, the exit head, correctness and cost are the
    replay's for its row (exact); accuracy within 2 pt and tier fractions within 3 pt."""
    res, pol = _run(dimee_sc, "dimee-f", 850.0)
    assert len(res.status) >= 4000 and (res.status == 1).all()
    assert (res.sample % 2 == 1).all()
    prof = dimee_sc.exit_profile
    params = DR.params_from_knobs(dimee_sc.knobs["dimee"], extra=("tiers",))
    params = dataclasses.replace(params, adaptive=False)
    model = DP.fit(prof, params)
    assert model.alpha == pol.model.alpha == pytest.approx(0.7)
    rep = DP.replay(prof, model, params)
    at = _positions(rep.rows)[res.sample]
    out = pol.task_outcomes(res, dimee_sc)
    nearest = [DR.nearest_tier(model.pools, prof.embedding[r]) for r in res.sample]
    assert np.array_equal(out["tier"], nearest)
    assert np.array_equal(out["tier"], rep.tier[at])
    assert np.array_equal(out["col"], rep.head[at])
    assert np.array_equal(res.correct, rep.correct[at].astype(np.int8))
    assert np.array_equal(out["cost"], rep.cost[at])
    s = res.summary(0.0)
    assert abs(s["accuracy"] - rep.accuracy) <= 0.02
    frac = np.bincount(out["tier"], minlength=3) / len(out["tier"])
    assert np.abs(frac - rep.tier_fractions).max() <= 0.03
    extra = pol.extra_summary(res, dimee_sc)
    assert extra["cost_vs_cloud"] == pytest.approx(rep.cost_vs_cloud, abs=0.03)


def test_dimee_d_moves_the_pool_means_in_arrival_order(dimee_sc):
    """Ours-D in the simulator: each task's tier is the nearest mean after Alg. 2's updates by
    every earlier task in arrival order (the replay's per-sample functions, replayed here)."""
    res, pol = _run(dimee_sc, "dimee", 200.0, seed=3)
    assert (res.status == 1).all()
    prof = dimee_sc.exit_profile
    params = DR.params_from_knobs(dimee_sc.knobs["dimee"], extra=("tiers",))
    pools = DP.fit(prof, params).pools
    want = []
    for r in res.sample:
        t = DR.nearest_tier(pools, prof.embedding[r])
        pools = DR.update_pool(pools, t, prof.embedding[r])
        want.append(t)
    assert np.array_equal(pol.task_outcomes(res, dimee_sc)["tier"], want)
    assert np.allclose(pol.pools.mean, pools.mean, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["tier-cloud", "tier-edge", "tier-mobile", "tier-oracle"])
def test_dimee_baselines_in_the_simulator_answer_as_the_replay_does(dimee_sc, name):
    """The paper's fixed-tier baselines and the oracle (Alg. 1 on the task's own confidences):
    per task the tier, exit head, correctness and cost are the replay's with that assignment."""
    res, pol = _run(dimee_sc, name, 200.0, seed=2)
    assert (res.status == 1).all()
    prof = dimee_sc.exit_profile
    params = DR.params_from_knobs(dict(dimee_sc.knobs["dimee"], assign=name[len("tier-"):],
                                       adaptive=False), extra=("tiers",))
    rep = DP.replay(prof, DP.fit(prof, params), params)
    at = _positions(rep.rows)[res.sample]
    out = pol.task_outcomes(res, dimee_sc)
    assert np.array_equal(out["tier"], rep.tier[at]) and np.array_equal(out["col"], rep.head[at])
    assert np.array_equal(res.correct, rep.correct[at].astype(np.int8))
    assert np.array_equal(out["cost"], rep.cost[at])


def test_tier_mobile_on_dimee_demo_ee_is_the_early_exit_baseline():
    """dimee-demo-ee with tier-mobile: the whole model on the mobile at DIMEE's alpha*; per task
    the exit head, correctness and cost are the replay's Early-Exit baseline for its row."""
    sc = tiered_setting("dimee-demo-ee")
    assert [w.id for w in sc.workers] == ["mob/1", "mob/2", "mob/3", "mob/4"]
    assert sc.workers[-1].terminal and sc.knobs["dimee"]["grid"] == [pytest.approx(0.7)]
    res, pol = _run(sc, "tier-mobile", 200.0, seed=4)
    assert (res.status == 1).all()
    prof = sc.exit_profile
    params = DR.params_from_knobs(dimee_demo().knobs["dimee"], extra=("tiers",))
    rep = DP.early_exit_baseline(prof, params, 0.7)
    at = _positions(rep.rows)[res.sample]
    out = pol.task_outcomes(res, sc)
    assert np.array_equal(out["col"], rep.head[at])
    assert np.array_equal(res.correct, rep.correct[at].astype(np.int8))
    assert np.allclose(out["cost"], rep.cost[at], rtol=0, atol=1e-12)
    # a terminal worker at the last stage is an ordinary one: the planners take this setting
    assert plan(sc, "cf").routing == {"mob/src": {"mob/1": 1.0}, "mob/1": {"mob/2": 1.0},
                                      "mob/2": {"mob/3": 1.0}, "mob/3": {"mob/4": 1.0}}


def test_tier_random_spreads_tasks_over_the_three_tiers(dimee_sc):
    """tier-random: each task to a uniformly drawn tier (seeded): about a third each."""
    res, pol = _run(dimee_sc, "tier-random", 400.0, seed=1)
    frac = np.bincount(pol.task_outcomes(res, dimee_sc)["tier"], minlength=3) / len(res.status)
    assert len(res.status) > 1800 and np.abs(frac - 1 / 3).max() < 0.05


@pytest.mark.parametrize("setting", ["dimee-demo", "mlci-demo"])
def test_d9_m11_planners_and_mdi_exit_refuse_the_tiered_scenarios(setting, tmp_path, capsys):
    """D-9, M-11: dtoee, cf, bf, ngto, ga, optimum (plan) and dtoee, cf, mdi-exit (simulate)
    refuse dimee-demo and mlci-demo with the one-line message; exit status 2 on the command."""
    sc = tiered_setting(setting)
    msg = "^" + re.escape(TIERS_NEED_PER_TASK)
    for name in ("dtoee", "cf", "bf", "ngto", "ga", "optimum"):
        with pytest.raises(ScenarioError, match=msg):
            plan(sc, name)
    for name in ("dtoee", "cf", "mdi-exit"):
        with pytest.raises(ScenarioError, match=msg):
            simulate(sc, make_sim_policy(name), SimConfig(duration_s=5.0))
    path = str(tmp_path / "s.json")
    save_scenario(path, sc)
    assert cli(["plan", "--policy", "dtoee", "--scenario", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and TIERS_NEED_PER_TASK in err[0]


@pytest.mark.parametrize("name", ["mlci", "tabi"])
def test_m10_mlci_and_tabi_agree_with_the_exact_replay(mlci_sc, name):
    """M-10: mlci and tabi on mlci-demo at 2.5 tasks/s, >= 3000 tasks on test rows: all done;
    per task the answer's correctness is the replay's at the answering level (exact) and its
    delay at least the eqs. 1-3 latency there; accuracy within 2 pt, level fractions within
    3 pt of the expectation, mean delay within 10 % of its latency."""
    res, pol = _run(mlci_sc, name, 1250.0)
    assert len(res.status) >= 3000 and (res.status == 1).all()
    prof = mlci_sc.exit_profile
    params = MP.variant(MR.params_from_knobs(mlci_sc.knobs["mlci"]), name)
    setting = MP.setting_from_scenario(mlci_sc, params)
    model = MP.fit(prof, params, MP.choose_prefixes(prof, params, setting))
    assert model.prefixes == pol.model.prefixes == (1, 3, 4)
    rep = MP.expected_replay(prof, model, params, setting)
    at = _positions(rep.rows)[res.sample]
    level = pol.answering_level(res, mlci_sc)
    assert (rep.stop[at, level] > 0).all()
    assert np.array_equal(res.correct, rep.correct[at, level].astype(np.int8))
    assert (res.delay_s >= rep.latency_s[at, level] - 1e-9).all()
    exit_stage = np.asarray(prof.exit_stages)[rep.exit_col[at, level]]
    assert np.array_equal(res.exit_stage, exit_stage)
    assert abs(res.correct.mean() - rep.accuracy) <= 0.02
    frac = np.bincount(level, minlength=3) / len(level)
    assert np.abs(frac - rep.level_fractions).max() <= 0.03
    assert res.delay_s.mean() == pytest.approx(rep.mean_latency_s, rel=0.10)


def test_mlci_noens_answers_with_the_last_levels_own_output(mlci_sc):
    """mlci-noens: each answer is right iff the answering level's own exit head is."""
    res, pol = _run(mlci_sc, "mlci-noens", 200.0, seed=1)
    prof = mlci_sc.exit_profile
    col = {s: c for c, s in enumerate(prof.exit_stages)}
    cols = [col[int(s)] for s in res.exit_stage]
    assert np.array_equal(res.correct, prof.correct[res.sample, cols].astype(np.int8))


def test_tiered_generators_write_scenarios_that_load_back(tmp_path):
    """dimee-demo: mobile 1..1 and edge 1..2 terminal at their last stage, cloud 1..4, links
    from the source to each tier; mlci-demo: end 1..1, edge 1..3, cloud 1..4 and restart links
    up from every stage with a head; both round-trip through the file; the command's list of
    settings names them."""
    assert TIERED_SETTINGS == SETTINGS
    d, m = dimee_demo(), mlci_demo()
    assert [(w.id, w.terminal) for w in d.workers if w.terminal] == [("mob/1", True),
                                                                    ("edge/2", True)]
    assert {(l.src, l.dst, l.rate) for l in d.links if l.src == "mob/src"} == {
        ("mob/src", "mob/1", 1e12), ("mob/src", "edge/1", 3.2e5), ("mob/src", "cloud/1", 3.2e4)}
    assert [(l.src, l.dst) for l in m.links if l.restart] == [
        ("end/1", "edge/1"), ("edge/1", "cloud/1"), ("edge/2", "cloud/1"), ("edge/3", "cloud/1")]
    assert [w.id for w in m.workers] == ["end/1", "edge/1", "edge/2", "edge/3", "cloud/1",
                                         "cloud/2", "cloud/3", "cloud/4"]
    for sc in (d, m):
        path = str(tmp_path / "x.json")
        save_scenario(path, sc)
        back = load_scenario(path)
        assert back.workers == sc.workers and back.links == sc.links and back.knobs == sc.knobs
    wide = dimee_demo(knobs={"dimee": {"n": 3}})
    assert [w.id for w in wide.workers if w.terminal] == ["mob/1", "edge/3"]


def test_scenario_and_simulate_commands_run_dimee_and_mlci(tmp_path, capsys):
    """`scenario dimee-demo|mlci-demo` then `simulate --policies ...`: the tasks carry test rows
    by default, and results.json holds each policy's own summary (DIMEE's cost and tiers,
    MLCI's level fractions)."""
    for setting, pols in (("dimee-demo", "dimee,dimee-f"), ("mlci-demo", "mlci,tabi,mlci-noens")):
        path = str(tmp_path / (setting + ".json"))
        assert cli(["scenario", setting, "-o", path]) == 0
        out = str(tmp_path / setting)
        assert cli(["simulate", "--scenario", path, "--policies", pols, "--duration", "60",
                    "--warmup", "0", "--out", out, "--no-plots", "--records"]) == 0
        with open(out + "/results.json") as f:
            res = json.load(f)
        assert res["config"]["sample_rows"] == "test"
        for row in res["rates"]:
            assert row["completed"] == row["tasks"] > 50
            extra = row["policy_summary"]
            if setting == "dimee-demo":
                assert set(extra) == {"alpha", "cost", "cost_vs_cloud", "tier_fractions"}
            else:
                assert extra["deployment"] == [1, 3, 4]
                assert sum(extra["level_fractions"]) == pytest.approx(1.0)
    text = capsys.readouterr().out
    assert "tier_fractions mobile" in text and "level_fractions" in text
    with np.load(str(tmp_path / "mlci-demo" / "records" / "mlci_rate2.5.npz")) as z:
        assert (z["answered_by"] >= 0).all() and (z["sample"] % 2 == 1).all()
