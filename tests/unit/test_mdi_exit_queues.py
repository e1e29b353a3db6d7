"""MDI-Exit's queues in the agent as the paper (Algs. 1-4) and the simulator have them.

- O_n (``NodeView.output_queue``) counts tasks waiting to leave: held for a successor, or on an
  emulated link not carrying them yet; never results awaiting their ACK, nor a task the link
  carries (that is D_nm).
- Held tasks are offered again head first with the whole O_n, a stage's offers end at the
  first task kept, and a new task joins the held ones at the tail: the oldest is never passed
  over, and the agent's outbox and the simulator decide alike. Policies without that order
  still get every held task offered.
- A worker's ``max_queue_tasks`` must leave Alg. 4 and Alg. 1 room above T_Q2 and T_O: one
  WARNING at start naming both numbers and the fix; the testbed's mdi-* presets have the room.

The outbox is a real one over a real (never bound) transport: sends fail and items stay in
custody, which is all these rules need. The simulator side is a real ``Simulator`` whose queues
are set, offered held tasks as its event loop does after every tick.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zmq

from agent.commands.testbed import MDI_MODES, with_mdi_mode
from agent.config.node import parse_config
from agent.net.transport import Transport
from agent.node.build import build_view, configured_policy
from agent.node.capacity import Capacity, CapacityReport
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.policies.api import AgentPolicy
from agent.policies.mdi_exit import rules as mx
from agent.policies.mdi_exit.agent import MdiExitPolicy, queue_room, queue_room_problem
from agent.policies.mdi_exit.sim import MdiExitSimPolicy
from agent.policies.sim_api import SlotView
from agent.protocol import wire
from agent.protocol.wire import Kind
from agent.scenario.mdi import mdi_topology
from agent.scenario.paper import paper_scenario
from agent.sim import SimConfig, Simulator
from agent.testbed.local import node_configs
from agent.testbed.presets import shipped_presets
from agent.testbed.topology import load_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from tests.unit.endpoints import loopback_endpoints

NBYTES = 8 * 14 * 14 * 4  # a demo stage-2 task's tensor


class Recording(MdiExitPolicy):
    """MDI-Exit as it is, noting each Alg. 2 decision: (task id, O_n it saw, successor)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.offers = []

    def choose_successor(self, task, view, exclude=()):
        dest = super().choose_successor(task, view, exclude)
        self.offers.append((task.id, view.output_queue + 1, dest))
        return dest


def _task(i, stage: int = 2) -> OutItem:
    return OutItem(Kind.TASK, "t%s#0" % i, {"id": "t%s" % i, "source": "s1", "stage": stage,
                                            "attempt": 0, "hops": 1, "resends": 0,
                                            "created": 0.0},
                   np.zeros((1, 8, 14, 14), dtype=np.float32), expires=1e9)


def _outbox(tmp_path, policy, peers, input_queue=lambda: 0, last_stage=0, rate=1e9,
            **cfg_fields):
    """A worker n1 (stage 1, up to ``last_stage``) with source s1 and ``peers`` {id: (stage,
    last_stage)} on links of ``rate`` bytes/s, all alive; returns (outbox, close)."""
    names = ["n1 control", "n1 data", "s1 control", "s1 data"]
    for p in peers:
        names += [p + " control", p + " data"]
    ep = loopback_endpoints(names)
    raw = dict({"node_id": "n1", "role": "worker", "stage": 1, "last_stage": last_stage,
                "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
                "control_bind": ep["n1 control"], "data_bind": ep["n1 data"],
                "ack_timeout_s": 50,
                "peers": [{"id": "s1", "stage": 0, "control_address": ep["s1 control"],
                           "data_address": ep["s1 data"], "link_rate_bytes_s": 1e9}]
                + [{"id": p, "stage": st, "last_stage": last, "link_rate_bytes_s": rate,
                    "control_address": ep[p + " control"], "data_address": ep[p + " data"]}
                   for p, (st, last) in peers.items()]}, **cfg_fields)
    cfg = parse_config(raw)
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
    view.alive.update({"s1"} | set(peers))
    out = Outbox(cfg, transport, policy, view, Capacity(CapacityReport(1e8, 0.01, 1e8, "timed")),
                 input_queue)

    def close():
        transport.close()
        ctx.term()
    return out, close


