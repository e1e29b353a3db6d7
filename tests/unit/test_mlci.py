"""MLCI (seed paper 001), pure policy and exact replay: the spec's checks M-1..M-9, the knobs,
eq. 10, the level setting read from a scenario and ``plan --policy mlci``."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from agent.cli import main as cli
from agent.errors import UsageError
from agent.policies.mlci import replay as P
from agent.policies.mlci import rules as R
from agent.policies.splits import test_rows
from agent.scenario.format import save_scenario
from engines.demo import DEMO_BUNDLE_DIR
from engines.exit_profile import load_exit_profile
from tests.unit.tiered_demo import tiered_demo_scenario

TAUS = (0.0, 1e-4, 1e-2, 5e-2, 1e-1)
TS = (0.7, 0.8, 0.9)


@pytest.fixture(scope="module")
def demo():
    """The shipped profile, the tiered demo setting and the model fitted with the defaults."""
    prof = load_exit_profile(DEMO_BUNDLE_DIR + "/exit_profile.npz")
    setting = P.setting_from_scenario(tiered_demo_scenario(), R.MlciParams())
    params = R.MlciParams()
    model = P.fit(prof, params, P.choose_prefixes(prof, params, setting))
    return prof, setting, model


def test_m1_offload_probability_eqs_7_8():
    """M-1: p = 1 for conf <= t; p(t+) = 1/(1+e^(-k/2)); p(1) = 1/(1+e^(k/2)); p((1+t)/2) =
    0.5; strictly decreasing above t (t = 0.7, k = 10: 0.99331 / 0.00669)."""
    t, k = 0.7, 10.0
    assert R.offload_probability(0.3, t, k) == 1.0 and R.offload_probability(t, t, k) == 1.0
    assert R.offload_probability(t + 1e-12, t, k) == pytest.approx(1 / (1 + math.exp(-5)),
                                                                    abs=1e-9)
    assert R.offload_probability(1.0, t, k) == pytest.approx(1 / (1 + math.exp(5)), abs=1e-12)
    assert round(R.offload_probability(t + 1e-12, t, k), 5) == 0.99331
    assert round(R.offload_probability(1.0, t, k), 5) == 0.00669
    assert R.offload_probability(0.85, t, k) == pytest.approx(0.5, abs=1e-12)
    p = R.offload_probability(np.linspace(0.7001, 1.0, 200), t, k)
    assert np.all(np.diff(p) < 0)


def test_m2_patience_rule_eqs_13_14():
    """M-2: the counter grows on diff < tau, resets on diff > tau, stays on diff == tau; the
    model exits where cnt reaches p, else at its last head; tau = 0 never exits early; the
    vectorised form agrees with the loop."""
    assert R.patience_step(1, 0.5, 0.505, 0.01) == 2
    assert R.patience_step(1, 0.5, 0.6, 0.01) == 0
    assert R.patience_step(1, 0.5, 0.75, 0.25) == 1  # exactly tau: unchanged
    assert R.model_exit([0.5, 0.6, 0.605, 0.7], 0.01, 1) == 2
    assert R.model_exit([0.5, 0.505, 0.508, 0.9], 0.01, 2) == 2
    assert R.model_exit([0.5, 0.505, 0.7, 0.702], 0.01, 2) == 3  # reset in between
    assert R.model_exit([0.5, 0.75, 1.0], 0.25, 1) == 2  # ties never count
    assert R.model_exit([0.9, 0.9, 0.9], 0.0, 1) == 2  # tau = 0: Tabi, no early exit
    assert R.model_exit([0.9], 0.5, 1) == 0  # one head: nothing to compare
    rng = np.random.default_rng(3)
    conf = np.round(rng.uniform(0.5, 1.0, size=(500, 4)), 2)
    for tau, p in ((0.0, 1), (0.02, 1), (0.05, 2), (0.1, 3)):
        loop = [R.model_exit(c, tau, p) for c in conf]
        assert list(R.model_exits(conf, tau, p)) == loop


def test_m3_weighted_ensemble_eqs_11_12():
    """M-3: with weights 0.2, 0.3, 0.5 the ensemble is the weighted mean of the softmaxes of
    the levels that ran (normalised over those only); one level returns its own softmax."""
    a, b, c = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.5, 0.3]), np.array([0.1, 0.2, 0.7])
    vec, w = R.ensemble_add(None, 0.0, 0.2, a)
    probs, cls, conf = R.ensemble_answer(vec, w)
    assert np.allclose(probs, a) and cls == 0 and conf == pytest.approx(0.6)
    vec, w = R.ensemble_add(vec, w, 0.3, b)
    probs, cls, _ = R.ensemble_answer(vec, w)
    assert np.allclose(probs, (0.2 * a + 0.3 * b) / 0.5) and cls == 1
    vec, w = R.ensemble_add(vec, w, 0.5, c)
    probs, cls, conf = R.ensemble_answer(vec, w)
    assert np.allclose(probs, [0.23, 0.31, 0.46]) and cls == 2 and conf == pytest.approx(0.46)


def test_m4_temperature_fit_recovers_a_known_temperature(demo):
    """M-4: labels drawn from softmax(z / 1.7) give back T = 1.7 within 2 %; on the demo's
    validation rows T per head is about [0.745, 0.978, 1.044, 1.116] (+-0.01)."""
    rng = np.random.default_rng(11)
    z = rng.normal(0.0, 3.0, size=(20000, 10))
    p = R.softmax(z, 1.7)
    y = (p.cumsum(axis=1) > rng.uniform(size=(20000, 1))).argmax(axis=1)
    assert R.fit_temperature(z, y) == pytest.approx(1.7, rel=0.02)
    _, _, model = demo
    assert np.allclose(model.temperatures, [0.745, 0.978, 1.044, 1.116], rtol=0, atol=0.01)


def test_m5_deployment_rule(demo):
    """M-5: on the demo's prefixes and the tiered budgets the levels get 1..1, 1..3, 1..4; a
    budget no model fits is an error naming the level."""
    prof, setting, model = demo
    assert model.prefixes == (1, 3, 4)
    cands = P.candidates(prof, setting.stage_flops)
    with pytest.raises(UsageError, match="no model fits level 'edge'"):
        R.deploy(cands, [R.LevelBudget("end", 2e6, 0.04), R.LevelBudget("edge", 1e6, 0.01)])


def _grid(prof, setting, model, **kw):
    params = R.MlciParams(**kw)
    return {(t, tau): P.expected_replay(prof, model, dataclasses.replace(
        params, confidence_threshold=t, tau=tau), setting) for t in TS for tau in TAUS}


def test_m6_table_1_trends_on_the_demo(demo):
    """M-6: for each t, latency and accuracy do not rise as tau grows (0 .. 0.1); for each tau
    they do not fall as t grows (tolerance 0.05 pt / 0.1 ms)."""
    g = _grid(*demo)
    acc = {key: r.accuracy for key, r in g.items()}
    lat = {key: r.mean_latency_s for key, r in g.items()}
    for t in TS:
        for a, b in zip(TAUS, TAUS[1:]):
            assert acc[(t, b)] <= acc[(t, a)] + 5e-4 and lat[(t, b)] <= lat[(t, a)] + 1e-4
    for tau in TAUS:
        for a, b in zip(TS, TS[1:]):
            assert acc[(b, tau)] >= acc[(a, tau)] - 5e-4 and lat[(b, tau)] >= lat[(a, tau)] - 1e-4


def test_m7_tabi_matches_cloud_only_accuracy_answering_a_quarter_at_the_end(demo):
    """M-7: Tabi (tau = 0) at t = 0.8 is within 0.5 pt of cloud-only accuracy and answers at
    least 25 % of the tasks at the end level."""
    prof, setting, model = demo
    res = P.expected_replay(prof, model, P.variant(R.MlciParams(), "tabi"), setting)
    cloud = P.reference(prof, model, setting, 2)
    assert abs(res.accuracy - cloud["accuracy"]) <= 0.005
    assert res.level_fractions[0] >= 0.25


def test_m8_ensemble_does_not_hurt(demo):
    """M-8: at t = 0.8, tau = 0 the ensemble answers at least as well as the last level alone
    (minus 0.1 pt)."""
    prof, setting, model = demo
    ens = P.expected_replay(prof, model, R.MlciParams(tau=0.0), setting)
    alone = P.expected_replay(prof, model, R.MlciParams(tau=0.0, ensemble=False), setting)
    assert ens.accuracy >= alone.accuracy - 0.001


def test_m9_exact_replay_equals_seeded_per_task_walks(demo):
    """M-9: the exact replay's accuracy and latency equal the mean of 200 seeded walks per row
    through the per-sample functions (100 test rows) within 3 standard errors."""
    prof, setting, model = demo
    params = R.MlciParams(confidence_threshold=0.8, tau=0.01)
    rows = test_rows(prof.num_samples)[:100]
    exact = P.expected_replay(prof, model, params, setting, rows)
    rng = np.random.default_rng(2024)
    walks = np.array([P.walk(prof, model, params, setting, int(r), rng)
                      for r in rows for _ in range(200)])
    for col, want in ((1, exact.accuracy), (2, exact.mean_latency_s)):
        se = walks[:, col].std() / math.sqrt(len(walks))
        assert abs(walks[:, col].mean() - want) <= 3 * se + 1e-12
    frac = np.bincount(walks[:, 0].astype(int), minlength=3) / len(walks)
    assert np.allclose(frac, exact.level_fractions, atol=0.01)


def test_prune_mask_eq_10_is_strict():
    """eq. 10: keep a token when its importance is strictly above alpha times the average."""
    assert list(R.prune_mask([1.0, 2.0, 3.0], 1.0)) == [False, False, True]
    assert list(R.prune_mask([1.0, 2.0, 3.0], 0.5)) == [False, True, True]


def test_knobs_are_checked_and_round_trip():
    """knobs.mlci: defaults, a round trip through params_dict, errors naming the field."""
    assert R.params_from_knobs({}) == R.MlciParams()
    p = R.params_from_knobs({"tau": 0, "temperature": 1.0, "weights": [1, 2, 3],
                             "prefixes": [1, 2, 4], "levels": [["a"], ["b", "c"], ["d"]]})
    assert R.params_from_knobs(R.params_dict(p)) == p and p.levels[1] == ("b", "c")
    for knobs, msg in (({"k": 0}, r"knobs\.mlci\.k"), ({"tau": -1}, r"knobs\.mlci\.tau"),
                       ({"weights": [1, 2]}, r"knobs\.mlci\.weights: must list 3"),
                       ({"levels": [[]]}, r"knobs\.mlci\.levels"),
                       ({"confidence_threshold": 1.0}, r"knobs\.mlci\.confidence_threshold"),
                       ({"pruning": 1}, r"knobs\.mlci\.pruning: unknown field"),
                       ({"prune_alpha": 1.0}, r"knobs\.mlci\.prune_alpha: pruning")):
        with pytest.raises(UsageError, match=msg):
            R.params_from_knobs(knobs)


def test_setting_and_refusals(demo):
    """The setting read from the tiered scenario: FLOPs per stage, capacities 2e6/1e7/1e8,
    rates 3.2e5/3.2e4, payload = the 3136-byte input; a level with no device, or a profile
    without logits, is one clear error."""
    prof, setting, _ = demo
    assert setting.capacities == (2e6, 1e7, 1e8) and setting.rates == (3.2e5, 3.2e4)
    assert setting.payload_bytes == 3136.0 and len(setting.stage_flops) == 4
    with pytest.raises(UsageError, match=r"levels\[1\]: no worker on device\(s\) fog"):
        P.setting_from_scenario(tiered_demo_scenario(),
                                R.MlciParams(levels=(("end",), ("fog",), ("cloud",))))
    with pytest.raises(UsageError, match="no logits"):
        P.fit(dataclasses.replace(prof, logits=None), R.MlciParams(), (1, 3, 4))


def test_plan_prints_the_mlci_report(tmp_path, capsys):
    """``plan --policy tabi --json`` on the tiered demo scenario: one object with deployment,
    temperatures, weights (summing to 1), accuracy, latency, level fractions, the single-level
    references and the (t, tau) grid."""
    path = str(tmp_path / "tiered.json")
    save_scenario(path, tiered_demo_scenario({"mlci": {"confidence_threshold": 0.8}}))
    assert cli(["plan", "--policy", "tabi", "--scenario", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == "tabi" and out["deployment"] == [1, 3, 4]
    assert sum(out["weights"]) == pytest.approx(1.0) and len(out["temperatures"]) == 4
    assert sum(out["level_fractions"]) == pytest.approx(1.0)
    assert set(out["references"]) == {"end-only", "edge-only", "cloud-only"}
    assert len(out["grid"]) == len(P.GRID_T) * len(P.GRID_TAU)
    assert out["accuracy"] == pytest.approx(0.8978, abs=5e-4)
