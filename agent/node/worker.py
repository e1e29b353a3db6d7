"""The worker side of a node: task intake, inference, and what happens to a task after a stage.

A task's path through a worker: a TASK arrives at the ROUTER; the worker checks it (a stage it
serves, a known source, the stage's input shape and dtype, ``attempt`` below ``max_attempts``),
then either refuses it in its ACK (``shutdown``, ``no_route``, ``overload``: ``worker_admit``)
or ACKs it, drops a duplicate, and puts it in the input queue (``backlog``), from which at
most ``ENGINE_DEPTH`` jobs at a time go to the inference thread (``inference.py``), or, on a
worker confined to one core with a fast engine, run on the loop's own thread (``INLINE_MAX_S``);
a task past its deadline is dropped there instead of run. When the thread hands the ``Done`` back,
``steps.next_step`` decides: EXIT (a RESULT to the task's source), FORWARD (a stage h+1 TASK
with the features and what is left of its deadline), LOCAL (stage h+1 queued here) or DROP.
Results and forwarded tasks go to the outbox, which keeps them until the next hop ACKs (results
leave once per loop pass, one RESULTS message per source).

A policy that overrides ``on_head`` (``policies.api``) decides instead after each stage with a
head: ANSWER, CONTINUE or ESCALATE. For such a policy the worker keeps a task's raw input (the
tensor it arrived with at stage 1) and a per-task ``local`` dict while the task stays here; an
ESCALATE sends that input again as a stage-1 TASK, with the action's fields, the task's token
and what is left of its deadline, to the successor the policy picks; one no higher tier can take
any more is answered here instead (``worker_tier``). A ``terminal`` worker answers every task
at its own last stage (a tier of DIMEE or MLCI holding stages 1..k).

Duplicates are found by task id and stage (``out_reissue``): a copy of an attempt taken already
runs nothing; a higher attempt (its source's re-issue) is taken in, and runs once the earlier
one's deadline here has passed (held until then: this deadline ends later than the source's).

On SIGTERM the worker refuses new tasks and finishes those it holds (``worker_drain``).
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict, deque
from functools import partial
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from agent.config.node import NodeConfig
from agent.protocol import wire
from agent.protocol.wire import Kind
from agent.node.inference import Done, InferenceThread, Job
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.node.out_reissue import Reissues, forget_expired
from agent.node.role import Role
from agent.node.steps import Step, next_step
from agent.node.worker_admit import refusal
from agent.node.worker_drain import WorkerDrain
from agent.node.worker_tier import escalate, result_item
from agent.ops.metrics import NullMetrics
from agent.policies.api import CONTINUE, ESCALATE, AgentPolicy, HeadInfo, TaskInfo

SEEN_KEYS = 100_000  # task ids remembered for duplicate detection, at most
FORGET_INTERVAL_S = 1.0  # how often entries past their tasks' deadlines are dropped
# jobs handed to the inference thread at a time, run back to back while the loop sleeps or reads
# (2 cost a thread switch per task on a busy core; it drops a job whose deadline passed there)
ENGINE_DEPTH = 8
# On one core the inference thread cannot run beside the loop, only take turns with it, and
# every turn is a pass of the interpreter lock with two context switches: a worker whose CPU
# affinity allows one core runs a fast engine (measured service time up to INLINE_MAX_S) on the
# loop's own thread instead, at most INLINE_BUDGET_S of jobs per loop pass so that ACKs,
# heartbeats and timers keep their pace. Affinity is read again every AFFINITY_CHECK_S (a
# service manager or an operator may change it while the agent runs).
INLINE_MAX_S, INLINE_BUDGET_S, AFFINITY_CHECK_S = 0.002, 0.005, 1.0
EXPIRES = "_expires"  # a job's monotonic deadline in its meta (never sent: popped first)
RAW = "_x0"  # on_head policies: the task's stage-1 input in its meta (never sent)
LOCAL = "_local"  # on_head policies: the task's per-node policy state in its meta (never sent)
# an enum member's lookup on its class costs ~0.07 us, a module constant's a few ns: per task
_TASK, _EXIT, _DROP, _LOCAL = Kind.TASK, Step.EXIT, Step.DROP, Step.LOCAL


def _not_asked() -> bool:
    """``next_step``'s keep_local where the task cannot go on here (it asks none there)."""
    return False


