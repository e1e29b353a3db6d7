"""A source's arrival rate as its view carries it (what DTO-EE plans with): a client source
estimates it from the new tasks it takes in per slot, starting from the configured
``arrival_rate_tasks_s``, following a load step in one slot and a small steady error slowly,
while a Poisson source keeps its configured rate; both with the estimator alone and with real
source nodes built by ``agent.node.build.build``, fed over ZeroMQ."""

from __future__ import annotations

import json
import math
import os
import random
import threading
import time

import numpy as np
import pytest
import zmq

from agent.config.node import parse_config
from agent.fleet.client import Client
from agent.fleet.client_wire import task_frames
from agent.net.transport import Transport
from agent.node.arrivalrate import (
    NOISE_SIGMAS,
    SMOOTHING,
    ArrivalRate,
    measures_arrivals,
)
from agent.node.book import RecordWriter, ReplaySet, SourceBook
from agent.node.build import build, build_view
from agent.node.capacity import Capacity
from agent.node.outbox import Outbox
from agent.node.source import SourceSide
from agent.ops.state import STATS_FILE
from agent.policies.api import AgentPolicy
from agent.protocol import wire
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR, REPLAY_PATH
from tests.unit.endpoints import loopback_endpoints
from tests.unit.source_parts import source_parts

SLOT_S = 1.0  # slot length of the nodes here (s)

# -- the estimator ---------------------------------------------------------------------------


def test_the_estimate_starts_at_the_configured_rate():
    """Rule: before any slot the estimate is the prior (the config's rate); a negative prior
    is taken as 0, and a slot of no length changes nothing."""
    assert ArrivalRate(12.0).rate_tasks_s == 12.0
    assert ArrivalRate(-3.0).rate_tasks_s == 0.0
    est = ArrivalRate(12.0)
    assert est.update(40, 0.0) == 12.0 and est.steps == 0


def test_a_count_within_poisson_noise_moves_the_estimate_a_tenth_of_the_way():
    """Rule: 24 tasks in a 1 s slot at an estimate of 20/s (within 3 sqrt(20) = 13.4 of the
    expected 20) moves the estimate SMOOTHING of the way to 24/s, not to 24/s."""
    est = ArrivalRate(20.0)
    assert est.update(24, 1.0) == pytest.approx(20.0 + SMOOTHING * 4.0)
    assert est.steps == 0


def test_the_noise_of_a_steady_poisson_stream_stays_out_of_the_estimate():
    """Rule: over 300 slots of 5 s of a steady 20/s Poisson stream (seeded), the estimate
    strays from 20/s less than half as far on average as each slot's own count does: the plan
    does not follow each slot's noise, and its mean stays within 0.5/s of the true rate."""
    counts = np.random.default_rng(7).poisson(20.0 * 5.0, size=300)
    est = ArrivalRate(20.0)
    seen = np.array([est.update(int(n), 5.0) for n in counts])
    raw_error = np.mean(np.abs(counts / 5.0 - 20.0))
    assert np.mean(np.abs(seen - 20.0)) < 0.5 * raw_error
    assert abs(np.mean(seen) - 20.0) < 0.5


def test_a_load_step_is_followed_within_one_slot():
    """Rule: a source configured for 12/s that takes in 160 tasks in a 5 s slot (32/s, far
    beyond the noise of the expected 60) plans with 32/s from that slot on; a step down as far
    is followed as fast."""
    est = ArrivalRate(12.0)
    assert est.update(160, 5.0) == 32.0 and est.steps == 1
    assert est.update(60, 5.0) == 12.0 and est.steps == 2


def test_a_moderate_step_is_followed_when_a_few_slots_together_show_it():
    """Rule: 13/s stepping to 20/s over 2 s slots (40 tasks against 26 expected: within one
    slot's noise, 3 sqrt(26) = 15.3) is followed once two slots together (80 against the 52
    expected from the estimate they started at: beyond 3 sqrt(52) = 21.6) show it: the
    estimate jumps to their rate, 20/s, at the second slot."""
    est = ArrivalRate(13.0)
    assert est.update(40, 2.0) == pytest.approx(13.0 + SMOOTHING * 7.0) and est.steps == 0
    assert est.update(40, 2.0) == 20.0 and est.steps == 1


