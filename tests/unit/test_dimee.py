"""DIMEE (seed paper 004), pure policy and replay: the spec's checks D-1..D-7, the knobs, and
``plan --policy dimee`` on the tiered demo setting."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from agent.cli import main as cli
from agent.errors import UsageError
from agent.policies.dimee import rules as R
from agent.policies.dimee import replay as P
from agent.policies.splits import test_rows, validation_rows
from agent.scenario.format import save_scenario
from engines.demo import DEMO_BUNDLE_DIR
from engines.exit_profile import ExitProfile, load_exit_profile
from tests.unit.tiered_demo import tiered_demo_scenario

# 6 rows, 3 heads (stages 1..3), m = 1, n = 2, alpha = 0.5 (hand-computed below)
HAND = np.array([[0.9, 0.95, 0.97],   # easy: mobile, head 1: 0.9 - 0.05*1.5*1 = 0.825
                 [0.3, 0.6, 0.8],     # moderate: edge, head 2: 0.6 - 0.05*2 - 0.05*2.5 = 0.375
                 [0.3, 0.4, 0.7],     # hard: cloud, head 3: 0.7 - 0.05*(3 + 5) = 0.3
                 [0.5, 0.2, 0.3],     # easy (0.5 >= 0.5): 0.5 - 0.075 = 0.425
                 [0.26, 0.49, 0.99],  # hard: 0.99 - 0.4 = 0.59
                 [0.45, 0.55, 0.6]])  # moderate: 0.55 - 0.225 = 0.325
HAND_TIERS = [R.MOBILE, R.EDGE, R.CLOUD, R.MOBILE, R.CLOUD, R.EDGE]
HAND_HEADS = [0, 1, 2, 0, 2, 1]
HAND_REWARDS = [0.825, 0.375, 0.3, 0.425, 0.59, 0.325]


@pytest.fixture(scope="module")
def demo():
    return load_exit_profile(DEMO_BUNDLE_DIR + "/exit_profile.npz")


def _hand_profile():
    return ExitProfile(3, (1, 2, 3), HAND, HAND > 0.55)


def test_d1_alg1_and_eqs_2_3_on_a_hand_made_profile():
    """D-1: Alg. 1's tiers, the answering heads, eq. 2's rewards and eq. 3's mean equal the
    hand-computed values; S = linspace(1/C, 1, 10) exactly; choose_alpha returns the first
    maximiser."""
    params = R.DimeeParams(m=1, n=2, num_classes=4)
    lay = R.layout(_hand_profile(), params)
    costs = params.costs
    assert list(R.oracle_tiers(HAND, 0.5, lay)) == HAND_TIERS
    assert [R.answer_head(HAND[i], HAND_TIERS[i], 0.5, lay) for i in range(6)] == HAND_HEADS
    assert np.allclose(R.rewards(HAND, 0.5, costs, lay), HAND_REWARDS, rtol=0, atol=1e-12)
    assert abs(R.expected_reward(HAND, 0.5, costs, lay) - sum(HAND_REWARDS) / 6) < 1e-12
    # the edge applies alpha from head 1 on; the cloud answers at the final head
    assert R.answer_head(HAND[0], R.EDGE, 0.5, lay) == 0
    assert R.answer_head(HAND[0], R.CLOUD, 0.5, lay) == 2
    assert R.sample_cost(R.EDGE, 0, costs, lay) == pytest.approx(0.05 * (1 + 2.5))
    assert np.array_equal(R.threshold_grid(4), np.linspace(0.25, 1.0, 10))
    # every row is hard at 0.995 and at 1.0: equal E[r], the first one wins
    alpha, table = R.choose_alpha(HAND, costs, lay, [0.995, 1.0])
    assert alpha == 0.995 and table[0.995] == table[1.0]


def test_d2_oracle_replay_mean_reward_is_eq_3(demo):
    """D-2: replaying Alg. 1's own tiers on the validation rows gives a mean reward equal to
    eq. 3's E[r] at alpha* (|delta| < 1e-12)."""
    params = R.DimeeParams(assign="oracle")
    model = P.fit(demo, params)
    rows = validation_rows(demo.num_samples)
    res = P.replay(demo, model, params, rows)
    reward = demo.confidence[res.rows, res.head] - res.cost
    conf = demo.confidence[rows]
    assert abs(reward.mean() - R.expected_reward(conf, model.alpha, params.costs,
                                                 model.layout)) < 1e-12