class WorkerSide(Role):
    """Intake, the inference thread's results and the exit decision of one worker.

    ``specs`` maps each stage this worker runs to its ``StageSpec``; ``capacity`` is the
    capacity owner, fed every observed service time.
    """

    def __init__(self, cfg: NodeConfig, outbox: Outbox, policy: AgentPolicy, specs: Dict[int, Any],
                 runner: InferenceThread, capacity: Any, metrics: Any = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(outbox)
        self.cfg = cfg
        self.policy = policy
        self.specs = specs
        # each stage's input dtype and shape, resolved once (compared per task); a tier (DIMEE,
        # MLCI) takes tasks only at its first stage, the raw input an escalation needs
        self.inputs: Dict[int, Tuple[np.dtype, Tuple[int, ...]]] = {
            h: (np.dtype(s.input_dtype), tuple(s.input_shape)) for h, s in specs.items()
            if not cfg.terminal or h == cfg.stage}
        self.runner = runner
        self.capacity = capacity
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.clock = clock
        self.sources = {p.id for p in cfg.sources}
        self.peers = {p.id for p in cfg.peers}  # who may send TASKs here
        # (task id, stage) -> (attempt, monotonic deadline) of the last issue taken here
        self.seen: "OrderedDict[Tuple[str, int], Tuple[int, float]]" = OrderedDict()
        self.reissues = Reissues(outbox)  # re-issues held until the earlier issue's deadline
        self.backlog: Deque[Job] = deque()  # input queue not yet handed to the engine
        self.backlog_bytes = 0
        self.received = 0  # tasks accepted this slot (arrival-rate estimate)
        # the policy decides per head (``on_head`` overridden): keep raw inputs, ask it
        self.head_hook = type(policy).on_head is not AgentPolicy.on_head
        self.inline = False  # run jobs on the loop's thread (see INLINE_MAX_S)
        self._one = False  # affinity and speed ask for inline; it follows once the thread is empty
        self._affinity_at = -math.inf  # clock() of the next affinity check
        self._forget_at = -math.inf  # clock() of the next pass over ``seen``
        self.drain = WorkerDrain(cfg.drain_timeout_s, outbox)  # the stop (SIGTERM)

    # -- what the loop asks ------------------------------------------------------------------

    def stop_arrivals(self) -> None:
        self.drain.begin(self.input_queue(), self.clock())  # new TASKs refused from now on

    @property
    def drain_time_s(self) -> float:
        return self.cfg.drain_timeout_s

    def finish(self, now: float, wall: float) -> None:
        self.drain.report(self.input_queue(), now)

    def in_flight(self) -> bool:
        return bool(self.runner.queued or self.backlog or self.reissues.jobs)

    def healthy(self) -> bool:
        return self.runner.alive

    def wake_fds(self) -> List[int]:
        return [self.runner.wake_fd]

    def slot_rate(self, slot_length_s: float) -> Optional[float]:
        n, self.received = self.received, 0
        return n / slot_length_s  # phi: tasks accepted over the last slot

    def input_queue(self) -> int:
        """Tasks waiting for or in the engine (I_n), held re-issues included."""
        return len(self.backlog) + len(self.reissues.jobs) + self.runner.queued

    def held(self) -> Tuple[int, int]:
        """(tasks, tensor bytes) this node holds: input and output queues together."""
        tasks, nbytes = self.out.held()
        return (len(self.backlog) + len(self.reissues.jobs) + self.runner.queued + tasks,
                self.backlog_bytes + self.reissues.nbytes + nbytes)

    def stats(self) -> Dict[str, Any]:
        tasks, nbytes = self.held()
        return {"held_tasks": tasks, "held_bytes": nbytes}

    def on_fd(self, fd: int) -> None:
        """The inference thread has results: carry out each one's next step."""
        for done in self.runner.take_done():
            self.out.guarded(self._inference_done, done)
        self._pump(self.clock())

    def on_clock(self, now: float) -> None:
        if self._one_core(now) and self.backlog:
            self._run_here(now)
        self._pump(now)
        if now >= self._forget_at:
            self._forget_at = now + FORGET_INTERVAL_S
            forget_expired(self.seen, self.cfg.result_timeout_s, now)

    def wake_at(self) -> Optional[float]:
        # jobs left for the next pass on the loop's thread: poll without waiting
        return -math.inf if self.inline and self.backlog else None

    def _one_core(self, now: float) -> bool:
        """True when jobs run on the loop's thread (INLINE_MAX_S); re-checked now and then. The
        switch waits until the inference thread has handed every job back (``_pump`` holds new
        ones meanwhile): a TensorRT engine's one context, buffers and stream take one call at
        a time. Back to the thread at once: an inline run has ended when this is called."""
        if now >= self._affinity_at:
            self._affinity_at = now + AFFINITY_CHECK_S
            try:
                cores = len(os.sched_getaffinity(0))
            except (AttributeError, OSError):  # not on Linux: the thread, as before
                cores = 0
            self._one = (cores == 1 and not self.runner.emulate_capacity_flops
                         and self.out.view.service_time_s <= INLINE_MAX_S)
        if not self.runner.queued:
            self.inline = self._one
        return self.inline

    def _run_here(self, now: float) -> None:
        """Run backlog jobs on this thread, ENGINE_DEPTH at a time, for up to INLINE_BUDGET_S;
        each is carried out at once (their ACKs left after the poll that brought them)."""
        end = now + INLINE_BUDGET_S
        guarded, carry_out = self.out.guarded, self._inference_done  # bound once, not per job
        while self.backlog and now < end:
            jobs = []
            while len(jobs) < ENGINE_DEPTH:
                job = self._take(now)
                if job is None:
                    break
                jobs.append(job)
            for done in self.runner.run_many(jobs):
                guarded(carry_out, done)
            now = self.clock()

    def _take(self, now: float) -> Optional[Job]:
        """The next backlog job still within its deadline; expired ones are dropped on the way
        (None: the backlog is empty)."""
        drain = self.drain
        while self.backlog:
            job = self.backlog.popleft()
            self.backlog_bytes -= job.x.nbytes
            # source_gone's own first test, read here: no call per job while the worker serves
            if drain.stopping and drain.source_gone(job.meta.get("source")):  # nobody to answer
                self.out.drop("source_gone")
            elif (job.meta.get(EXPIRES) or math.inf) > now:  # 0: no deadline
                return job
            else:
                self.out.drop("deadline")
        return None

    # -- intake ------------------------------------------------------------------------------

    def on_data(self, identity: bytes, msg: wire.Message) -> None:
        """A TASK for a stage here: checked, refused or ACKed, de-duplicated, queued."""
        if msg.kind is not _TASK:
            return self.out.reject("unexpected_kind", msg.sender, "%s, not a TASK" % msg.kind.name)
        if msg.sender not in self.peers:
            return self.out.reject("unknown_sender", msg.sender, "a TASK from a node not among "
                                   "the peers (a predecessor belongs in [[peers]])")
        f, x = msg.fields, msg.tensors[0]
        h = f["stage"]
        want = self.inputs.get(h)
        if want is None:
            return self.out.reject("wrong_stage", msg.sender, "a TASK for stage %d%s" % (
                h, " (a tier takes tasks at stage %d)" % self.cfg.stage if self.cfg.terminal
                else ""))
        if f["source"] not in self.sources:
            return self.out.reject("unknown_source", msg.sender,
                                   "a TASK of source %r, not a peer" % f["source"])
        if x.dtype != want[0] or x.shape != want[1]:
            return self.out.reject("bad_shape", msg.sender, "a stage-%d input of %s%s, not %s%s"
                                   % (h, x.dtype, x.shape, want[0], want[1]))
        attempt, cfg = f["attempt"], self.cfg
        if attempt >= cfg.max_attempts:
            return self.out.reject("bad_attempt", msg.sender, "attempt %d of a TASK, max %d"
                                   % (attempt, cfg.max_attempts))
        key = wire.task_key(f["id"], attempt)
        now = self.clock()
        ttl = min(f.get("ttl_s", cfg.result_timeout_s), cfg.result_timeout_s)
        sk = (f["id"], h)  # the duplicate table's key, built once
        seen = self.seen.get(sk)
        if seen is not None and attempt <= seen[0]:
            self.out.ack(identity, [key])  # held (or done) here already: the sender stops
            return self.out.count("duplicate_task")
        if ttl <= 0:
            self.out.ack(identity, [key])
            return self.out.drop("deadline")
        why = refusal(self, f, x.nbytes, msg.sender, ttl, now)  # (reason, retry_s)
        if why is not None:
            return self.out.refuse(identity, key, *why)
        self.out.ack(identity, [key])
        self.seen[sk] = (attempt, now + ttl)
        if seen is not None:  # forget_expired, SEEN_KEYS: oldest first (a new key is last)
            self.seen.move_to_end(sk)
        if len(self.seen) > SEEN_KEYS:
            self.seen.popitem(last=False)
        self.received += 1
        self.out.count("tasks_in")
        self.metrics.task_in(h)
        meta = f  # decoded for this message alone: the job owns it from here
        meta[EXPIRES] = now + ttl
        if self.head_hook and h == 1:
            meta[RAW] = x  # the raw input, for an ESCALATE (A4)
        job = Job(meta, x, h)  # positional: keywords cost a dataclass's __init__ 0.14 us more
        if seen is not None and now < seen[1]:  # a re-issue: after the earlier one (out_reissue)
            return self.reissues.hold(key, job, seen[1])
        self._queue(job, now)

    def on_timer(self, key: str, now: float) -> None:
        """A re-issue held until its earlier issue's deadline here (``out_reissue``) is due."""
        job = self.reissues.release(key)
        if job is not None:
            self._queue(job, now)

    def _queue(self, job: Job, now: float) -> None:
        job.queued_at = self.runner.clock()  # it waits from now: ``InferenceThread.waited``
        self.backlog.append(job)
        self.backlog_bytes += job.x.nbytes
        if not (self.inline or self._one):  # else on_clock runs it: _pump would hand none over
            self._pump(now)

    def _pump(self, now: float) -> None:
        """Hand queued jobs to the engine, up to ENGINE_DEPTH; expired ones are dropped (when
        jobs run, or are about to run, on the loop's thread, ``on_clock`` runs them instead)."""
        while self.runner.queued < ENGINE_DEPTH and not (self.inline or self._one):
            job = self._take(now)
            if job is None:
                return
            job.expires = job.meta.get(EXPIRES) or 0.0  # the thread drops it if still queued then
            self.runner.submit(job)

    # -- after inference ---------------------------------------------------------------------

    def _inference_done(self, done: Done) -> None:
        f = done.meta  # the job's own map (on_data, _queue and reclaim each build one): no copy
        expires = f.pop(EXPIRES, 0.0)
        x0, local = f.pop(RAW, None), f.pop(LOCAL, None)
        f.pop("ttl_s", None)
        self.drain.ran += 1
        if done.error:
            return self.out.drop(done.reason or "engine_error")
        self.metrics.service_time(done.service_time_s)
        if done.batch > 1:  # ran in one engine call with others (agent.node.batching)
            self.out.count("engine_batched")
        sample = done.capacity_sample_s  # 0: a cold run or a batched call's share, no mu sample
        if sample:  # (the heads' softmax is never in it: node.inference)
            self.capacity.observe(sample)
        h = f["stage"]
        view = self.out.view
        final = view.last_stage if self.cfg.terminal else view.num_stages
        action = None
        if self.head_hook and done.confidence is not None:
            local = {} if local is None else local
            action = self.policy.on_head(HeadInfo(
                f["id"], f["attempt"], h, done.confidence, int(done.cls),
                getattr(done, "logits", None), f, local, h == final), self.out.current_view())
            if action.kind == ESCALATE:
                return escalate(self, f, x0, expires, action, done.cls, done.confidence)
        # the final stage exits (or drops) whatever the threshold and the next stage, and an
        # on_head answer replaces the threshold: the policy's map (a copy per call) and the
        # view are asked only where they decide (most tasks a worker answers end at its last)
        decides = h != final
        threshold = self.policy.thresholds().get(h) if decides and action is None else None
        # keep_local is asked only where this worker serves the next stage: made only where the
        # task may go on (a closure made per task cost 0.1-0.3 us, and its cells every access)
        step = next_step(h, final, done.confidence, threshold, done.features is not None,
                         decides and view.serves(h + 1),
                         partial(self._keep_local, f, h, done) if decides else _not_asked,
                         None if action is None else action.kind != CONTINUE)
        if step is _DROP:
            return self.out.drop(_DROP.value)
        if step is _EXIT and not math.isfinite(done.confidence):  # logged: a lost task's why
            return self.out.reject("bad_output", f["source"], "stage %d's exit confidence for "
                                   "task %s is %r (its input or the engine)"
                                   % (h, f["id"], done.confidence))
        now = self.clock()
        if step is not _EXIT and expires and now >= expires:
            return self.out.drop("deadline")  # its source has given up: no next stage
        if step is _EXIT:
            item = result_item(self, f, h, done.cls, done.confidence, action, expires)
            if item is None:
                return
        else:
            nf = dict(f, stage=h + 1, hops=f["hops"] + 1)
            if step is _LOCAL:
                self.out.count("kept_local")  # this worker holds the next stage too
                nf[EXPIRES] = expires
                if self.head_hook:
                    nf[RAW], nf[LOCAL] = x0, local
                self._queue(Job(meta=nf, x=done.features, stage=h + 1), now)
                return
            item = OutItem(Kind.TASK, wire.task_key(f["id"], f["attempt"]), nf, done.features,
                           expires=expires)
            self.metrics.task_out(h)  # handed on (may yet die held); an answer is exited
        self.out.send(item, now)
        if item.kind is _TASK:
            self._reclaim_if_idle()

    def _keep_local(self, f: Dict[str, Any], h: int, done: Done) -> bool:
        """The policy's ``keep_local`` for task ``f`` after stage ``h`` (``next_step`` asks)."""
        info = TaskInfo(f["id"], h + 1, done.features.nbytes)
        return self.policy.keep_local(info, self.out.current_view())

    def after_tick(self, now: float) -> None:
        self._reclaim_if_idle()

    def _reclaim_if_idle(self) -> None:
        """Idle reclaim: when the policy says so (``reclaim(view)``), take the oldest held task
        whose stage this worker serves back from the output queue and run it here, one task
        per decision (the task then counts in the input queue, so the next answer is no)."""
        if not self.out.waiting:
            return
        serves = self.out.view.serves
        if not any(serves(i.fields["stage"]) for i in self.out.waiting):
            return
        if not self.policy.reclaim(self.out.current_view()):
            return
        item = self.out.take_back(lambda i: serves(i.fields["stage"]))
        if item is not None:
            self.out.count("reclaimed")
            meta = dict(item.fields, **{EXPIRES: item.expires})
            self._queue(Job(meta=meta, x=item.tensor, stage=item.fields["stage"]), self.clock())
