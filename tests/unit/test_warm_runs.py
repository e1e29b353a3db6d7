"""Only warm runs measure capacity: a run after at least WARM_RUNS runs the engine made back to
back (each job already waiting as the run before it ended, as calibration and the start-up timing
measure) feeds the online estimate; a run after the engine sat idle (cold caches and clocks, far
slower) and the few right behind it (still slower) do not, so a lightly loaded worker keeps its
calibrated mu and logs no drift. Real onnxruntime engines."""

from __future__ import annotations

import threading

import numpy as np

from agent.node.capacity import Capacity, CapacityReport
from agent.node.inference import WARM_RUNS, InferenceThread, Job
from calibration.online import OnlineCapacityEstimator
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import load_engine
from tests.unit.test_node_inference import _wait_done
from tests.unit.test_node_worker import _worker, task_message


def _stage1():
    spec = load_bundle(DEMO_BUNDLE_DIR).stage(1)
    return spec, load_engine(spec, backend="onnxruntime", threads=1)


def test_a_run_is_warm_only_after_warm_runs_back_to_back_and_a_cold_start_ends_the_streak():
    """run_many: each job's streak counts the runs back to back before it; the caller's
    ``warm`` (the first job was waiting) carries the streak on, its absence starts a new one;
    a run is warm from a streak of WARM_RUNS."""
    spec, engine = _stage1()
    try:
        runner = InferenceThread({1: engine}, {1: spec.flops})
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        jobs = [Job(meta=i, x=x, stage=1) for i in range(WARM_RUNS + 2)]
        dones = runner.run_many(jobs)
        assert [d.streak for d in dones] == list(range(WARM_RUNS + 2))
        assert [d.warm for d in dones] == [False] * WARM_RUNS + [True, True]
        assert [d.streak for d in runner.run_many(jobs[:1], warm=True)] == [WARM_RUNS + 2]
        assert [d.streak for d in runner.run_many(jobs[:2])] == [0, 1]
    finally:
        engine.close()


def test_the_thread_starts_a_streak_at_a_job_it_waited_for_and_goes_on_with_jobs_queued_behind():
    """The inference thread: the first job after an empty queue has streak 0 (cold); jobs
    submitted while a run was going on were waiting when it ended, so the streak goes on and
    the ones from WARM_RUNS on are warm."""
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
    queued = WARM_RUNS + 1
    try:
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        runner.submit(Job(meta="first", x=x, stage=1))
        assert started.wait(30.0)
        for i in range(queued):
            runner.submit(Job(meta=i, x=x, stage=1))
        release.set()
        got = {d.meta: (d.streak, d.warm) for d in _wait_done(runner, queued + 1)}
    finally:
        runner.stop()
        engine.close()
    want = {i: (i + 1, i + 1 >= WARM_RUNS) for i in range(queued)}
    want["first"] = (0, False)
    assert got == want


def test_a_lightly_loaded_worker_keeps_its_capacity_and_a_busy_one_measures_its_engine_calls(
        tmp_path, monkeypatch):
    """A worker on one core (jobs run on the loop's thread, deterministically): tasks one at a
    time, or WARM_RUNS at once, the engine idle before each group, give the estimator no sample
    and mu stays the expected value; a group of WARM_RUNS + 3 gives it the last 3, each the
    engine call's time (no share of the exit head's softmax)."""
    from agent.node import worker as worker_module

    gen = _worker(tmp_path)
    side, out, spec = next(gen)
    try:
        seen = []

        class Recording(OnlineCapacityEstimator):
            def observe(self, service_time_s):
                seen.append(service_time_s)
                super().observe(service_time_s)

        estimator = Recording(float(spec.flops), 1e8)
        side.capacity = Capacity(CapacityReport(1e8, spec.flops / 1e8, 1e8, "timed"), estimator)
        dones = []
        inference_done = side._inference_done
        monkeypatch.setattr(side, "_inference_done", lambda d: (dones.append(d),
                                                                 inference_done(d))[1])
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        n = [0]

        def group(size):
            for _ in range(size):
                side.on_data(b"s1", task_message(n[0], x))
                n[0] += 1
            side.on_clock(side.clock())  # all of them back to back
            assert not side.backlog

        monkeypatch.setattr(worker_module.os, "sched_getaffinity", lambda pid: {0})
        out.view.service_time_s = worker_module.INLINE_MAX_S / 2
        side.on_clock(side.clock())
        assert side.inline
        for size in (1, 1, 1, WARM_RUNS, WARM_RUNS):  # light load
            group(size)
        assert out.counters["tasks_in"] == 3 + 2 * WARM_RUNS
        assert estimator.samples == 0 and side.capacity.capacity_flops == 1e8
        group(WARM_RUNS + 3)
        warm = [d for d in dones if d.warm]
        assert estimator.samples == 3 and [d.streak for d in warm] == [WARM_RUNS + i
                                                                       for i in range(3)]
        assert seen == [d.engine_time_s for d in warm]
        assert all(d.confidence is not None and d.service_time_s >= d.engine_time_s
                   for d in warm)
    finally:
        gen.close()
