"""Only warm runs measure capacity: a run whose job was already waiting when the engine finished
the run before (back to back, as calibration and the start-up timing measure) feeds the online
estimate; a run after the engine sat idle (cold caches and clocks, far slower) does not, so a
lightly loaded worker keeps its calibrated mu and logs no drift. Real onnxruntime engines."""

from __future__ import annotations

import threading

import numpy as np

from agent.node.capacity import Capacity, CapacityReport
from agent.node.inference import InferenceThread, Job
from calibration.online import OnlineCapacityEstimator
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import load_engine
from tests.unit.test_node_inference import _wait_done
from tests.unit.test_node_worker import _worker, task_message


def _stage1():
    spec = load_bundle(DEMO_BUNDLE_DIR).stage(1)
    return spec, load_engine(spec, backend="onnxruntime", threads=1)


def test_in_a_batch_only_the_first_job_can_be_cold_and_only_if_it_was_not_waiting():
    """run_many: the jobs after the first were waiting as the run before them ended (warm);
    the first is warm only when the caller says it was waiting too."""
    spec, engine = _stage1()
    try:
        runner = InferenceThread({1: engine}, {1: spec.flops})
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        jobs = [Job(meta=i, x=x, stage=1) for i in range(3)]
        assert [d.warm for d in runner.run_many(jobs)] == [False, True, True]
        assert [d.warm for d in runner.run_many(jobs[:1], warm=True)] == [True]
    finally:
        engine.close()


def test_the_thread_marks_cold_a_job_it_waited_for_and_warm_the_jobs_queued_behind_a_run():
    """The inference thread: the first job after an empty queue is cold; jobs submitted while
    a run was going on were waiting when it ended, so they are warm."""
    spec, engine = _stage1()
    started, release = threading.Event(), threading.Event()

    class Gated:  # the real engine, held inside its first run until the test releases it
        info = engine.info

        def __init__(self):
            self.runs = 0

        def run(self, x):
            self.runs += 1
            if self.runs == 1:
                started.set()
                assert release.wait(30.0)
            return engine.run(x)

    runner = InferenceThread({1: Gated()}, {1: spec.flops})
    runner.start()
    try:
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        runner.submit(Job(meta="first", x=x, stage=1))
        assert started.wait(30.0)
        for i in range(3):
            runner.submit(Job(meta=i, x=x, stage=1))
        release.set()
        warm = {d.meta: d.warm for d in _wait_done(runner, 4)}
    finally:
        runner.stop()
        engine.close()
    assert warm == {"first": False, 0: True, 1: True, 2: True}


def test_a_lightly_loaded_worker_keeps_its_capacity_and_a_busy_one_measures_it(tmp_path,
                                                                              monkeypatch):
    """A worker on one core (jobs run on the loop's thread, deterministically): one task at a
    time, the engine idle before each, gives the estimator no sample and mu stays the
    expected value; three tasks at once give it the two that waited behind the first."""
    from agent.node import worker as worker_module

    gen = _worker(tmp_path)
    side, out, spec = next(gen)
    try:
        estimator = OnlineCapacityEstimator(float(spec.flops), 1e8)
        side.capacity = Capacity(CapacityReport(1e8, spec.flops / 1e8, 1e8, "timed"), estimator)
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)

        def task(i):
            return task_message(i, x)

        monkeypatch.setattr(worker_module.os, "sched_getaffinity", lambda pid: {0})
        out.view.service_time_s = worker_module.INLINE_MAX_S / 2
        side.on_clock(side.clock())
        assert side.inline
        for i in range(3):  # light load: each task alone
            side.on_data(b"s1", task(i))
            side.on_clock(side.clock())
            assert not side.backlog
        assert out.counters["tasks_in"] == 3
        assert estimator.samples == 0 and side.capacity.capacity_flops == 1e8
        for i in range(3, 6):
            side.on_data(b"s1", task(i))
        side.on_clock(side.clock())  # all three back to back
        assert not side.backlog and estimator.samples == 2
    finally:
        gen.close()
