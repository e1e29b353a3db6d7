"""MDI-Exit's agent adapter and simulator adapter decide alike: fed the same arrival times and
the same queue lengths, they admit and reject the same arrivals (Alg. 3), move mu the same way,
and reclaim a held task in the same cases (idle reclaim).

The agent adapter reads a ``NodeView`` as the node loop fills it; the simulator adapter reads a
real ``Simulator`` whose queue counters are set to the scripted lengths (the state its event loop
keeps: tasks at a device's server, tasks held at a node)."""

from collections import deque

import numpy as np
import pytest

from agent.policies.api import NodeView, TaskInfo
from agent.policies.mdi_exit.agent import MdiExitPolicy
from agent.policies.mdi_exit.sim import MdiExitSimPolicy
from agent.policies.sim_api import SlotView
from agent.scenario.mdi import mdi_topology
from agent.scenario.paper import paper_scenario
from agent.sim import REJECTED, SimConfig, Simulator, simulate

MODEL = paper_scenario("paper-resnet101", seed=0, num_sources=1, num_samples=200)
KNOBS = {"admission_control": True, "initial_interarrival_s": 0.3, "adapt_interval_s": 1.0}


def source_view(queued):
    """An agent source whose own queues hold ``queued`` tasks (no peer heard yet)."""
    return NodeView(node_id="cam", role="source", stage=0, num_stages=4,
                    stage_flops=(1e9,) * 4, stage_input_bytes=(1e4,) * 4, exit_stages=(1, 2, 3),
                    successors=(), predecessors=(), link_rate_bytes_s={}, output_queue=queued)


def worker_view(input_len, output_len, neighbour_input=100):
    """An agent worker holding stages 1-4 with one neighbour ``m`` that publishes a long queue."""
    return NodeView(node_id="n1", role="worker", stage=1, last_stage=4, num_stages=4,
                    stage_flops=(1e9,) * 4, stage_input_bytes=(1e4,) * 4, exit_stages=(1, 2, 3),
                    successors=("m",), predecessors=(), link_rate_bytes_s={"m": 1e6},
                    input_queue=input_len, output_queue=output_len, service_time_s=0.1,
                    alive={"m"}, peer_stages={"m": (1, 4)},
                    peer_state={"m": {"input_queue": neighbour_input, "service_time_s": 0.1}})


def simulator(topology, knobs):
    """A real Simulator on an MDI-Exit topology with the policy built for slot 0."""
    sc = mdi_topology(topology, MODEL, 2e10, 12.5e6, 10.0, knobs={"mdi-exit": knobs})
    policy = MdiExitSimPolicy()
    sim = Simulator(sc, policy, SimConfig(duration_s=10.0))
    policy.start_slot(SlotView(0, 0.0, sc, None))
    return sim, policy


def set_queues(sim, now_s, inputs=None, held=None):
    """Set the simulator's clock and queues: ``inputs`` {worker: tasks at its device's server},
    ``held`` {node: task ids held there}."""
    sim.now_s = now_s
    for node, n in (inputs or {}).items():
        sim.njobs[sim.server[sim.index[node] - len(sim.scenario.sources)]] = n
    for node, tasks in (held or {}).items():
        sim.hold[sim.index[node]] = deque(tasks)


def queue_total(t):
    """Scripted I_n + O_n at the source node: every band of Alg. 3, then the boundary T_Q2."""
    return 3 if t < 4.0 else 20 if t < 7.0 else 45 if t < 10.0 else 30


def test_agent_and_simulator_admit_the_same_arrivals_and_move_mu_alike():
    """Same arrivals (Poisson, 40/s), same queue totals every tick: same admit/reject sequence
    and the same mu after every run of Alg. 3."""
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(1.0 / 40.0, size=480))
    arrivals = arrivals[arrivals < 12.0]
    ticks = np.round(np.arange(0.0, 12.0, 0.1), 9)
    events = sorted([(t, 0) for t in ticks] + [(t, 1) for t in arrivals])

    agent = MdiExitPolicy({1: 0.8, 2: 0.8, 3: 0.8}, KNOBS)
    sim, sp = simulator("local", KNOBS)
    agent_says, sim_says, agent_mu = [], [], []
    for t, is_arrival in events:
        set_queues(sim, t, inputs={"n1/1": queue_total(t)})
        if is_arrival:
            agent_says.append(agent.admit(source_view(queue_total(t)), t))
            sim_says.append(sp.admit("n1/src", len(sim_says), sim))
        else:
            before = agent.snapshot()["interarrival_s"]
            agent.on_tick(source_view(queue_total(t)), t)
            n = len(sp.history)
            sp.on_tick(sim)
            if len(sp.history) > n:  # the simulator ran Alg. 3 at this tick: so did the agent
                agent_mu.append(agent.snapshot()["interarrival_s"])
            else:
                assert agent.snapshot()["interarrival_s"] == before

    assert agent_says == sim_says
    sim_mu = [h["interarrival_s"]["n1/src"] for h in sp.history]
    assert agent_mu == pytest.approx(sim_mu) and len(sim_mu) == 11
    # every band was met: mu went down (alpha, beta), up (zeta), and held at T_Q2
    assert sim_mu[2] < sim_mu[1] < sim_mu[0] < 0.3 and sim_mu[8] > sim_mu[7]
    assert sim_mu[10] == sim_mu[9]
    assert 0 < sum(agent_says) < len(agent_says)  # some admitted, some rejected


