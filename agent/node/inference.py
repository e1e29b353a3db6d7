"""The inference thread of a worker: runs the stage engines on queued tasks, one at a time.

A worker usually holds one stage; one holding several (``last_stage``) has one engine per stage
and each job names the stage to run. A job naming a stage with no engine here is not run: it
comes back failed with reason ``unknown_stage``.

The I/O loop puts ``Job`` objects on ``submit``; the thread takes every job waiting (up to
``RUN_MAX``), runs the engine on each in turn (or on several of one stage in one call, with
``engine_batch_max`` > 1: ``agent.node.batching``), computes their exit heads' confidences in one
vectorised call (``engines.exit_profile.softmax_confidence``; ``run_many``), optionally pads
each service time to emulate a slower device, and hands ``Done`` objects back through a deque
plus one byte on a pipe whose read end the I/O loop polls (so the loop sleeps in its poller,
never spins). A worker confined to one core runs ``run_many`` on its loop's thread instead
(``worker.INLINE_MAX_S``).
The exit decision itself is the worker side's (``steps.next_step``, in the I/O thread, which
owns the current thresholds).

Service time (``Done.service_time_s``) is the time the task kept this thread busy: the
engine call plus its share of the exit heads' softmax. ``Done.engine_time_s`` is the engine
call alone, timed by the rule ``edge-agent calibrate`` times it by (``engines.timing``): the
online capacity estimate takes that (and the start-up timing times the engine the same way,
back to back: ``agent.node.capacity``), so the three measure one mu, and
the softmax and copies stay per-task overhead like messaging. Neither counts the time the task
waited for the interpreter lock: a busy I/O thread holds the lock, and every return from a C
call (the engine releases the lock while it computes) waits for it, which read 20-27% below
the start-up mu under saturation. An engine that computes on the calling thread (onnxruntime
on the CPU with one intra-op thread: ``info`` device "CPU", threads 1) is timed by this
thread's CPU clock (``time.thread_time``: neither lock waits nor time descheduled by other
processes count); any other engine (a GPU, a thread pool) by the wall clock around the call,
lock waits included, since its work is not on this thread. The CPU clock still counts what
taking the lock back costs this thread after the call (system calls, caches the other thread
evicted): nothing beside a stage of milliseconds, but a demo stage of 9.5 us read 30 us beside
a Python thread that never sleeps, so a stage of microseconds reads slower than calibrated
while its I/O thread is busy. An emulated device's service time is flops / emulated mu (or
the engine's own time, if that is longer), not the sleep measured.

A run is *warm* (``Done.warm``) when the engine ran at least ``WARM_RUNS`` jobs back to back
right before it (``Done.streak``: each of them, and this one, was already waiting as the run
before it ended). After an idle spell the first run is far slower than back to back (caches,
CPU idle states and clocks, a GPU's clocks on a Jetson: a 14 us demo stage took 0.3 ms after
50 ms idle on a 2-core x86_64 VM), and the next ones only approach that speed: on that VM,
after 5-50 ms idle, a 9.4 us stage took 47-122, 14-16, 10-11 and 9.8-10.2 us in runs 1 to 4.
Calibration and the start-up timing measure a tight loop, so only warm runs feed the online
capacity estimate (``Done.capacity_sample_s``, which ``agent.node.worker`` hands on): a lightly
loaded worker, whose tasks arrive alone or a few together, keeps its calibrated mu instead of
reading its cold starts as a slower device, while under load (a backlog) the engine runs the
jobs it is handed back to back, all but the first ``WARM_RUNS`` of each such streak count, and
a lasting slow-down (a lower power mode, thermal throttling) moves the estimate. On an
emulated device the sample is the padded service time, the emulated speed.

The hand-off costs one ``SimpleQueue.put`` (C, no Python-level lock) per job and at most one
pipe byte per batch of finished jobs: the thread writes a byte only when the I/O loop has
taken everything it signalled before (``take_done`` clears the flag before it empties the
deque, so no job is left without a byte to wake the loop). ``queued`` is a counter changed
only by the I/O thread. A job past its ``expires`` (monotonic; 0: none) when the thread comes
to it is not run: it comes back failed with reason ``deadline``, so a worker can hand the
thread several jobs at once without running tasks whose source has given up. A failed job is
counted by the loop (``Done.reason``); the thread logs the first failure and then at most one
line per ``FAILURE_LOG_INTERVAL_S`` with the number left unlogged, so a flood of bad jobs
cannot flood the log.

``stop`` closes the wake-up pipe only once the thread has ended: a thread still inside an
engine call past the join timeout (a hung GPU) would otherwise write its byte to a descriptor
number the process may have reused for another file by then. Such a thread's pipe, and its
engines (``BuiltNode.close`` skips their ``close`` while ``alive``: a TensorRT engine's close
frees the buffers and stream the call still uses), are left to the process's exit; once
stopped the thread writes no byte and takes no further job.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from agent.node.batching import batch_limits, batch_step, chunks, thread_unbatched
from agent.node.jobs import WARM_RUNS, Done, Job  # noqa: F401 (WARM_RUNS: imported from here)
from agent.ops.throttle import Throttle, more_since
from engines import timing
from engines.exit_profile import softmax_confidence
from engines.timing import engine_clock

log = logging.getLogger(__name__)

FAILURE_LOG_INTERVAL_S = 60.0  # at most one failure log line per this many seconds
RUN_MAX = 8  # jobs the thread takes from its queue at once and runs back to back


class UnknownStage(LookupError):
    """A job names a stage this worker holds no engine for."""


class InferenceThread:
    """Engines by stage, one thread, FIFO order; ``queued`` counts jobs waiting or running.

    ``engines`` and ``flops`` map stage -> engine / alpha (a single engine and number mean one
    stage, run for jobs with ``stage`` 0).
    """

    def __init__(self, engines: Any, flops: Any, emulate_capacity_flops: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, batch_max: int = 1):
        self.engines: Dict[int, Any] = engines if isinstance(engines, dict) else {0: engines}
        self.flops: Dict[int, float] = ({k: float(v) for k, v in flops.items()}
                                        if isinstance(flops, dict) else {0: float(flops)})
        self.emulate_capacity_flops = float(emulate_capacity_flops)
        self.clock = clock
        self.sleep = sleep
        # stage -> clock its service is timed with: this thread's CPU time when the engine
        # computes on the calling thread, else the wall clock (engines.timing)
        self.service_clock: Dict[int, Callable[[], float]] = {
            h: engine_clock(e, clock) for h, e in self.engines.items()}
        # stage -> jobs one engine call may take (``batch_max``: agent.node.batching); an
        # emulated device, and a thread whose engine step keeps each head's logits, run one a call
        self.batch_limits = batch_limits(self.engines, batch_max, thread_unbatched(
            self.emulate_capacity_flops > 0,
            type(self)._engine_step is not InferenceThread._engine_step))
        self.batching = max(self.batch_limits.values(), default=1) > 1
        self._streak = 0  # runs back to back so far (Done.streak); run_many's callers only
        self._last_end = -math.inf  # clock() when the engine's last run ended (``waited``)
        self._jobs: "queue.SimpleQueue[Optional[Job]]" = queue.SimpleQueue()
        self._done: Deque[Done] = deque()
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        self._busy = 0  # changed by the I/O thread only (submit, take_done)
        # a wake-up byte is on its way (set by the thread, cleared by take_done)
        self._signalled = False
        self._stopped = False  # set by stop: the thread writes no wake-up byte after it
        self._closed = False  # the pipe is closed: never twice (its numbers may be reused)
        self._failure_log = Throttle(FAILURE_LOG_INTERVAL_S, clock)
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    @property
    def wake_fd(self) -> int:
        """File descriptor that becomes readable when results are ready."""
        return self._rfd

    @property
    def alive(self) -> bool:
        """False once the inference thread has died (the watchdog then stops being fed)."""
        return self._thread.is_alive()

    @property
    def queued(self) -> int:
        """Jobs submitted and not yet handed back (waiting + running)."""
        return self._busy

    def start(self) -> None:
        """Start the inference thread."""
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``; its ``Done`` comes back through ``take_done`` (call both from one
        thread, the I/O loop's)."""
        self._busy += 1
        if job.queued_at == math.inf:
            job.queued_at = self.clock()
        self._jobs.put(job)

    def take_done(self) -> List[Done]:
        """Drain the wake-up pipe and return every finished job (call when ``wake_fd`` is ready)."""
        try:
            os.read(self._rfd, 4096)  # one byte per batch (module docstring): one read empties it
        except BlockingIOError:
            pass
        self._signalled = False  # before emptying the deque: a job added after gets its byte
        out: List[Done] = []
        pop = self._done.popleft
        try:
            while True:
                out.append(pop())
        except IndexError:
            pass
        self._busy -= len(out)
        return out

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Finish the running job, drop the rest and join the thread (``timeout_s`` at most);
        True when it has ended. Only then is the pipe closed (module docstring): a thread
        still running is logged once and left, with its pipe, to the process's exit."""
        self._stopped = True
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        self._jobs.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("inference thread of stage(s) %s still running %.1f s after stop (an "
                        "engine call that does not return): its engines and wake-up pipe are "
                        "left open until the process exits",
                        ", ".join(str(h) for h in sorted(self.engines)), timeout_s)
            return False
        if not self._closed:
            self._closed = True
            for fd in (self._rfd, self._wfd):
                try:
                    os.close(fd)
                except OSError:
                    pass
        return True

    def run_one(self, x: np.ndarray, stage: int = 0, pad: bool = True) -> Done:
        """Run ``stage``'s engine on ``x``, padded to the emulated service time unless ``pad`` is
        False (the real engine's time only); used by the thread job by job (emulated devices,
        subclasses with their own ``run_one``)."""
        t0 = self.clock()
        done, logits = self._engine_step(x, stage)
        if logits is not None:
            self._confidences([(done, logits)], stage)
        if self.emulate_capacity_flops > 0 and pad:
            # Emulated slower device: the real engine ran; stretch to flops / emulated mu.
            target = self.flops[stage] / self.emulate_capacity_flops
            rest = target - (self.clock() - t0)
            if rest > 0:
                self.sleep(rest)
            done.service_time_s = max(done.service_time_s, target)
            done.padded = True
        return done

    def run_many(self, jobs: List[Job], warm: Optional[bool] = None) -> List[Done]:
        """Run ``jobs`` back to back on the calling thread (the inference thread, or the loop's
        on one core: ``worker.INLINE_MAX_S``): one ``Done`` each, failures and jobs past their
        ``expires`` included, never raised. ``warm``: the first job was waiting when the
        engine's previous run ended, so the streak of runs back to back goes on (the others
        always were); False starts a new one (``Done.streak``); None (the default): as its time
        stamps say (``waited``).

        The exit heads' confidences are computed in one vectorised ``softmax_confidence`` call
        for all jobs whose logits have one width (per task in numpy it cost about as much as
        a small stage's engine call); each job's service time is its engine call plus its
        share of that call. Emulated devices and subclasses with their own ``run_one`` run
        job by job."""
        if not jobs:  # no run: the streak and the time the engine last ran stay as they are
            return []
        if not (self.waited(jobs) if warm is None else warm):
            self._streak = 0
        if self.emulate_capacity_flops > 0 or type(self).run_one is not InferenceThread.run_one:
            dones = []
            for job in jobs:
                done = self._expired(job)
                if done is None:  # a job not run leaves the engine as it was
                    done = self._run_job(job)
                    done.streak = self._streak
                    self._streak += 1
                dones.append(done)
            self._last_end = self.clock()
            return dones
        dones = []
        heads: List[Tuple[Done, Any]] = []
        if self.batching and len(jobs) > 1:
            dones = self._batched(jobs, heads)
        else:
            for job in jobs:
                done = self._expired(job)
                if done is None:
                    done, logits = self._step(job)
                    done.streak = self._streak
                    self._streak += 1
                    if logits is not None:
                        heads.append((done, logits))
                dones.append(done)
        if heads:
            self._confidences(heads, jobs[0].stage)
        self._last_end = self.clock()
        return dones

    def _step(self, job: Job) -> Tuple[Done, Any]:
        """``job``'s engine step, its failure a failed ``Done`` (never raised)."""
        try:
            done, logits = self._engine_step(job.x, job.stage)
        except Exception as exc:
            return self._failed(job, exc), None
        done.meta = job.meta
        return done, logits

    def _batched(self, jobs: List[Job], heads: List[Tuple[Done, Any]]) -> List[Done]:
        """``run_many``'s engine calls with batching on (``agent.node.batching``): the jobs
        within their deadline, in runs of one stage, one call per run; a run of one, and a run
        whose call raised, go job by job. The logits go to ``heads``."""
        dones = [self._expired(job) for job in jobs]
        ran: List[Done] = []
        for run in chunks([j for j, d in zip(jobs, dones) if d is None], self.batch_limits):
            got = None
            if len(run) > 1:
                try:
                    h = run[0].stage
                    got = batch_step(self.engines[h], self.service_clock[h], run)
                except Exception as exc:  # again alone: a job that fails fails alone, counted
                    self._log_failure("a batched engine call failed (%s): its tasks run one by "
                                      "one", exc)
            for done, logits in got or [self._step(job) for job in run]:
                done.streak = self._streak
                self._streak += 1
                if logits is not None:
                    heads.append((done, logits))
                ran.append(done)
            if got:  # single runs sample mu again only WARM_RUNS after it (agent.node.batching)
                self._streak = 0
        left = iter(ran)
        return [next(left) if d is None else d for d in dones]

    def _confidences(self, heads: List[Tuple[Done, Any]], stage: int) -> None:
        """Fill in each ``Done``'s confidence and class from its logits, in one call when the
        widths agree; the call's time is shared among the jobs' service times."""
        busy = self.service_clock.get(stage, self.clock)
        b0 = busy()
        if len(heads) == 1:  # the common case on a lightly loaded worker: no copy
            conf, cls = softmax_confidence(np.asarray(heads[0][1]).reshape(1, -1))
        else:
            rows = [np.asarray(lg).reshape(-1) for _, lg in heads]
            if len({r.shape[0] for r in rows}) == 1:  # concatenate: np.stack's checks cost 2 us
                conf, cls = softmax_confidence(np.concatenate(rows).reshape(len(rows), -1))
            else:
                parts = [softmax_confidence(r) for r in rows]
                conf = np.concatenate([c for c, _ in parts])
                cls = np.concatenate([k for _, k in parts])
        share = (busy() - b0) / len(heads)
        # tolist: Python floats and ints in one call, not a numpy scalar per job
        for (done, _), c, k in zip(heads, conf.tolist(), cls.tolist()):
            done.confidence, done.cls = c, k
            done.service_time_s += share

    def _engine_step(self, x: np.ndarray, stage: int) -> Tuple[Done, Any]:
        """One engine call, timed: (its ``Done`` without confidence, the logits or None)."""
        if stage not in self.engines:
            raise UnknownStage("no engine for stage %d here (stages %s)"
                               % (stage, sorted(self.engines)))
        out, engine_s = timing.timed_run(self.engines[stage].run, x, self.service_clock[stage])
        feats = out.features
        if feats is not None:
            feats = np.ascontiguousarray(feats)
        # positional: a dataclass's __init__ takes keywords at twice the cost (0.44 against 0.22 us)
        return Done(None, feats, None, None, engine_s, engine_s), out.logits

    def _expired(self, job: Job) -> Optional[Done]:
        if job.expires and self.clock() >= job.expires:  # its source has given up on it
            return Done(job.meta, None, None, None, 0.0, error="expired", reason="deadline")
        return None

    def _log_failure(self, fmt: str, exc: Exception) -> None:
        left = self._failure_log.due()
        if left is not None:
            log.warning(fmt + more_since(left, "more failed jobs"), exc)

    def waited(self, jobs: List[Job]) -> bool:
        """True when the first of ``jobs`` was queued before the engine's last run ended: it
        waited, so the engine was not idle before it (``run_many``'s ``warm``). Decided from
        time stamps, not from finding it queued: a thread descheduled after a run would else
        take a job that came after an idle spell for one that waited."""
        return bool(jobs) and jobs[0].queued_at <= self._last_end

    def _run(self) -> None:
        while True:
            jobs = [self._jobs.get()]
            while jobs[-1] is not None and len(jobs) < RUN_MAX:  # what else waits now
                try:
                    jobs.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            stop = jobs[-1] is None
            if stop:
                jobs.pop()
            self._done.extend(self.run_many(jobs))
            if stop or self._stopped:  # stopped: no loop takes a result, no byte is written
                return
            if jobs and not self._signalled:  # else the loop is yet to take the batch these join
                self._signalled = True
                try:
                    os.write(self._wfd, b"x")
                except OSError:  # never raised while the pipe is open (stop closes it after
                    return  # the thread ended); ended, the thread reads as not alive

    def _run_job(self, job: Job) -> Done:
        """Run one job; an engine failure comes back as a failed ``Done``, never raised."""
        try:
            done = self.run_one(job.x, job.stage)
        except Exception as exc:
            return self._failed(job, exc)
        done.meta = job.meta
        return done

    def _failed(self, job: Job, exc: Exception) -> Done:
        if isinstance(exc, UnknownStage):  # a routing error, not the engine's: counted apart
            self._log_failure("task dropped: %s", exc)
            return Done(job.meta, None, None, None, 0.0, error=type(exc).__name__,
                        reason="unknown_stage")
        # engine errors must not kill the thread; counted by the loop
        self._log_failure("engine failed on a task: %s", exc)
        return Done(job.meta, None, None, None, 0.0, error=type(exc).__name__,
                    reason="engine_error")
