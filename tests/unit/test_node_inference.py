"""The inference thread runs real onnxruntime stage engines; a job naming a stage with no
engine here is an error counted by reason, never run on another stage's engine."""

from __future__ import annotations

import select
import time

import numpy as np
import pytest

from agent.node.inference import InferenceThread, Job
from engines.loader import load_engine
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR


def _wait_done(runner, n):
    out = []
    while len(out) < n:
        ready, _, _ = select.select([runner.wake_fd], [], [], 30.0)
        assert ready, "inference thread gave no result within 30 s"
        out += runner.take_done()
    return out


def test_a_job_for_a_stage_without_an_engine_fails_with_reason_unknown_stage():
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    spec = bundle.stage(1)
    engine = load_engine(spec, backend="onnxruntime")
    runner = InferenceThread({1: engine}, {1: spec.flops})
    runner.start()
    try:
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        runner.submit(Job(meta="known", x=x, stage=1))
        runner.submit(Job(meta="unknown", x=x, stage=3))
        done = {d.meta: d for d in _wait_done(runner, 2)}
    finally:
        runner.stop()
        engine.close()
    assert done["known"].error == "" and done["known"].features is not None
    assert done["unknown"].reason == "unknown_stage"
    assert done["unknown"].features is None and done["unknown"].confidence is None
    assert runner.queued == 0


def test_inference_thread_reports_whether_it_is_alive():
    class Engine:  # stands in for engines.Engine: only run() is called, never here
        def run(self, x):
            raise AssertionError("not called")

    runner = InferenceThread({1: Engine()}, {1: 1.0})
    runner.start()
    assert runner.alive
    runner.stop()
    assert not runner.alive


def test_service_is_timed_by_the_threads_cpu_clock_only_when_the_engine_computes_on_it():
    """onnxruntime on the CPU with one intra-op thread runs on the calling thread: its service
    time is that thread's CPU time (no lock waits); an engine computing elsewhere (a GPU, a
    thread pool) is timed by the wall clock."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    spec = bundle.stage(1)
    engine = load_engine(spec, backend="onnxruntime", threads=1)

    class Elsewhere:  # stands in for an engine whose info says it computes on a GPU
        info = {"backend": "tensorrt", "device": "GPU", "threads": 1}

    try:
        runner = InferenceThread({1: engine, 2: Elsewhere()}, {1: spec.flops, 2: 1.0})
        assert runner.service_clock == {1: time.thread_time, 2: time.monotonic}
    finally:
        engine.close()


def test_an_emulated_service_time_is_the_emulated_time_however_long_the_padding_slept():
    """The padding's sleep may overrun (the lock, the scheduler): the service time reported is
    flops / emulated mu, which is what the emulated device takes."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    spec = bundle.stage(1)
    engine = load_engine(spec, backend="onnxruntime", threads=1)
    slept = []

    def oversleep(seconds):
        slept.append(seconds)
        time.sleep(2 * seconds)

    try:
        runner = InferenceThread({1: engine}, {1: spec.flops},
                                 emulate_capacity_flops=spec.flops / 0.05, sleep=oversleep)
        done = runner.run_one(np.zeros(spec.input_shape, dtype=spec.input_dtype), 1)
    finally:
        engine.close()
    assert slept and done.service_time_s == pytest.approx(0.05, rel=1e-9)
    assert 0 < done.engine_time_s < 0.05


def test_failed_jobs_are_logged_once_a_minute_however_many_fail(caplog):
    """Every failed job comes back with its reason (the loop counts them all), but the thread
    logs the first and then at most one line a minute, with the number left out."""
    class Broken:  # stands in for an engine whose every run fails
        info = {}

        def run(self, x):
            raise RuntimeError("boom")

    now = [0.0]
    runner = InferenceThread({1: Broken()}, {1: 1.0}, clock=lambda: now[0])
    runner.start()
    try:
        for i in range(50):
            runner.submit(Job(meta=i, x=np.zeros(1), stage=1))
        done = _wait_done(runner, 50)
        now[0] = 61.0
        runner.submit(Job(meta=50, x=np.zeros(1), stage=1))
        done += _wait_done(runner, 1)
    finally:
        runner.stop()
    assert [d.reason for d in done] == ["engine_error"] * 51
    lines = [r.getMessage() for r in caplog.records if "engine failed" in r.getMessage()]
    assert len(lines) == 2 and "49 more failed jobs" in lines[1]


def test_jobs_run_together_get_the_confidences_and_classes_each_would_get_alone():
    """``run_many`` computes the exit heads' softmax once for all its jobs: every job's
    confidence and class equal what ``run_one`` gives for its input alone, failed and expired
    jobs come back failed in their place, and each service time covers its engine call."""
    bundle = load_bundle(DEMO_BUNDLE_DIR)
    spec = bundle.stage(1)
    engine = load_engine(spec, backend="onnxruntime", threads=1)
    runner = InferenceThread({1: engine}, {1: spec.flops}, clock=lambda: 100.0)
    try:
        rng = np.random.default_rng(3)
        xs = [rng.standard_normal(spec.input_shape).astype(spec.input_dtype) for _ in range(5)]
        jobs = [Job(meta=i, x=x, stage=1) for i, x in enumerate(xs)]
        jobs.insert(2, Job(meta="gone", x=xs[0], stage=1, expires=50.0))
        jobs.insert(4, Job(meta="nowhere", x=xs[0], stage=7))
        dones = runner.run_many(jobs)
        assert [d.meta for d in dones] == [0, 1, "gone", 2, "nowhere", 3, 4]
        by = {d.meta: d for d in dones}
        assert by["gone"].reason == "deadline" and by["nowhere"].reason == "unknown_stage"
        for i, x in enumerate(xs):
            alone = runner.run_one(x, 1)
            assert by[i].cls == alone.cls
            assert by[i].confidence == pytest.approx(alone.confidence, rel=1e-12)
            assert np.array_equal(by[i].features, alone.features)
            assert by[i].service_time_s >= by[i].engine_time_s > 0
    finally:
        engine.close()