def test_d3_alg2_updates_pool_means_and_skips_empty_pools(demo):
    """D-3: after k Alg. 2 updates a pool mean equals the mean of its validation members and
    the k new embeddings; Ours-F leaves the pools unchanged; an empty pool is never chosen and
    a distance tie goes to the lower tier."""
    model = P.fit(demo, R.DimeeParams())
    val = validation_rows(demo.num_samples)
    tiers = R.oracle_tiers(demo.confidence[val], model.alpha, model.layout)
    new = demo.embedding[test_rows(demo.num_samples)[:7]].astype(np.float64)
    pools = model.pools
    for e in new:
        pools = R.update_pool(pools, R.EDGE, e)
    members = np.vstack([demo.embedding[val][tiers == R.EDGE].astype(np.float64), new])
    assert np.max(np.abs(pools.mean[R.EDGE] - members.mean(axis=0))) < 1e-12
    assert pools.count[R.EDGE] == model.pools.count[R.EDGE] + 7
    assert np.array_equal(pools.mean[R.MOBILE], model.pools.mean[R.MOBILE])
    fixed = P.replay(demo, model, R.DimeeParams(adaptive=False))
    assert fixed.pools is model.pools
    empty = R.Pools(np.array([[1.0, 0.0], [0.0, 0.0], [3.0, 0.0]]), np.array([2, 0, 2]),
                    np.array([True, False, True]))
    assert R.nearest_tier(empty, np.array([0.0, 0.0])) == R.MOBILE
    assert R.nearest_tier(empty, np.array([2.0, 0.0])) == R.MOBILE  # tie: the lower tier


def test_d4_vectorised_replay_equals_the_per_sample_functions(demo):
    """D-4: on the demo test rows, the vectorised replay (tiers, heads, correctness, cost) equals
    a loop over nearest_tier / update_pool / answer_head / sample_cost, for Ours-F, Ours-D
    and the oracle."""
    for params in (R.DimeeParams(adaptive=False), R.DimeeParams(), R.DimeeParams(assign="oracle")):
        model = P.fit(demo, params)
        res = P.replay(demo, model, params)
        pools = model.pools
        for i, row in enumerate(test_rows(demo.num_samples)):
            e = demo.embedding[row]
            if params.assign == "oracle":
                tier = int(R.oracle_tiers(demo.confidence[row:row + 1], model.alpha,
                                          model.layout)[0])
            else:
                tier = R.nearest_tier(pools, e)
                if params.adaptive:
                    pools = R.update_pool(pools, tier, e)
            head = R.answer_head(demo.confidence[row], tier, model.alpha, model.layout)
            assert (res.tier[i], res.head[i]) == (tier, head), row
            assert res.correct[i] == demo.correct[row, head]
            assert res.cost[i] == R.sample_cost(tier, head, params.costs, model.layout)


def test_d5_demo_replay_saves_cost_and_beats_random_at_its_own_fractions(demo):
    """D-5: defaults on the demo: alpha* = 0.7; DIMEE-F costs >= 35 % less than cloud-only,
    answers >= 1 point better than the mean of 200 random assignments with its own tier
    fractions, and loses <= 10 points against cloud-only."""
    params = R.DimeeParams(adaptive=False)
    model = P.fit(demo, params)
    assert model.alpha == pytest.approx(0.7, abs=1e-12)
    res = P.replay(demo, model, params)
    cloud = P.replay(demo, model, dataclasses.replace(params, assign="cloud"))
    assert res.cost_vs_cloud <= -0.35
    assert res.accuracy >= P.random_like(demo, model, params, res).mean() + 0.01
    assert cloud.accuracy - res.accuracy <= 0.10


def test_d6_adaptive_stays_close_to_fixed_in_distribution(demo):
    """D-6: DIMEE-D is within 2 points of accuracy and 5 points of cost of DIMEE-F on the
    (unshifted) test rows."""
    f = P.replay(demo, P.fit(demo, R.DimeeParams(adaptive=False)), R.DimeeParams(adaptive=False))
    d = P.replay(demo, P.fit(demo, R.DimeeParams()), R.DimeeParams())
    assert abs(d.accuracy - f.accuracy) <= 0.02
    assert abs(d.cost_vs_cloud - f.cost_vs_cloud) <= 0.05


def _with(params, **costs):
    return dataclasses.replace(params, costs=dataclasses.replace(params.costs, **costs))


def test_d7_fig3_cost_sweeps_move_alpha_and_accuracy_as_the_paper_says(demo):
    """D-7: raising the mobile's cost per layer never lowers alpha* or DIMEE-F's test accuracy
    (0.5 pt tolerance); raising the cloud offload cost never raises alpha*, the validation
    cloud fraction or the oracle-tier test accuracy."""
    base = R.DimeeParams(adaptive=False)
    mults = (0.5, 1.0, 2.0, 3.0, 4.0)
    alphas, accs = [], []
    for k in mults:
        p = _with(base, mobile=1.5 * k)
        model = P.fit(demo, p)
        alphas.append(model.alpha)
        accs.append(P.replay(demo, model, p).accuracy)
    assert all(b >= a - 1e-12 for a, b in zip(alphas, alphas[1:])), alphas
    assert all(b >= a - 0.005 for a, b in zip(accs, accs[1:])), accs
    alphas, cloud, oracle = [], [], []
    val = validation_rows(demo.num_samples)
    for k in mults:
        p = _with(base, cloud_offload=3.0 * k)
        model = P.fit(demo, p)
        alphas.append(model.alpha)
        cloud.append(np.mean(R.oracle_tiers(demo.confidence[val], model.alpha,
                                            model.layout) == R.CLOUD))
        oracle.append(P.replay(demo, model, dataclasses.replace(p, assign="oracle")).accuracy)
    for seq in (alphas, cloud, oracle):
        assert all(b <= a + 1e-12 for a, b in zip(seq, seq[1:])), seq
    assert oracle[0] - oracle[-1] > 0.05