def _publish(out, peer, input_queue, now=0.0):
    """``peer``'s QUEUE_STATE arrives (through the wire codec): I_m = ``input_queue``."""
    fields = {"role": "worker", "stage": 1, "capacity_flops": 1e8, "input_queue": input_queue,
              "output_queue": 0, "service_time_s": 0.01}
    out.view.peer_state[peer] = dict(fields)
    out.policy.on_control(wire.decode(wire.encode(Kind.QUEUE_STATE, peer, fields)), out.view, now)


def _result() -> OutItem:
    """An answer for the source s1, held until s1 ACKs it."""
    return OutItem(Kind.RESULT, "R:x#0", {"id": "x", "attempt": 0, "source": "s1",
                                          "exit_stage": 2, "cls": 1, "confidence": 0.9,
                                          "worker": "n1", "hops": 2, "created": 0.0},
                   None, dest="s1")


def _held(out):
    return [i.fields["id"] for i in out.waiting]


def test_output_queue_counts_tasks_waiting_to_leave_not_results_nor_tasks_in_transfer(tmp_path):
    """O_n: held tasks, and tasks an emulated link has not started carrying (queued behind
    earlier ones); a task the link carries or that awaits its ACK is in transfer (D_nm), and a
    result awaiting its source's ACK is no task: neither counts."""
    rate = 2e4  # bytes/s: one demo task takes the link ~0.3 s, three fit its 1 s budget
    pol = AgentPolicy({1: 0.5}, {})
    pol.held_in_order = True  # decides by O_n task by task, as MDI-Exit: counted on every view
    out, close = _outbox(tmp_path, pol, {"n2": (2, 0)}, rate=rate, emulate_links=True)
    try:
        now = 100.0
        out.clock = lambda: now
        for i in range(3):
            out.send(_task(i), now)
        out.send(_result(), now)
        assert out.items.tasks == 3 and len(out.items) == 4 and not out.waiting
        # t0's link time started at once; t1 and t2 wait behind it on the link
        assert out.current_view().output_queue == 2
        now = 100.0 + 1.5 * out.items["t1#0"].nbytes / rate  # t1 on the link, t2 still waiting
        assert out.current_view().output_queue == 1
        out.waiting.append(_task("held"))
        assert out.current_view().output_queue == 2
        now = 1e4  # every transfer under way or done; the result is still in custody
        out.waiting.clear()
        assert out.current_view().output_queue == 0 and len(out.items) == 4
    finally:
        close()


def test_held_tasks_are_offered_again_head_first_with_the_whole_output_queue(tmp_path):
    """Six tasks held (I_m = 100), then I_m drops to 3: t0 is offered first and sees O_n = 6
    (every held task), t1 O_n = 5, ...; the first kept (t2) ends the offers and stays the head.
    A RESULT in custody is no part of O_n."""
    pol = Recording({1: 0.8, 2: 0.8, 3: 0.8}, {})
    out, close = _outbox(tmp_path, pol, {"n2": (2, 0), "n3": (2, 0)})
    try:
        for m in ("n2", "n3"):
            _publish(out, m, 100)
        for i in range(6):
            out.send(_task(i), 100.0)
        out.send(_result(), 100.0)
        assert _held(out) == ["t%d" % i for i in range(6)]
        assert out.current_view().output_queue == 6
        for m in ("n2", "n3"):
            _publish(out, m, 3)
        pol.offers.clear()
        out.retry_waiting(101.0)
        # I_m is 3 plus the tasks sent to m since its state: O_n > I_m holds for t0, t1 only
        assert pol.offers == [("t0", 6, "n2"), ("t1", 5, "n3"), ("t2", 4, None)]
        assert _held(out) == ["t2", "t3", "t4", "t5"]
    finally:
        close()


