"""The hand-off between a worker's loop and its inference thread: one wake-up byte per batch
of finished jobs (never a finished job without one), and a job whose deadline passed while it
waited for the thread is handed back failed with reason ``deadline``, not run (a worker then
counts it as drop_deadline and sends nothing on)."""

from __future__ import annotations

import os
import select
import threading
import time

import numpy as np

from agent.node.inference import InferenceThread, Job
from tests.unit.test_node_worker import worker  # noqa: F401 (the worker side fixture)
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.loader import load_engine


class Gated:
    """The real stage engine behind a gate the test opens (to let jobs pile up first)."""

    def __init__(self, engine):
        self.engine = engine
        self.info = engine.info
        self.gate = threading.Event()
        self.runs = 0

    def run(self, x):
        assert self.gate.wait(30.0), "the test never opened the gate"
        self.runs += 1
        return self.engine.run(x)


def _runner(clock=time.monotonic):
    spec = load_bundle(DEMO_BUNDLE_DIR).stage(1)
    engine = Gated(load_engine(spec, backend="onnxruntime", threads=1))
    runner = InferenceThread({1: engine}, {1: spec.flops}, clock=clock)
    return runner, engine, np.zeros(spec.input_shape, dtype=spec.input_dtype)


def _wait(pred, timeout_s=30.0):
    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_jobs_finished_while_the_loop_is_busy_wake_it_once_and_come_back_together():
    runner, engine, x = _runner()
    runner.start()
    try:
        for i in range(5):
            runner.submit(Job(meta=i, x=x, stage=1))
        engine.gate.set()
        _wait(lambda: engine.runs == 5 and len(runner._done) == 5)
        assert os.read(runner.wake_fd, 4096) == b"x"  # one byte for the five
        os.write(runner._wfd, b"x")  # put it back for take_done
        done = runner.take_done()
    finally:
        runner.stop()
    assert [d.meta for d in done] == list(range(5))
    assert runner.queued == 0


def test_every_finished_job_is_signalled_across_many_batches():
    """The loop side waits on the pipe only: a job added after a take_done still wakes it."""
    runner, engine, x = _runner()
    engine.gate.set()
    runner.start()
    got = []
    try:
        for batch in range(50):
            for i in range(1 + batch % 4):
                runner.submit(Job(meta=(batch, i), x=x, stage=1))
            while runner.queued:
                ready, _, _ = select.select([runner.wake_fd], [], [], 30.0)
                assert ready, "a finished job left the loop asleep"
                got += runner.take_done()
    finally:
        runner.stop()
    assert len(got) == sum(1 + b % 4 for b in range(50))


def test_a_job_past_its_deadline_when_the_thread_takes_it_is_not_run():
    now = [100.0]
    runner, engine, x = _runner(clock=lambda: now[0])
    runner.start()
    try:
        runner.submit(Job(meta="first", x=x, stage=1))  # blocks the thread at the gate
        runner.submit(Job(meta="late", x=x, stage=1, expires=101.0))
        runner.submit(Job(meta="in time", x=x, stage=1, expires=500.0))
        runner.submit(Job(meta="no deadline", x=x, stage=1))
        now[0] = 200.0  # "late" waited past its deadline behind "first"
        engine.gate.set()
        done = {}
        while len(done) < 4:
            ready, _, _ = select.select([runner.wake_fd], [], [], 30.0)
            assert ready
            done.update((d.meta, d) for d in runner.take_done())
    finally:
        runner.stop()
    assert engine.runs == 3
    assert done["late"].reason == "deadline" and done["late"].features is None
    assert done["late"].error
    assert all(not done[k].error for k in ("first", "in time", "no deadline"))


def test_a_task_expiring_in_the_inference_threads_queue_is_dropped_not_run(worker):  # noqa: F811
    """Jobs handed to the thread carry their deadline: one that expired while it waited there
    comes back as drop_deadline, and nothing is sent on for it."""
    side, out, spec = worker
    x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
    expires = time.monotonic() - 1.0  # past by the time the thread comes to it ...
    meta = {"id": "t9", "attempt": 0, "source": "s1", "stage": 1, "hops": 0, "resends": 0,
            "created": 0.0, "_expires": expires}
    side.backlog.append(Job(meta=meta, x=x, stage=1))
    side._pump(expires - 10.0)  # ... though not yet when the loop handed it over
    while side.in_flight():
        ready, _, _ = select.select(side.wake_fds(), [], [], 30.0)
        assert ready, "inference thread gave no result within 30 s"
        side.on_fd(ready[0])
    assert out.counters["drop_deadline"] == 1
    assert out.counters["exited"] == 0 and not out.items
