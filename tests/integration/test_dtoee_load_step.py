"""DTO-EE agents as real processes on loopback follow a real change of a client source's load:
the source's rate is estimated from the tasks its clients send, not taken from its config."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from agent.testbed.ports import free_ports
from tests.integration.agent_cluster import Cluster, build_two_stage_bundle, stage_flops

STAGES = {"s1": 0, "w1a": 1, "w1b": 1, "w2": 2}
SLOT_S = 1.0
PRIOR_TASKS_S = 30.0  # s1's configured rate: more than the fast worker takes alone
STEP_RATE_TASKS_S = 20.0  # the load the clients step up to
FAST_TASKS_S, SLOW_TASKS_S = 25.0, 8.0  # the stage-1 workers' emulated service rates


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _share(c, node):
    """s1's routing share to ``node`` in its stats.json (0 before its first write)."""
    return ((c.stats("s1") or {}).get("routing") or {}).get(node, 0.0)


def _rate(c):
    """s1's arrival rate in its stats.json (NaN, which no comparison holds for, before its
    first write)."""
    return (c.stats("s1") or {}).get("arrival_rate_tasks_s", math.nan)


@pytest.mark.parametrize("step", ["default", "joint"])
def test_a_client_source_load_step_moves_dtoee_routing_off_the_one_fast_worker(bundle, tmp_path,
                                                                              step):
    """Rule: a client source configured for 30 tasks/s but sent nothing plans for 0 tasks/s
    from its first slot and routes all to the faster of two stage-1 workers; when its clients
    step up to 20 tasks/s (80% of the fast worker's capacity), its estimate follows and within
    15 slots DTO-EE gives the slower worker a share, as it plans for the real rate; when they
    stop, the estimate falls and the source leans all on the fast worker again. No node's step
    fails on the way (a rate of 0 included). The same with the joint step, where the idle
    source has no flow for the stage's solve and leans as under the default rule."""
    c = Cluster(str(tmp_path), bundle, STAGES, policy="dtoee", slot_length_s=SLOT_S,
                rounds_per_slot=8, round_interval_s=0.05, policy_knobs={"step": step})
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    alpha = stage_flops(bundle, 1)
    client = None
    try:
        c.start("w1a", emulate_capacity_flops=alpha * FAST_TASKS_S)
        c.start("w1b", emulate_capacity_flops=alpha * SLOW_TASKS_S)
        c.start("w2")
        c.start("s1", arrival="client", client_bind=endpoint,
                arrival_rate_tasks_s=PRIOR_TASKS_S, result_timeout_s=20.0)
        c.wait_for(lambda: c.alive_at("s1", ["w1a", "w1b"]) and _rate(c) == 0.0
                   and _share(c, "w1a") >= 0.99, 60,
                   "s1, with no client yet, to plan for 0 tasks/s and route all to the fast "
                   "worker")
        client = subprocess.Popen(
            [sys.executable, "-m", "agent", "submit", "--images",
             os.path.join(os.path.dirname(bundle), "replay.npz"), "--endpoint", endpoint,
             "--rate", str(STEP_RATE_TASKS_S), "--count", "2000", "--timeout", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c.wait_for(lambda: _rate(c) >= 10, 30, "s1's rate estimate to follow its clients")
        c.wait_for(lambda: _share(c, "w1b") > 0.02, 15 * SLOT_S + 10,
                   "DTO-EE to give the slow worker a share")
        client.terminate()
        client.wait(30)
        c.wait_for(lambda: _rate(c) <= 1.0, 30, "s1's rate estimate to fall once its clients stop")
        c.wait_for(lambda: _share(c, "w1a") >= 0.99, 15 * SLOT_S + 10,
                   "s1 to route all to the fast worker again while idle")
    finally:
        try:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait(30)
        finally:
            c.stop_all()
    for node in STAGES:  # final stats: no step of any node failed on the way (a rate of 0)
        assert c.stats(node)["counters"].get("internal_error", 0) == 0, node
    assert all(math.isfinite(p) and p >= 0 for p in c.stats("s1")["routing"].values())