def test_a_small_steady_error_is_corrected_slowly():
    """Rule: a real 13/s against a configured 12/s (65 tasks per 5 s slot: within the noise of
    60) moves the estimate by SMOOTHING of the gap each slot: 13 - 0.9^k after k slots, within
    0.05 of 13 after 30 slots, never jumping."""
    est = ArrivalRate(12.0)
    for k in range(1, 31):
        assert est.update(65, 5.0) == pytest.approx(13.0 - (1 - SMOOTHING) ** k)
    assert abs(est.rate_tasks_s - 13.0) < 0.05 and est.steps == 0


def test_slots_without_arrivals_give_a_finite_rate_down_to_zero():
    """Rule: an idle slot at 12/s (0 against 60 expected over 5 s) drops the estimate to 0 at
    once; at 0, idle slots keep it 0 and a stray task or two (within the noise floor of
    NOISE_SIGMAS tasks) moves it only a little; at a small estimate an idle slot within the
    noise lowers it a tenth. Never NaN nor negative."""
    est = ArrivalRate(12.0)
    assert est.update(0, 5.0) == 0.0
    assert est.update(0, 5.0) == 0.0
    assert est.update(2, 1.0) == pytest.approx(SMOOTHING * 2.0)
    assert est.update(int(NOISE_SIGMAS) + 2, 1.0) == NOISE_SIGMAS + 2  # beyond the floor: a step
    small = ArrivalRate(1.0)
    assert small.update(0, 1.0) == pytest.approx(1.0 - SMOOTHING)
    assert all(math.isfinite(r) and r >= 0 for r in (est.rate_tasks_s, small.rate_tasks_s))


def test_only_client_sources_measure_their_arrivals():
    """Rule: a client source's rate is estimated; a Poisson source keeps its configured one."""
    assert measures_arrivals("client") and not measures_arrivals("poisson")


# -- the source side's count -----------------------------------------------------------------


class _EveryOther(AgentPolicy):
    """Admits every other task (a policy's admission control), to count rejected tasks too."""

    def __init__(self):
        super().__init__({}, {})
        self.asked = 0

    def admit(self, view, now):
        self.asked += 1
        return self.asked % 2 == 1


class _Clock:
    """The source's monotonic clock, moved by the test (slot lengths exact)."""

    def __init__(self):
        self.now = time.monotonic()

    def __call__(self):
        return self.now


@pytest.fixture
def client_source(tmp_path):
    """A client source's real side (book, records file, outbox, transport never bound) with a
    clock the test moves; its successor w1 is alive."""
    ep = loopback_endpoints(("control", "data", "client", "w1 control", "w1 data"))
    cfg = parse_config({
        "node_id": "s1", "role": "source", "bundle": DEMO_BUNDLE_DIR, "state_dir": str(tmp_path),
        "control_bind": ep["control"], "data_bind": ep["data"], "arrival": "client",
        "client_bind": ep["client"], "arrival_rate_tasks_s": 1.0, "result_timeout_s": 0.5,
        "peers": [{"id": "w1", "stage": 1, "control_address": ep["w1 control"],
                   "data_address": ep["w1 data"]}]})
    first = load_bundle(DEMO_BUNDLE_DIR).stage(1)
    ctx = zmq.Context()
    transport = Transport(ctx, cfg.node_id, cfg.control_bind, cfg.data_bind, cfg.peers)
    view = build_view(cfg, load_bundle(DEMO_BUNDLE_DIR), None)
    view.alive.add("w1")
    policy = _EveryOther()
    clock = _Clock()
    out = Outbox(cfg, transport, policy, view, Capacity())
    out.clock = clock
    side = SourceSide(cfg, out, policy,
                      SourceBook("s1", RecordWriter(str(tmp_path / "records.jsonl"))),
                      ReplaySet(REPLAY_PATH, first.input_shape, first.input_dtype), clock=clock)
    side.start(clock.now)
    yield side, clock, view
    transport.close()
    ctx.term()


