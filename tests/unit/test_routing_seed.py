"""Each node's routing draws are its own stream: the policy's random generator is seeded with
the config's ``seed`` mixed with the node's id (``routing_seed``), so the workers of a testbed
run or a rendered fleet, which all keep ``seed = 0``, do not draw the same sequence (one stream
on every node made every node's early draws lean the same way, in every run), and the
testbed's ``--seed`` reaches the workers too. Real node configs of the shipped default
topology and the demo bundle; nothing is started or timed."""

from __future__ import annotations

from agent.node.build import build_view, configured_policy
from agent.policies.api import TaskInfo, routing_seed
from agent.testbed.local import node_configs
from agent.testbed.topology import DEFAULT_TOPOLOGY, load_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR


def _policies(tmp_path, seed=0, policy="bf"):
    topo = load_topology(DEFAULT_TOPOLOGY)
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    cfgs = node_configs(topo, bundle.path, policy, 1.0, 1.0, str(tmp_path / "run"), seed=seed)
    out = {}
    for n, cfg in cfgs.items():
        view = build_view(cfg, bundle, None)
        view.alive.update(view.successors)
        out[n] = (configured_policy(cfg, bundle, view), view, cfg)
    return out


def _draws(policy, view, n):
    task = TaskInfo(id="t", stage=view.stage + 1, nbytes=1000)
    return [policy.choose_successor(task, view) for _ in range(n)]


def test_routing_seed_mixes_the_seed_with_the_node_id_and_is_stable():
    """Rule: the same (seed, node) gives the same seed in every process (no ``hash``); another
    node or another seed gives another."""
    assert routing_seed(0, "w1a") == 17567702710471868136  # the same on every machine
    assert routing_seed(0, "w1a") != routing_seed(0, "w1b")
    assert routing_seed(0, "w1a") != routing_seed(1, "w1a")


def test_workers_with_the_same_seed_draw_different_streams(tmp_path):
    """Rule: two workers of one stage with the same config ``seed`` (0) and the same routing
    row draw different successor sequences."""
    got = _policies(tmp_path)
    (pa, va, ca), (pb, vb, cb) = got["w2a"], got["w2b"]
    assert ca.seed == cb.seed and va.successors == vb.successors, (ca.seed, va.successors)
    assert len(va.successors) >= 2, va.successors
    assert _draws(pa, va, 64) != _draws(pb, vb, 64)


def test_the_testbed_seed_reaches_the_workers(tmp_path):
    """Rule: a testbed run's ``--seed`` is every worker's config seed, so another seed gives a
    worker another stream; the same seed gives the same stream again."""
    a, b = _policies(tmp_path / "a", seed=0), _policies(tmp_path / "b", seed=7)
    again = _policies(tmp_path / "c", seed=7)
    assert a["w1a"][2].seed == 0 and b["w1a"][2].seed == 7
    draws = [_draws(p["w1a"][0], p["w1a"][1], 64) for p in (a, b, again)]
    assert draws[0] != draws[1] and draws[1] == draws[2]


def test_a_workers_sent_shares_follow_its_row(tmp_path):
    """Rule: over 4,000 draws a worker's share to each successor is within 4 sigma of its
    row (bf: in proportion to the link rates)."""
    policy, view, _ = _policies(tmp_path)["w1a"]
    weights = policy.weights(view)
    total = sum(weights[s] for s in view.successors)
    n = 4000
    draws = _draws(policy, view, n)
    for s in view.successors:
        p = weights[s] / total
        sigma = (p * (1 - p) / n) ** 0.5
        assert abs(draws.count(s) / n - p) <= 4 * sigma + 1e-12, (s, draws.count(s), p)