def test_a_new_task_queues_behind_held_ones_so_tasks_leave_oldest_first(tmp_path):
    """Each tick the neighbours ACK, publish I_m = 2 and three tasks arrive, as on a
    one-stage worker that cannot reclaim: every task leaves within a tick of its arrival and
    in arrival order; none is passed over, as none would be in Alg. 2's queue."""
    out, close = _outbox(tmp_path, MdiExitPolicy({1: 0.8, 2: 0.8, 3: 0.8}, {}),
                         {"n2": (2, 0), "n3": (2, 0)})
    try:
        order, n, left_at = [], 0, {}
        for tick in range(12):
            now = 100.0 + tick
            for m in ("n2", "n3"):
                out.on_ack(m, [k for k, it in out.items.items() if it.dest == m], now)
                _publish(out, m, 2, now)
            for _ in range(3):
                out.send(_task(n), now)
                n += 1
            out.retry_waiting(now)
            for it in out.items.values():
                if it.fields["id"] not in left_at:
                    left_at[it.fields["id"]] = tick
                    order.append(int(it.fields["id"][1:]))
        assert order == sorted(order) and order[:3] == [0, 1, 2]
        assert all(left_at["t%d" % i] - i // 3 <= 1 for i in order)
        assert len(order) >= 30
    finally:
        close()


class _ByTier(AgentPolicy):
    """Routes a task by its own id, as DIMEE's sources route by a task's tier: ``blocked``
    ids are kept, the rest go to any alive successor."""

    blocked = {"t0"}

    def choose_successor(self, task, view, exclude=()):
        if task.id in self.blocked:
            return None
        return super().choose_successor(task, view, exclude)


def test_policies_without_held_in_order_get_every_held_task_offered_in_place(tmp_path):
    """A policy that does not set ``held_in_order`` keeps its behaviour: every held task is
    offered, one kept again keeps its place, and a new task is routed at once."""
    pol = _ByTier({1: 0.5}, {})
    out, close = _outbox(tmp_path, pol, {"n2": (2, 0)})
    try:
        out.view.alive.discard("n2")  # nothing usable: everything is held
        for i in range(3):
            out.send(_task(i), 100.0)
        assert _held(out) == ["t0", "t1", "t2"]
        out.view.alive.add("n2")
        out.retry_waiting(101.0)
        assert _held(out) == ["t0"] and {i.fields["id"] for i in out.items.values()} == \
            {"t1", "t2"}
        out.send(_task(3), 101.0)
        assert _held(out) == ["t0"] and "t3#0" in out.items
    finally:
        close()


def test_each_stage_of_a_node_holding_several_is_its_own_queue(tmp_path):
    """A worker holding stages 1-3 holds tasks for stages 2 and 3: a kept stage-2 head does
    not hold back the stage-3 tasks (the simulator keeps one output queue per stage too)."""
    pol = Recording({1: 0.8, 2: 0.8}, {})
    out, close = _outbox(tmp_path, pol, {"n2": (1, 3)}, input_queue=lambda: 20, last_stage=3)
    try:
        _publish(out, "n2", 100)
        for i, stage in ((0, 2), (1, 2), (2, 3), (3, 3)):
            out.send(_task(i, stage), 100.0)
        assert _held(out) == ["t0", "t1", "t2", "t3"]
        out.view.peer_state["n2"]["input_queue"] = 3  # O_n = 4 > 3 for the first offer only
        pol.offers.clear()
        out.retry_waiting(101.0)
        assert [(t, d) for t, _, d in pol.offers] == [("t0", "n2"), ("t1", None),
                                                      ("t2", None)]
        assert _held(out) == ["t1", "t2", "t3"]
    finally:
        close()


# -- the agent's outbox and the simulator re-offer alike ---------------------------------------

MODEL = paper_scenario("paper-resnet101", seed=0, num_sources=1, num_samples=200)


class _SimNode:
    """Node n1 of the simulator's 2-node topology: its stage-1 server's output queue (held
    stage-2 tasks), offered as the event loop does (``agent.sim.engine``: a task ``route``
    keeps joins ``hold``; after every tick the head is offered until one is kept)."""

    def __init__(self):
        sc = mdi_topology("2-node", MODEL, 2e10, 12.5e6, 10.0, knobs={"mdi-exit": {}})
        self.policy = MdiExitSimPolicy()
        self.sim = Simulator(sc, self.policy, SimConfig(duration_s=10.0))
        self.policy.start_slot(SlotView(0, 0.0, sc, None))
        self.q = self.sim.hold[self.sim.index["n1/1"]]
        self.sent = []

    def set_inputs(self, now, n1, n2):
        self.sim.now_s = now
        for node, n in (("n1/1", n1), ("n2/1", n2)):
            i = self.sim.index[node] - len(self.sim.scenario.sources)
            self.sim.njobs[self.sim.server[i]] = n

    def publish(self, now, n1, n2):
        """n2 publishes I_m = ``n2`` (the simulator's state period has passed)."""
        self.set_inputs(now, n1, n2)
        self.policy.on_tick(self.sim)

    def arrive(self, task):
        dest = self.policy.route("n1/1", task, self.sim)
        if dest is None:
            self.q.append(task)
        else:
            self.sent.append((task, dest))

    def tick(self):
        self.policy.on_tick(self.sim)
        while self.q:
            dest = self.policy.route("n1/1", self.q[0], self.sim)
            if dest is None:
                break
            self.sent.append((self.q.popleft(), dest))


def test_agent_outbox_and_simulator_offer_held_tasks_alike(tmp_path):
    """Same script for both adapters, n1 busy (I_n = 20) with neighbour n2: n2 publishes
    I_m = 100 while four tasks arrive (all held), then I_m = 1 (the two oldest leave: each
    offer sees the whole output queue, the third is kept and stops the offers), a fifth task
    arrives (it queues behind the held ones: O_n = 3 is not above I_m = 1 + 2 sent), then
    I_m = 0 (the next two oldest leave). The same tasks go, in the same order, and the same
    stay held."""
    node = _SimNode()
    node.publish(0.0, 20, 100)
    for k in range(4):
        node.arrive(k)
    node.tick()
    held = [list(node.q)]
    node.publish(0.2, 20, 1)
    node.tick()
    held.append(list(node.q))
    node.arrive(4)
    node.tick()
    held.append(list(node.q))
    node.publish(0.4, 20, 0)
    node.tick()
    held.append(list(node.q))
    sim_says = ([t for t, _ in node.sent], held)
    assert {d for _, d in node.sent} == {"n2/2"}

    pol = MdiExitPolicy({1: 0.8, 2: 0.8, 3: 0.8}, {})
    out, close = _outbox(tmp_path, pol, {"n2": (1, 4)}, input_queue=lambda: 20, last_stage=4)
    held, sent = [], []

    def tick(now):  # the node loop's tick: held tasks offered again; note what left, what waits
        out.retry_waiting(now)
        sent.extend(int(i.fields["id"][1:]) for i in out.items.values()
                    if int(i.fields["id"][1:]) not in sent)
        held.append([int(i[1:]) for i in _held(out)])
    try:
        _publish(out, "n2", 100)
        for k in range(4):
            out.send(_task(k), 100.0)
        tick(100.0)
        _publish(out, "n2", 1)
        tick(100.2)
        out.send(_task(4), 100.3)
        tick(100.3)
        _publish(out, "n2", 0)
        tick(100.4)
        assert {i.dest for i in out.items.values()} == {"n2"}
    finally:
        close()
    assert (sent, held) == sim_says
    assert sim_says == ([0, 1, 2, 3], [[0, 1, 2, 3], [2, 3], [2, 3, 4], [4]])


# -- room for the queue rules ------------------------------------------------------------------

def test_a_worker_whose_bound_leaves_alg4_and_alg1_no_room_warns_once_at_start(tmp_path,
                                                                             caplog):
    """A worker holding every stage with threshold adaptation and the default bound (32 tasks:
    I_n + O_n can pass T_Q2 = 30 by two, O_n never passes T_O = 50) gets one WARNING when its
    policy is configured at start, naming both numbers and the bound to set (80); at 80 none."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)

    def start(max_queue_tasks):
        ep = loopback_endpoints(["c", "d", "mc", "md", "sc", "sd"])
        cfg = parse_config({
            "node_id": "n1", "role": "worker", "stage": 1, "last_stage": 4, "bundle": bundle.path,
            "state_dir": str(tmp_path), "control_bind": ep["c"], "data_bind": ep["d"],
            "policy": "mdi-exit", "policy_knobs": MDI_MODES["adapt"],
            "max_queue_tasks": max_queue_tasks,
            "peers": [{"id": "cam", "stage": 0, "control_address": ep["sc"],
                       "data_address": ep["sd"]},
                      {"id": "n2", "stage": 1, "last_stage": 4, "control_address": ep["mc"],
                       "data_address": ep["md"]}]})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="agent.policies.mdi_exit.agent"):
            configured_policy(cfg, bundle, build_view(cfg, bundle, None))
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    (warning,) = start(32)
    for part in ("max_queue_tasks = 32", "queue_high = 30", "output_queue_limit = 50",
                 "threshold_adaptation", "at least 80"):
        assert part in warning, warning
    assert start(80) == []


@pytest.mark.parametrize("cap, role, several, problem", [
    (31, "worker", False, True),  # Alg. 4's band above T_Q2 is one task wide
    (32, "worker", False, False),  # one-stage worker: T_O plays no part, the band is two wide
    (50, "worker", True, True),  # O_n > T_O = 50 cannot happen
    (51, "worker", True, False),
    (8, "source", False, False),  # a source's Alg. 3 adds its stage-1 node's queues
])
def test_queue_room_problem_names_only_rules_a_bound_can_block(cap, role, several, problem):
    """Alg. 4 needs I_n + O_n > T_Q2 within the bound, Alg. 1 on a worker holding several
    stages O_n > T_O; a source is not checked."""
    params = mx.params_from_knobs(MDI_MODES["adapt"])
    assert bool(queue_room_problem(params, cap, role, several)) == problem


@pytest.mark.parametrize("preset", [p for p in shipped_presets() if p.startswith("mdi-")])
def test_every_mdi_preset_gives_its_nodes_room_for_the_queue_rules_in_every_mode(preset,
                                                                                tmp_path):
    """The testbed's node configs of each mdi-* preset, in each --mdi-mode: every node may
    hold ``queue_room`` tasks (80) and no worker's bound blocks Alg. 1 or Alg. 4."""
    for mode in sorted(MDI_MODES):
        topo = with_mdi_mode(load_topology(preset), mode)
        cfgs = node_configs(topo, DEMO_BUNDLE_DIR, "mdi-exit", 10.0, 1.0, str(tmp_path / mode))
        for cfg in cfgs.values():
            params = mx.params_from_knobs(cfg.policy_knobs)
            assert cfg.max_queue_tasks >= queue_room(params) == 80
            assert queue_room_problem(params, cfg.max_queue_tasks, cfg.role,
                                      cfg.last_stage > cfg.stage) == ""


def test_a_policy_not_deciding_by_o_n_gets_the_links_part_recounted_at_most_every_tick(tmp_path):
    """For a policy that reads O_n only in status, heartbeats and metrics, the emulated links'
    queued tasks are counted again at most every PACED_RECOUNT_S (a scan per view cost ~12 us
    with 80 queued), held tasks always at once; after the interval the count is exact."""
    from agent.node.outqueue import PACED_RECOUNT_S

    rate = 2e4
    out, close = _outbox(tmp_path, AgentPolicy({1: 0.5}, {}), {"n2": (2, 0)}, rate=rate,
                         emulate_links=True)
    try:
        now = 100.0
        out.clock = lambda: now
        assert out.current_view().output_queue == 0  # counted now: nothing queued
        for i in range(3):
            out.send(_task(i), now)
        out.waiting.append(_task("held"))
        assert out.current_view().output_queue == 1  # the held task at once, the links' later
        now += PACED_RECOUNT_S
        assert out.current_view().output_queue == 3  # t1 and t2 behind t0 on the link, + held
    finally:
        close()
