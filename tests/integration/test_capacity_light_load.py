"""A lightly loaded worker keeps its calibrated mu, and a lasting slow-down under load moves it.

The worker side serves a real onnxruntime demo stage on its real inference thread, with the
online estimator a built worker gets, starting from the mu calibrate measures for that engine
(``calibration.measure.measure_engine``, as a profile entry gives it). Tasks come in groups
spaced apart, each group handled before the next comes: at most ``WARM_RUNS`` tasks at once, as
tasks reach a lightly loaded worker, no run is warm, so nothing of the cold runs after an idle
spell (nor of the exit head's softmax) reaches the estimate; bigger groups, a backlog, do feed
it, and an engine slowed for good there shows as drift. Nothing here asserts a speed: the
slowed engine spins 100 times its calibrated service time more per call."""

from __future__ import annotations

import logging
import select
import time

from agent.node.capacity import Capacity, CapacityReport
from agent.node.inference import WARM_RUNS
from calibration.measure import measure_engine
from calibration.online import OnlineCapacityEstimator
from engines.timing import timing_input
from tests.unit.test_node_worker import _worker, task_message

IDLE_S = 0.005  # between groups: 200 groups a second at most, the engine idle in between
GROUPS = 60


def _serve_group(side, first, size, x):
    """Hand ``size`` TASKs to the worker at once and carry out their results."""
    for i in range(first, first + size):
        side.on_data(b"s1", task_message(i, x))
    while side.in_flight():
        ready, _, _ = select.select(side.wake_fds(), [], [], 30.0)
        assert ready, "inference thread gave no result within 30 s"
        side.on_fd(ready[0])


class _Slowed:
    """The real engine, then ``extra_s`` of CPU time spent on the calling thread: a device
    slowed for good (a lower power mode, throttling) as its CPU clock sees it."""

    def __init__(self, engine, extra_s):
        self.engine, self.extra_s, self.info = engine, extra_s, engine.info

    def run(self, x):
        out = self.engine.run(x)
        t0 = time.thread_time()
        while time.thread_time() - t0 < self.extra_s:
            pass
        return out


def test_a_lightly_loaded_worker_keeps_its_calibrated_mu_and_a_slowed_busy_one_drifts(
        tmp_path, caplog):
    """Groups of 1 to WARM_RUNS tasks spaced IDLE_S apart: no drift line, mu stays the
    calibrated value. Then the engine slowed 100x for good, in groups of 4 * WARM_RUNS (the
    runs from the WARM_RUNS-th on of each streak count): the estimate falls below half and
    drift is logged."""
    gen = _worker(tmp_path)
    side, out, spec = next(gen)
    caplog.set_level(logging.INFO, logger="agent.node.capacity")
    try:
        engine = side.runner.engines[1]
        mu = measure_engine(engine, spec, 0.2, warmup_s=0.05).capacity_flops
        estimator = OnlineCapacityEstimator(float(spec.flops), mu)
        side.capacity = Capacity(CapacityReport(mu, spec.flops / mu, 0.0, "profile"), estimator)
        x = timing_input(spec)
        n = 0
        for g in range(GROUPS):
            size = 1 + g % WARM_RUNS
            _serve_group(side, n, size, x)
            n += size
            time.sleep(IDLE_S)
        assert out.counters["tasks_in"] == n
        assert "capacity drifted" not in caplog.text
        assert estimator.samples == 0 and side.capacity.capacity_flops == mu

        side.runner.engines[1] = _Slowed(engine, 100 * spec.flops / mu)
        for _ in range(100):  # how many runs of a group are warm depends on the hand-off
            _serve_group(side, n, 4 * WARM_RUNS, x)
            n += 4 * WARM_RUNS
            if side.capacity.capacity_flops < 0.5 * mu:
                break
        assert estimator.samples > 0 and side.capacity.capacity_flops < 0.5 * mu
        assert caplog.text.count("capacity drifted") == 1
        side.runner.engines[1] = engine
    finally:
        gen.close()
