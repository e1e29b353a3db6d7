"""A saved state the policy cannot take back never stops a node's start: the node is built
(``agent.node.build.build``, its sockets not bound) from a real ``state.json`` and starts
without that state, with one WARNING naming the policy and the error."""

from __future__ import annotations

import logging

from agent.node.build import build
from agent.ops.state import LINK_RATES_KEY, StateStore
from agent.testbed.local import node_configs
from agent.testbed.topology import load_topology
from engines.demo import DEMO_BUNDLE_DIR


def _dimee_source(tmp_path):
    """The DIMEE preset's source config (its policy learns pools that state.json keeps)."""
    return node_configs(load_topology("dimee"), DEMO_BUNDLE_DIR, "dimee", 5.0, 1.0,
                        str(tmp_path / "run"))["mob"]


def test_a_saved_count_the_policy_cannot_hold_is_a_warning_and_the_node_starts_fresh(tmp_path,
                                                                                   caplog):
    """Rule: a state.json whose DIMEE pool count is above 2**63 (valid JSON, of this policy,
    but more than its int64 counts hold: its restore raises OverflowError) is logged as a
    WARNING naming the policy and the error, and the node starts with the policy made afresh:
    neither the saved counts nor the saved thresholds are taken, and the saved state is not
    handed on (the link rates it holds are not seeded)."""
    cfg = _dimee_source(tmp_path)
    fresh = build(cfg)  # what the policy is without a saved state
    try:
        state = fresh.node.policy.snapshot()
        fresh_counts = [int(c) for c in fresh.node.policy.pools.count]
        fresh_thresholds = fresh.node.policy.thresholds()
    finally:
        fresh.close()
    assert "dimee_pools" in state, sorted(state)
    state["dimee_pools"]["count"][0] = 2 ** 64  # more than int64 holds
    state["thresholds"] = {str(h): 0.5 for h in fresh_thresholds}  # taken before the failure
    state[LINK_RATES_KEY] = {"cloud": 12345.0}
    assert StateStore(cfg.state_dir).save(state, force=True)

    with caplog.at_level(logging.INFO, logger="agent.run"):
        built = build(cfg)
    try:
        policy = built.node.policy
        assert [int(c) for c in policy.pools.count] == fresh_counts
        assert policy.thresholds() == fresh_thresholds
        assert built.node.view.link_rate_bytes_s.get("cloud") != 12345.0
    finally:
        built.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "agent.run"]
    (line,) = [w for w in warnings if "not restored" in w]
    for part in ("state.json", "policy dimee", "OverflowError", "starting without it"):
        assert part in line, line
    assert not [r for r in caplog.records if "restored policy state" in r.getMessage()]