def _push(side, x, tid):
    side.on_client(b"c1", wire.decode(task_frames(x, tid, "c1")))


def test_a_client_source_counts_each_new_task_admitted_or_not_but_no_reissue(client_source):
    """Rule: the tasks a client source's slot counts are its offered load: 8 client tasks (4
    admitted, 4 rejected at admission) make 8/s over a 1 s slot (a step from the prior 1/s);
    an input refused as bad_input is no task, and the re-issue of a task whose result is late
    is no new task: neither is counted. The next slot, with no new task, moves the estimate a
    tenth of the way to 0 (0 is within the noise of the 8 expected)."""
    side, clock, view = client_source
    x = np.zeros((1, 1, 28, 28), np.float32)
    for i in range(8):
        _push(side, x, "c-%d" % i)
    _push(side, np.zeros((1, 3), np.float32), "bad")  # not the stage-1 shape: bad_input
    assert side.rejected == {"admission": 4} and len(side.book.pending) == 4
    task = next(iter(side.book.pending))
    clock.now += 0.6  # past the 0.5 s result deadline: re-issued as attempt 1
    side.on_timer(task, clock.now)
    assert side.book.pending[task].attempt == 1
    clock.now += 0.4
    assert side.slot_rate(SLOT_S) == 8.0
    clock.now += 1.0
    assert side.slot_rate(SLOT_S) == pytest.approx(8.0 - SMOOTHING * 8.0)
    assert side.stats()["arrival_rate_measured"] is True


def test_a_stalled_slot_is_counted_with_the_next(client_source):
    """Rule: a slot that ran over twice its length (the loop stalled; the clients' tasks of
    that time still wait in the sockets) gives no rate, and its tasks are counted with the next
    slot's, over both slots' time: the rate is what one slot of 10 tasks over 4 s gives, not a
    dip then a spike."""
    side, clock, view = client_source
    x = np.zeros((1, 1, 28, 28), np.float32)
    for i in range(8):
        _push(side, x, "s-%d" % i)
    clock.now += 3.0  # three slots long
    assert side.slot_rate(SLOT_S) is None
    for i in range(2):
        _push(side, x, "t-%d" % i)
    clock.now += 1.0
    want = ArrivalRate(side.cfg.arrival_rate_tasks_s).update(10, 4.0)
    assert side.slot_rate(SLOT_S) == pytest.approx(want)


def test_a_poisson_source_keeps_its_configured_rate(tmp_path):
    """Rule: a Poisson source's slots leave its view's rate alone (``slot_rate`` None), however
    many tasks it created; its stats say the rate is the configured one, not measured."""
    parts = source_parts(tmp_path, AgentPolicy({}, {}))
    try:
        parts.view.alive.add("w1")
        side = parts.side
        side.start(time.monotonic())
        for _ in range(5):
            side.on_clock(side.next_arrival)
        assert side.book.created == 5
        assert side.slot_rate(1.0) is None
        assert side.stats()["arrival_rate_tasks_s"] == parts.cfg.arrival_rate_tasks_s == 1.0
        assert side.stats()["arrival_rate_measured"] is False
    finally:
        parts.close()


# -- real source nodes -----------------------------------------------------------------------


def _node_config(state_dir, **over):
    ep = loopback_endpoints(("control", "data", "client", "w1 control", "w1 data"))
    obj = {"node_id": "s1", "role": "source", "bundle": DEMO_BUNDLE_DIR,
           "state_dir": str(state_dir), "control_bind": ep["control"], "data_bind": ep["data"],
           "slot_length_s": SLOT_S, "rounds_per_slot": 4, "round_interval_s": 0.05,
           "status_interval_s": 0.2, "drain_timeout_s": 0.5, "arrival_rate_tasks_s": 1.0,
           "peers": [{"id": "w1", "stage": 1, "control_address": ep["w1 control"],
                      "data_address": ep["w1 data"]}]}
    if over.pop("client", False):
        obj.update(arrival="client", client_bind=ep["client"])
    obj.update(over)
    os.makedirs(str(state_dir), exist_ok=True)
    return parse_config(obj)


