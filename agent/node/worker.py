"""The worker side of a node: task intake, inference, and what happens to a task after a stage.

A task's path through a worker: a TASK arrives at the ROUTER; the worker checks it (a stage it
serves, a known source, the stage's input shape and dtype), ACKs it at once, drops a duplicate
by task key and stage, and queues a ``Job`` for the inference thread (``inference.py``). When
the thread hands the ``Done`` back, ``steps.next_step`` decides: EXIT (a RESULT to the task's
source), FORWARD (a stage h+1 TASK with the features), LOCAL (stage h+1 queued here) or DROP.
Results and forwarded tasks go to the outbox, which keeps them until the next hop ACKs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional

from agent.config.node import NodeConfig
from agent.protocol import wire
from agent.protocol.wire import Kind
from agent.node.inference import Done, InferenceThread, Job
from agent.node.outbox import OutItem, Outbox
from agent.node.role import Role
from agent.node.steps import Step, next_step
from agent.ops.metrics import NullMetrics
from agent.policies.api import AgentPolicy, TaskInfo

SEEN_KEYS = 100_000  # task keys remembered for duplicate detection


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
        self.runner = runner
        self.capacity = capacity
        self.metrics = metrics if metrics is not None else NullMetrics()
        self.clock = clock
        self.sources = {p.id for p in cfg.sources}
        self.seen: "OrderedDict[str, None]" = OrderedDict()
        self.received = 0  # tasks accepted this slot (arrival-rate estimate)

    # -- what the loop asks ------------------------------------------------------------------

    def in_flight(self) -> bool:
        return bool(self.runner.queued)

    def healthy(self) -> bool:
        return self.runner.alive

    def wake_fds(self) -> List[int]:
        return [self.runner.wake_fd]

    def slot_arrivals(self) -> Optional[int]:
        n, self.received = self.received, 0
        return n

    def on_fd(self, fd: int) -> None:
        """The inference thread has results: carry out each one's next step."""
        for done in self.runner.take_done():
            self.out.guarded(self._inference_done, done)

    # -- intake ------------------------------------------------------------------------------

    def on_data(self, identity: bytes, msg: wire.Message) -> None:
        """A TASK for a stage here: checked, ACKed, de-duplicated, queued for inference."""
        if msg.kind != Kind.TASK:
            return self.out.drop("unexpected_kind")
        f, x = msg.fields, msg.tensors[0]
        spec = self.specs.get(f["stage"])
        if spec is None:
            return self.out.drop("wrong_stage")
        if f["source"] not in self.sources:
            return self.out.drop("unknown_source")
        if x.dtype.name != spec.input_dtype or tuple(x.shape) != tuple(spec.input_shape):
            return self.out.drop("bad_shape")
        key = wire.task_key(f["id"], f["attempt"])
        self.out.ack(identity, [key])
        # a worker holding several stages may get the same task back for a later stage
        seen_key = "%s@%d" % (key, f["stage"])
        if seen_key in self.seen:
            self.out.count("duplicate_task")
            return
        self.seen[seen_key] = None
        if len(self.seen) > SEEN_KEYS:
            self.seen.popitem(last=False)
        self.received += 1
        self.out.count("tasks_in")
        self.metrics.task_in(f["stage"])
        self.runner.submit(Job(meta=dict(f), x=x, stage=f["stage"]))

    # -- after inference ---------------------------------------------------------------------

    def _inference_done(self, done: Done) -> None:
        f = done.meta
        if done.error:
            return self.out.drop(done.reason or "engine_error")
        self.metrics.service_time(done.service_time_s)
        self.capacity.observe(done.service_time_s)
        h = f["stage"]
        view = self.out.view
        nf = dict(f, stage=h + 1, hops=f["hops"] + 1)

        def keep_local() -> bool:
            info = TaskInfo(f["id"], h + 1, done.features.nbytes)
            return self.policy.keep_local(info, self.out.current_view())

        step = next_step(h, view.num_stages, done.confidence, self.policy.thresholds().get(h),
                         done.features is not None, view.serves(h + 1), keep_local)
        if step is Step.DROP:
            return self.out.drop(Step.DROP.value)
        if step is Step.LOCAL:
            self.out.count("kept_local")  # this worker holds the next stage too
            self.runner.submit(Job(meta=nf, x=done.features, stage=h + 1))
            return
        if step is Step.EXIT:
            self.out.count("finished" if h == view.num_stages else "exited")
            self.metrics.task_exited(h)
            out = {"id": f["id"], "attempt": f["attempt"], "source": f["source"], "exit_stage": h,
                   "cls": int(done.cls), "confidence": float(done.confidence),
                   "worker": self.cfg.node_id, "hops": f["hops"] + 1, "resends": f["resends"],
                   "created": f["created"]}
            item = OutItem(Kind.RESULT, "R:" + wire.task_key(f["id"], f["attempt"]), out, None,
                           dest=f["source"])
        else:
            item = OutItem(Kind.TASK, wire.task_key(f["id"], f["attempt"]), nf, done.features)
        self.metrics.task_out(h)
        self.out.send(item, self.clock())
        if item.kind == Kind.TASK:
            self._reclaim_if_idle()

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
            self.runner.submit(Job(meta=item.fields, x=item.tensor, stage=item.fields["stage"]))