def test_knobs_are_checked_and_round_trip():
    """knobs.dimee: defaults, a round trip through params_dict, and one-line errors naming the
    field for a bad value, an unknown key, n < m and a stage without a head."""
    assert R.params_from_knobs({}) == R.DimeeParams()
    p = R.params_from_knobs({"m": 1, "n": 3, "cloud_fee": 8, "stage_units": "flops",
                             "model_units": 12, "grid": [0.5, 0.7], "adaptive": False})
    assert R.params_from_knobs(R.params_dict(p)) == p
    for knobs, msg in (({"unit": -1}, r"knobs\.dimee\.unit"),
                       ({"colour": 1}, r"knobs\.dimee\.colour: unknown field"),
                       ({"m": 3, "n": 2}, r"knobs\.dimee\.n: must be >= m"),
                       ({"assign": "best"}, r"knobs\.dimee\.assign"),
                       ({"grid": [0.5, 2]}, r"knobs\.dimee\.grid")):
        with pytest.raises(UsageError, match=msg):
            R.params_from_knobs(knobs)
    with pytest.raises(UsageError, match="stage 5 carries no exit head"):
        R.layout(_hand_profile(), R.DimeeParams(m=1, n=5))


def test_flops_units_price_stages_by_compute(demo):
    """stage_units = flops: u_h splits model_units by the stages' FLOPs (sum = model_units);
    count gives one unit per stage."""
    u = R.stage_units([1.0, 3.0, 4.0], "flops", 12)
    assert np.allclose(u, [1.5, 4.5, 6.0]) and np.allclose(R.stage_units([5, 5], "count"), 1)
    with pytest.raises(UsageError, match="flops needs"):
        R.layout(demo, R.DimeeParams(costs=R.DimeeCosts(stage_units="flops")))


def test_profile_without_embedding_is_refused_for_nearest(demo):
    """A profile without an embedding (or of another kind) cannot drive the nearest-mean
    assignment: one clear error naming the fix; the oracle still runs."""
    bare = dataclasses.replace(demo, embedding=None, embedding_kind="")
    with pytest.raises(UsageError, match="no input embedding"):
        P.fit(bare, R.DimeeParams())
    with pytest.raises(UsageError, match="embedding"):
        P.fit(demo, R.DimeeParams(embedding="raw"))
    assert P.fit(bare, R.DimeeParams(assign="oracle")).pools is None


def test_plan_prints_the_dimee_report(tmp_path, capsys):
    """``plan --policy dimee-f --json`` on the tiered demo scenario prints one object with
    alpha, E[r] per alpha, pool sizes, the replay's accuracy/cost and the baselines."""
    path = str(tmp_path / "tiered.json")
    save_scenario(path, tiered_demo_scenario({"dimee": {"cloud_fee": 5}}))
    assert cli(["plan", "--policy", "dimee-f", "--scenario", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == "dimee-f" and out["alpha"] == pytest.approx(0.7)
    assert len(out["reward_by_alpha"]) == 10 and sum(out["pools"].values()) == 1000
    assert set(out["baselines"]) == {"tier-cloud", "tier-edge", "tier-mobile", "tier-random",
                                     "tier-oracle", "early-exit"}
    assert out["baselines"]["tier-cloud"]["cost_vs_cloud"] == 0.0
    assert out["cost_vs_cloud"] < -0.35


def test_plan_text_report_prices_stages_by_the_scenarios_flops(tmp_path, capsys):
    """Without --json, plan prints one line per field; with stage_units = flops it prices the
    stages by the scenario's FLOPs (model_units = 12: DIMEE-F at -45.6 % of cloud-only, the
    Early-Exit baseline at -38.3 %, where count units give -41.7 % and -61.5 %)."""
    path = str(tmp_path / "tiered.json")
    save_scenario(path, tiered_demo_scenario({"dimee": {"stage_units": "flops",
                                                        "model_units": 12, "adaptive": False}}))
    assert cli(["plan", "--policy", "dimee", "--scenario", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["policy", "dimee"] and lines[1].split() == ["alpha", "0.7"]
    assert ["cost_vs_cloud", "-0.4563"] in [l.split() for l in lines]
    ee = lines.index("  early-exit")
    assert lines[ee + 3].split() == ["cost_vs_cloud", "-0.3827"]
