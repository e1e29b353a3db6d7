"""MLCI on a node (``agent/policies/mlci/agent.py``): the knobs a node refuses, and how a level
counts and logs an escalated task's malformed ensemble."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest

from agent.config.node import ConfigError, parse_config
from agent.policies.api import ANSWER, HeadInfo, NodeView
from agent.policies.mlci import replay as P
from agent.policies.mlci import rules as R
from agent.policies.mlci.agent import MlciPolicy
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.exit_profile import load_exit_profile

BUNDLE = load_bundle(DEMO_BUNDLE_DIR)
PROFILE = load_exit_profile(BUNDLE.exit_profile_path)
BUNDLE_FLOPS = tuple(float(s.flops) for s in BUNDLE.stages)


class _Cfg:
    heartbeat_interval_s, neighbour_timeout_rounds = 0.25, 4
    neighbour_silence_s = heartbeat_interval_s * neighbour_timeout_rounds  # NodeConfig's


def _level_worker(**knobs):
    return {"node_id": "edge", "role": "worker", "stage": 1, "last_stage": 3,
            "bundle": "bundle", "state_dir": "state", "policy": "mlci", "policy_knobs": knobs,
            "control_bind": "tcp://127.0.0.1:5551", "data_bind": "tcp://127.0.0.1:5552",
            "peers": [{"id": "user", "stage": 0, "control_address": "tcp://127.0.0.1:5541",
                       "data_address": "tcp://127.0.0.1:5542"},
                      {"id": "cloud", "stage": 1, "last_stage": 4,
                       "control_address": "tcp://127.0.0.1:5561",
                       "data_address": "tcp://127.0.0.1:5562"}]}


def test_a_node_refuses_budgets_s_which_only_plan_and_simulate_apply():
    """Rule: ``budgets_s`` feeds the deployment rule, which picks each level's prefix from
    every level's capacity (plan, simulate); a node serves its config's stages, so its
    ``policy_knobs.budgets_s`` is refused at start-up by name, not silently ignored; the knobs
    a node honours are still taken."""
    with pytest.raises(ConfigError, match=r"^config\.policy_knobs\.budgets_s: not used by a "
                                          r"node: .*deployment rule.*plan and simulate"):
        parse_config(_level_worker(budgets_s=[0.04, 0.06, 0.04]), "config")
    with pytest.raises(R.MlciParamsError, match=r"^policy_knobs\.budgets_s: not used by a node"):
        MlciPolicy({}, {"budgets_s": [1.0, 1.0, 1.0]})
    cfg = parse_config(_level_worker(tau=0.0, prefixes=[1, 3, 4]), "config")
    assert cfg.policy_knobs == {"tau": 0.0, "prefixes": [1, 3, 4]}
    assert MlciPolicy({}, cfg.policy_knobs).params.prefixes == (1, 3, 4)


def test_budgets_s_still_chooses_the_prefixes_in_plan_and_simulate():
    """Rule: in a scenario's ``knobs.mlci`` (plan, simulate) ``budgets_s`` is each level's
    compute time for the deployment rule: the defaults give end 1..1, edge 1..3, cloud 1..4 on
    the demo; 0.2 s at the end (2e6 FLOP/s) lets it hold 1..2."""
    setting = P.MlciSetting(BUNDLE_FLOPS, (2e6, 1e7, 1e8), (3.2e5, 3.2e4), 3136.0)
    assert P.choose_prefixes(PROFILE, R.params_from_knobs({}), setting) == (1, 3, 4)
    wide = R.params_from_knobs({"budgets_s": [0.2, 0.06, 0.04]})
    assert P.choose_prefixes(PROFILE, wide, setting) == (2, 3, 4)


def _top():
    cloud = NodeView("cloud", "worker", 1, 4, BUNDLE_FLOPS, (3136.0,) * 4, (1, 2, 3), (), (),
                     {}, exit_profile=PROFILE, last_stage=4)
    pol = MlciPolicy({}, {}, seed=0)
    pol.configure(_Cfg(), cloud)
    return pol, cloud


def test_a_malformed_ensemble_goes_to_the_node_counters_and_is_logged_1st_10th_100th(caplog):
    """Rule: an escalated task whose ``ens``/``ens_w`` lower levels cannot have sent is
    answered afresh and counted as ``mlci_bad_ensemble`` in the node's counters (the ``count``
    the node hands the policy) and in the saved state; the 1st, 10th, 100th... are logged with
    the running count, the others only counted; a well-formed ensemble counts nothing."""
    pol, cloud = _top()
    counters: Counter = Counter()
    pol.count = lambda name: counters.update([name])
    logits = np.eye(10, dtype=np.float32)[3] * 5
    good = {"ens": [0.0] * 9 + [pol.below_w], "ens_w": pol.below_w}
    assert pol.on_head(HeadInfo("g", 0, 4, 0.9, 3, logits, good, {}, True), cloud).cls == 9
    assert counters == Counter() and pol.bad_ensemble == 0
    with caplog.at_level(logging.WARNING, logger="agent.policies.mlci.agent"):
        for i in range(12):
            bad = {"ens": [1.0], "ens_w": 1.0} if i % 2 else {"ens": [0.5] * 10, "ens_w": 1e9}
            ans = pol.on_head(HeadInfo("t%d" % i, 0, 4, 0.9, 3, logits, bad, {}, True), cloud)
            assert ans.kind == ANSWER and ans.cls == 3  # this level's own answer
    assert counters == Counter({"mlci_bad_ensemble": 12})
    assert pol.snapshot()["mlci_bad_ensemble"] == 12
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2, logged
    assert "task t0 came with an ensemble" in logged[0] and "(1 such tasks so far)" in logged[0]
    assert "task t9 " in logged[1] and "(10 such tasks so far)" in logged[1]
    assert "ens of 1 values for 10 classes" in logged[1]


def test_without_the_nodes_counters_a_malformed_ensemble_is_still_counted_in_the_state():
    """Rule: a policy built outside a node (no counters handed) counts a malformed ensemble in
    its saved state alone, and serves on."""
    pol, cloud = _top()
    logits = np.eye(10, dtype=np.float32)[3] * 5
    ans = pol.on_head(HeadInfo("u", 0, 4, 0.9, 3, logits, {"ens": [1.0], "ens_w": 1.0}, {},
                               True), cloud)
    assert ans.kind == ANSWER and pol.snapshot()["mlci_bad_ensemble"] == 1


def test_a_built_node_hands_its_policy_the_counters_stats_json_is_written_from(tmp_path):
    """Rule: ``AgentPolicy.count`` adds to the node's own counters once the node is built (the
    ones stats.json writes), so a policy's counts such as ``mlci_bad_ensemble`` are seen."""
    from tests.unit.built_worker import built_worker
    built = built_worker(str(tmp_path))
    try:
        built.node.policy.count("mlci_bad_ensemble")
        built.node.policy.count("mlci_bad_ensemble")
        assert built.node.outbox.counters["mlci_bad_ensemble"] == 2
    finally:
        built.close()
