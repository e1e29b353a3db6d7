"""DTO-EE's stage-joint step in the agents (``step = "joint"``, ``joint_sync.py``): the nodes'
``DtoeePolicy`` objects exchanging encoded messages in memory (the harness of
``test_dtoee_agent_rounds``), against the whole-network driver."""

from __future__ import annotations

import logging

from agent.config.node import NodeConfig, Peer
from agent.policies.api import NodeView
from agent.policies.dtoee.agent import DtoeePolicy
from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.network import run_dtoee
from agent.protocol.wire import Kind
from tests.unit.test_dtoee_agent_rounds import _gap, _run_phase, _scenario

JOINT = {"step": "joint", "settle_rounds": 0}


def test_joint_agent_rounds_reach_the_driver_routing():
    """Rule: with step "joint" each offloader reports to its stage after its successors'
    statuses, steps once every sibling's report is in, and keeps its row of the stage's joint
    solution; N message-driven rounds then equal run_dtoee's N joint rounds (to rounding)."""
    sc = _scenario(3, 0.85)
    params = DtoeeParams(step="joint")
    for rounds in (1, 4, 30):
        mine, nodes, kinds = _run_phase(sc, rounds, knobs=JOINT)
        ref = run_dtoee(sc, rounds=rounds, params=params, stop_when_converged=False).routing
        assert _gap(mine, ref) < 1e-6, rounds
        assert all(p.round == rounds for p, _ in nodes.values() if p.offloader)
        # one report per offloader and sibling per round (sources 3, stage-1 and -2 workers 3)
        assert kinds[Kind.DTOEE_STAGE] == rounds * 3 * (3 * 2)
    assert _gap(mine, run_dtoee(sc, rounds=30, stop_when_converged=False).routing) > 1e-3


def test_a_lost_stage_report_stalls_one_round_and_the_phase_completes(caplog):
    """Rule: a sibling's report that does not come is waited for one round_interval_s; then
    the node solves with the reports it has, the missing sibling's flow counting as fixed
    background (logged once per slot), and every node completes its rounds."""
    sc = _scenario(3, 0.85)
    lost = []

    def drop(dest, msg):
        hit = (msg.kind == Kind.DTOEE_STAGE and msg.round == 3 and dest == "b0"
               and msg.sender == "b1")
        lost.extend([msg.round] if hit else [])
        return hit

    with caplog.at_level(logging.WARNING, logger="agent.policies.dtoee.joint_sync"):
        mine, nodes, _ = _run_phase(sc, 10, drop=drop, knobs=JOINT)
    assert lost == [3]
    assert all(p.round == 10 for p, _ in nodes.values() if p.offloader)
    assert all(abs(sum(row.values()) - 1.0) < 1e-9 for row in mine.values())
    assert "sent this node no stage report" in caplog.text
    ref = run_dtoee(sc, rounds=10, params=DtoeeParams(step="joint"),
                    stop_when_converged=False).routing
    assert _gap(mine, ref) < 0.05  # b0 solved round 3 without b1's report, then caught up


def test_settled_nodes_answer_the_siblings_still_in_the_phase():
    """Rule: with the early end, a node that has ended answers each sibling's later report
    with its own last one, so no sibling waits out the round: every node ends, none is left
    holding its step (the harness gives no stall ticks)."""
    for seed, load in ((2, 0.7), (3, 0.5), (5, 0.7)):
        _, nodes, kinds = _run_phase(_scenario(seed, load), 200,
                                     knobs={"step": "joint", "settle_rounds": 8})
        assert all(p.settling.settled for p, _ in nodes.values()), seed
        assert not any(p.joint.held for p, _ in nodes.values()), seed
        assert max(p.round for p, _ in nodes.values()) < 200


def test_a_source_hears_the_other_sources_only_for_the_joint_step():
    """Rule: a source's siblings (the other sources it lists as peers) are the ones it waits
    for under step "joint"; under the per-node steps a source has none."""
    peers = (Peer("s2", 0, "tcp://x:1", "tcp://x:2"), Peer("w1", 1, "tcp://x:3", "tcp://x:4"))
    cfg = NodeConfig(node_id="s1", role="source", stage=0, bundle="/b", state_dir="/s",
                     control_bind="tcp://127.0.0.1:1", data_bind="tcp://127.0.0.1:2",
                     peers=peers)
    view = NodeView(node_id="s1", role="source", stage=0, num_stages=2, stage_flops=(1.0, 1.0),
                    stage_input_bytes=(1.0, 1.0), exit_stages=(), successors=("w1",),
                    predecessors=(), link_rate_bytes_s={"w1": 1e6})
    for step, siblings in (("joint", ("s2",)), ("default", ())):
        pol = DtoeePolicy({}, {"step": step})
        pol.configure(cfg, view)
        assert pol.siblings == siblings


def test_the_testbed_lists_the_other_sources_as_peers_for_the_joint_step():
    """Rule: the configs the testbed (and ``fleet render``) writes give each source the other
    sources as peers when DTO-EE steps jointly, and only then."""
    import dataclasses

    from agent.testbed.local import node_objects
    from agent.testbed.topology import load_topology

    topo = load_topology("slow-link-unconfigured")
    ends = {n: "tcp://10.0.0.%d:1" % i for i, n in enumerate(topo.node_ids(), start=1)}
    for knobs, extra in (({"dtoee": {"step": "joint"}}, ["cam2"]), ({}, []),
                         ({"dtoee": {"step": "default"}}, [])):
        objs = node_objects(dataclasses.replace(topo, knobs=knobs), "b", "dtoee", 10.0, 5.0,
                            "/tmp/x", ends, ends, paced=False)
        assert [p["id"] for p in objs["cam1"]["peers"]] == ["w1a", "w1b"] + extra


def test_joint_agents_tune_thresholds_as_the_driver():
    """Rule: the threshold step works as under the per-node rule: the workers of the adjusting
    stage hold their next requests for each other's threshold reports, after their joint step,
    and the agents' thresholds and routing equal run_dtoee's with step "joint"."""
    from agent.policies.model import with_link_model
    from tests.unit.test_dtoee_agent_rounds import _with_profile

    sc = with_link_model(_with_profile(_scenario(3, 0.85), (2, 3), 0.5), "delay")
    th = {2: 0.8}
    mine, nodes, kinds = _run_phase(sc, 30, thresholds=th,
                                    knobs=dict(JOINT, link_model="delay"))
    ref = run_dtoee(sc, rounds=30, stop_when_converged=False, thresholds=th,
                    params=DtoeeParams(step="joint", link_model="delay"))
    assert _gap(mine, ref.routing) < 1e-5
    assert all({int(k): c for k, c in p.tsync.th.items()} == ref.thresholds
               for p, v in nodes.values() if v.stage == 2)
    assert kinds[Kind.THRESHOLD] > 0 and ref.thresholds != th
