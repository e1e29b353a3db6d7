"""A stage engine is never used by two threads at once, nor its wake-up pipe after it is closed:
``InferenceThread.stop`` leaves the pipe of a thread still inside an engine call open (and says
so), and a worker switches between the inference thread and its loop's thread only once the
thread has handed every job back (a TensorRT engine has one execution context, one set of
buffers and one stream). Real threads, pipes and onnxruntime engines; the engines are wrapped
to hold a run until the test releases it and to record how many calls were inside at once."""

from __future__ import annotations

import logging
import math
import os
import select
import threading

import numpy as np

from agent.node import worker as worker_module
from agent.node.inference import InferenceThread, Job
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR
from engines.engine import StageOutput
from engines.loader import load_engine
from tests.unit.test_node_worker import _worker, task_message

DEADLINE_S = 30.0  # generous: the machine may be loaded


class Held:
    """An engine (``run``, ``info``, ``close``) around a real one: a run on the inference
    thread waits for ``release``; every run counts how many runs are inside at once."""

    def __init__(self, engine):
        self.engine = engine
        self.info = dict(engine.info)
        self.release = threading.Event()
        self.entered = threading.Event()  # a run on the inference thread has begun
        self.closed = False
        self._lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0  # the most runs ever inside at once

    def run(self, x) -> StageOutput:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            if threading.current_thread().name == "inference":
                self.entered.set()
                assert self.release.wait(DEADLINE_S), "the test never released the run"
            return self.engine.run(x)
        finally:
            with self._lock:
                self.inside -= 1

    def close(self) -> None:
        self.closed = True


def _stage1():
    spec = load_bundle(DEMO_BUNDLE_DIR).stage(1)
    return spec, load_engine(spec, backend="onnxruntime", threads=1)


def _same_pipe(fd, ino):
    """True while ``fd`` is still the pipe whose inode was ``ino`` (not closed, not reused)."""
    try:
        return os.fstat(fd).st_ino == ino
    except OSError:
        return False


def test_stop_leaves_the_pipe_of_a_thread_still_in_its_engine_open_and_says_so(caplog):
    """Rule: a stop whose join times out (the engine call does not return) returns False, logs
    one WARNING naming the stage(s) and the timeout, and closes no descriptor; the thread,
    once its call returns, ends without writing a wake-up byte. A later stop, the thread
    ended, returns True and closes the pipe."""
    spec, engine = _stage1()
    held = Held(engine)
    runner = InferenceThread({1: held}, {1: spec.flops})
    runner.start()
    try:
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        runner.submit(Job(meta="stuck", x=x, stage=1))
        assert held.entered.wait(DEADLINE_S)
        rfd = runner.wake_fd
        ino = os.fstat(rfd).st_ino
        with caplog.at_level(logging.WARNING, logger="agent.node.inference"):
            assert runner.stop(timeout_s=0.2) is False
        lines = [r.getMessage() for r in caplog.records
                 if r.name == "agent.node.inference" and r.levelno == logging.WARNING]
        assert len(lines) == 1 and "stage(s) 1" in lines[0] and "0.2 s" in lines[0], lines
        assert runner.alive and _same_pipe(rfd, ino)  # the thread may still write to it
        held.release.set()
        runner._thread.join(DEADLINE_S)
        assert not runner.alive
        assert select.select([rfd], [], [], 0)[0] == []  # stopped: no wake-up byte
        assert runner.stop() is True
        assert not _same_pipe(rfd, ino)
    finally:
        held.release.set()
        runner.stop()
        engine.close()


def test_stop_of_an_idle_thread_ends_it_and_closes_its_pipe_once():
    """Rule: stop of a thread waiting for work ends it and returns True; its pipe is closed,
    and a second stop closes nothing (the numbers may belong to another file by then)."""
    spec, engine = _stage1()
    runner = InferenceThread({1: engine}, {1: spec.flops})
    runner.start()
    ino = os.fstat(runner.wake_fd).st_ino
    try:
        assert runner.stop() is True
        assert not runner.alive and not _same_pipe(runner.wake_fd, ino)
        rfd, wfd = os.pipe()  # the lowest free numbers: most likely the closed pipe's
        try:
            assert runner.stop() is True
            for fd in (rfd, wfd):
                os.fstat(fd)  # raises OSError (EBADF) had the second stop closed it
        finally:
            os.close(rfd)
            os.close(wfd)
    finally:
        engine.close()


def _wait_until_all_back(side):
    """Carry out the inference thread's results until it holds no job."""
    while side.runner.queued:
        ready = select.select(side.wake_fds(), [], [], DEADLINE_S)[0]
        assert ready, "inference thread gave no result within %.0f s" % DEADLINE_S
        side.on_fd(ready[0])


def _recheck_affinity(side, monkeypatch, cores):
    monkeypatch.setattr(worker_module.os, "sched_getaffinity", lambda pid: set(range(cores)))
    side._affinity_at = -math.inf  # as when AFFINITY_CHECK_S has passed
    side.on_clock(side.clock())


def test_a_worker_runs_its_engine_on_one_thread_at_a_time_across_the_inline_switch(
        tmp_path, monkeypatch):
    """Rule: when the worker is confined to one core, jobs already handed to the inference
    thread finish there before any job runs on the loop's thread (new jobs wait in the
    backlog meanwhile), and back on more cores jobs go to the thread again; the engine never
    has two runs inside at once."""
    gen = _worker(tmp_path)
    side, out, spec = next(gen)
    held = Held(side.runner.engines[1])
    side.runner.engines[1] = held
    try:
        x = np.zeros(spec.input_shape, dtype=spec.input_dtype)
        out.view.service_time_s = worker_module.INLINE_MAX_S / 2  # a fast engine
        _recheck_affinity(side, monkeypatch, 2)
        assert not side.inline
        side.on_data(b"s1", task_message(1, x))
        side.on_data(b"s1", task_message(2, x))
        assert held.entered.wait(DEADLINE_S)  # task 1 is inside the engine, on the thread
        assert side.runner.queued == 2
        _recheck_affinity(side, monkeypatch, 1)  # one core now, two jobs still on the thread
        side.on_data(b"s1", task_message(3, x))
        side.on_clock(side.clock())
        assert not side.inline and len(side.backlog) == 1 and side.runner.queued == 2
        assert held.most_inside == 1
        held.release.set()
        _wait_until_all_back(side)
        side.on_clock(side.clock())  # the thread holds nothing: task 3 runs here
        assert side.inline and not side.backlog and side.runner.queued == 0
        _recheck_affinity(side, monkeypatch, 2)  # back to the thread
        assert not side.inline
        side.on_data(b"s1", task_message(4, x))
        assert not side.backlog and side.runner.queued == 1
        _wait_until_all_back(side)
        assert out.counters["tasks_in"] == 4 and held.most_inside == 1
        assert len(out.items) + len(out.waiting) == 4  # each task's answer or next hop
    finally:
        held.release.set()
        gen.close()