class _Running:
    """A node built from ``cfg`` serving on its own thread until ``stop``; ``rates`` holds
    every rate its view carried, read every 5 ms."""

    def __init__(self, cfg):
        self.ctx = zmq.Context()
        self.built = build(cfg, None, self.ctx)
        self.built.transport.open()
        self.node = self.built.node
        self.rates = [self.node.view.arrival_rate_tasks_s]
        self._done = threading.Event()
        self._loop = threading.Thread(target=self.node.run, daemon=True)
        self._watch = threading.Thread(target=self._watching, daemon=True)
        self._loop.start()
        self._watch.start()

    def _watching(self):
        while not self._done.is_set():
            r = self.node.view.arrival_rate_tasks_s
            if r != self.rates[-1]:
                self.rates.append(r)
            time.sleep(0.005)

    def wait(self, cond, timeout_s, what):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.02)
        raise AssertionError("timed out waiting for %s: rates seen %r" % (what, self.rates))

    def stop(self):
        self.node.stop()
        self._loop.join(30)
        self._done.set()
        self._watch.join(5)
        self.built.close()
        self.ctx.term()


def test_a_client_source_node_plans_with_the_rate_its_clients_send(tmp_path):
    """Rule: a real client source (configured for 1/s, its only worker never up) fed about
    40 tasks/s over ZeroMQ for 4 s carries a rate of 20 to 120/s in its view from a slot
    boundary on, and once the clients stop it falls to a tenth of that within 10 slots;
    stats.json and the status line show the rate the view carries, marked measured."""
    cfg = _node_config(tmp_path / "s1", client=True)
    run = _Running(cfg)
    x = np.zeros((1, 1, 28, 28), np.float32)
    rng = random.Random(3)
    try:
        with Client(cfg.client_bind, name="c1") as client:
            due = time.monotonic()
            end = due + 4.0
            while due < end:  # 40/s on an absolute schedule: a late send catches up
                time.sleep(max(0.0, due - time.monotonic()))
                client.send(x)
                client.receive(0.0)  # answers (rejected / lost) read past
                due += rng.expovariate(40.0)
        run.wait(lambda: max(run.rates) >= 20.0, 10 * SLOT_S, "the client traffic's rate")
        peak = max(run.rates)
        assert peak <= 120.0, run.rates  # a sender stalled a while catches up in a burst
        run.wait(lambda: run.rates[-1] <= peak / 10, 10 * SLOT_S, "the rate to fall")
    finally:
        run.stop()
    with open(os.path.join(cfg.state_dir, STATS_FILE)) as f:
        stats = json.load(f)  # the final stats, written at the stop
    assert stats["arrival_rate_measured"] is True
    assert stats["arrival_rate_tasks_s"] == round(run.node.view.arrival_rate_tasks_s, 3)
    assert run.node.status.line().endswith(
        " arrival_rate=%.1f/s" % run.node.view.arrival_rate_tasks_s)


def test_a_poisson_source_node_keeps_its_configured_rate_whatever_it_creates(tmp_path):
    """Rule: a real Poisson source configured for 20/s that stops creating after 3 tasks
    (max_tasks) still carries exactly 20/s after 3 slots: its configured rate is its load."""
    cfg = _node_config(tmp_path / "s1", arrival_rate_tasks_s=20.0, max_tasks=3)
    run = _Running(cfg)
    try:
        time.sleep(3.5 * SLOT_S)
        assert run.node.role.book.created == 3
    finally:
        run.stop()
    assert run.rates == [20.0]
    assert "arrival_rate=" not in run.node.status.line()