def test_agent_replaying_a_simulated_run_rejects_exactly_the_tasks_the_simulator_rejected():
    """A whole simulated run (Alg. 3 on 2 nodes, a camera at 50/s): the agent adapter, fed the
    run's arrival times and the queue totals the simulator adapted mu from, admits exactly the
    tasks the simulator admitted."""
    sc = mdi_topology("2-node", MODEL, 2e10, 12.5e6, 50.0, knobs={"mdi-exit": KNOBS})
    sp = MdiExitSimPolicy()
    result = simulate(sc, sp, SimConfig(duration_s=30.0, discipline="fifo", slot_s=1000.0,
                                        drain_limit_s=60.0))
    agent = MdiExitPolicy({1: 0.8, 2: 0.8, 3: 0.8}, KNOBS)
    agent.on_tick(source_view(0), 0.0)  # the simulator's adaptation clock starts at 0
    adapts = [(h["t_s"], 0, h["queued"]["n1/src"]) for h in sp.history]
    arrivals = [(t, 1, None) for t in result.created_s]
    admitted = []
    for t, is_arrival, queued in sorted(adapts + arrivals, key=lambda e: (e[0], e[1])):
        if is_arrival:
            admitted.append(agent.admit(source_view(0), t))
        else:
            agent.on_tick(source_view(queued), t)
    assert admitted == list(result.status != REJECTED)
    assert 0 < sum(admitted) < len(admitted)
    assert agent.snapshot()["interarrival_s"] == pytest.approx(sp.history[-1]["interarrival_s"]
                                                              ["n1/src"])


@pytest.mark.parametrize("reclaim_when_idle", [True, False])
def test_agent_and_simulator_reclaim_a_held_task_in_the_same_cases(reclaim_when_idle):
    """A task Alg. 2 keeps (the neighbour's queue is longer) goes back to the node's own next
    stage exactly when its input queue is empty, in both adapters; never with the knob off."""
    knobs = {"reclaim_when_idle": reclaim_when_idle}
    agent = MdiExitPolicy({1: 0.8, 2: 0.8, 3: 0.8}, knobs)
    task = TaskInfo("t", 3, 10000)
    decisions = []
    for input_len in (0, 1, 3):
        for output_len in (1, 2, 5):
            sim, sp = simulator("2-node", knobs)
            set_queues(sim, 0.0, inputs={"n2/1": 100})
            sp.on_tick(sim)  # n2 publishes I_m = 100: Alg. 2 offers n1 nothing
            set_queues(sim, 0.5, inputs={"n1/1": 5})
            assert sp.route("n1/2", 0, sim) is None  # busy: queued for offloading, then kept
            set_queues(sim, 1.0, inputs={"n1/1": input_len},
                       held={"n1/2": range(output_len)})
            sim_reclaims = sp.route("n1/2", 0, sim) == "n1/3"
            v = worker_view(input_len, output_len)
            assert agent.choose_successor(task, v) is None  # the agent keeps it too
            decisions.append((input_len, output_len, agent.reclaim(v), sim_reclaims))
    assert all(a == s for _, _, a, s in decisions), decisions
    assert any(a for _, _, a, _ in decisions) == reclaim_when_idle
    assert all(a == (reclaim_when_idle and i == 0) for i, _, a, _ in decisions)


def test_simulator_reclaims_one_held_task_per_idle_moment_as_the_agent_does():
    """After taking one task back the node is no longer idle (the task counts in I_n at once,
    as in the agent), so the next held task stays held."""
    sim, sp = simulator("2-node", {})
    set_queues(sim, 0.0, inputs={"n2/1": 100})
    sp.on_tick(sim)
    set_queues(sim, 0.5, inputs={"n1/1": 5})
    assert sp.route("n1/2", 0, sim) is None and sp.route("n1/2", 1, sim) is None
    set_queues(sim, 1.0, inputs={"n1/1": 0}, held={"n1/2": [0, 1]})
    assert sp.route("n1/2", 0, sim) == "n1/3"
    set_queues(sim, 1.0, held={"n1/2": [1]})
    assert sp.route("n1/2", 1, sim) is None
    agent = MdiExitPolicy({1: 0.8}, {})
    assert agent.reclaim(worker_view(0, 2)) and not agent.reclaim(worker_view(1, 1))
