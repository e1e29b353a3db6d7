"""The two roles of a node: what a source and what a worker do with tasks and results.

``Node`` (``agent.node``) mixes these in; they use its loop's state (``cfg``, ``transport``,
``policy``, ``counters``, ``_send``, ``_schedule``, ``_drop``) and add no threads or sockets.

Source: Poisson arrivals (or a local client's tasks), admission by the policy, custody of
every task until its result (re-issued after ``result_timeout_s``, lost after ``max_attempts``),
one record per task. Worker: checks and ACKs arriving tasks, drops duplicates by task key,
queues them for the inference thread, then returns a result to the source when the exit head
is confident enough (``engines.exit_profile.should_exit``) or at the final stage, and forwards
the features to the next stage otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from agent.net import wire
from agent.policies.api import TaskInfo
from agent.net.wire import Kind
from agent.node.inference import Job
from engines.exit_profile import should_exit

SEEN_KEYS = 100_000  # task keys remembered for duplicate detection


@dataclass
class OutItem:
    """A task or result held until the next hop ACKs it."""

    kind: Kind
    key: str
    fields: Dict[str, Any]
    tensor: Optional[np.ndarray]
    dest: str = ""
    tried: List[str] = field(default_factory=list)
    resends: int = 0
    deadline: float = 0.0
    link_start: float = 0.0  # monotonic time its last send began on the link (0: not sent)


class SourceRole:
    """Task creation, custody to the result, records (mixed into ``Node``)."""

    def _on_client(self, identity: bytes, msg: wire.Message) -> None:
        """A local client pushed a task (TASK message, its own id); answered with a RESULT."""
        if msg.kind != Kind.TASK or self.book is None:
            return self._drop("unexpected_kind")
        x = msg.tensors[0]
        want = self.replay.x
        if x.dtype != want.dtype or tuple(x.shape) != (1,) + tuple(want.shape[1:]):
            return self._drop("bad_shape")
        self._create_task(np.ascontiguousarray(x), -1, client=(identity, msg.fields["id"]))

    def _arrival(self, now: float) -> None:
        if self.cfg.max_tasks and self.book.created >= self.cfg.max_tasks:
            self.arrivals_done = True
            return
        x, label = self.replay.sample(self.rng)
        self._create_task(x, label)

    def _create_task(self, x: np.ndarray, label: int, client=None) -> None:
        now, w = self.clock(), self.wall()
        if not self.policy.admit(self._refresh_view(), now):
            self.book.reject(w, now)
            return
        task = self.book.new(x, label, w, now)
        task.client = client
        self._issue(task, now)

    def _issue(self, task, now: float) -> None:
        task.result_due = now + self.cfg.result_timeout_s
        fields = {"id": task.id, "source": self.cfg.node_id, "stage": 1, "attempt": task.attempt,
                  "created": task.created_wall, "hops": 0, "resends": task.resends}
        item = OutItem(Kind.TASK, wire.task_key(task.id, task.attempt), fields, task.x)
        self._schedule(task.result_due, "E:" + task.id)
        self._send(item, now)

    def _result_timeout(self, task_id: str, now: float) -> None:
        task = self.book.pending.get(task_id)
        if task is None or now < task.result_due:
            return
        self.outbox.pop(wire.task_key(task.id, task.attempt), None)
        if task.attempt + 1 >= self.cfg.max_attempts:
            self.book.lose(task_id, self.wall(), now, "no result after %d attempts" % (task.attempt + 1))
            return
        task.attempt += 1
        task.resends += 1
        self.counters["reissued"] += 1
        self._issue(task, now)

    def _on_result(self, identity: bytes, msg: wire.Message) -> None:
        f = msg.fields
        self.transport.reply(identity, wire.encode(
            Kind.ACK, self.cfg.node_id, {"keys": ["R:" + wire.task_key(f["id"], f["attempt"])]}))
        if f["source"] != self.cfg.node_id:
            return self._drop("foreign_result")
        task = self.book.complete(f, self.wall(), self.clock())
        if task is None:
            self.counters["duplicate_result"] += 1
        elif task.client is not None:
            ident, cid = task.client
            out = dict(f, id=cid)
            self.transport.reply(ident, wire.encode(Kind.RESULT, self.cfg.node_id, out),
                                 client=True)


class WorkerRole:
    """Task intake and what happens after inference (mixed into ``Node``)."""

    def _on_task(self, identity: bytes, msg: wire.Message) -> None:
        f, x = msg.fields, msg.tensors[0]
        spec = self.specs.get(f["stage"])
        if spec is None:
            return self._drop("wrong_stage")
        if f["source"] not in self.sources:
            return self._drop("unknown_source")
        if x.dtype.name != spec.input_dtype or tuple(x.shape) != tuple(spec.input_shape):
            return self._drop("bad_shape")
        key = wire.task_key(f["id"], f["attempt"])
        self.transport.reply(identity, wire.encode(Kind.ACK, self.cfg.node_id, {"keys": [key]}))
        # a worker holding several stages may get the same task back for a later stage
        seen_key = "%s@%d" % (key, f["stage"])
        if seen_key in self.seen:
            self.counters["duplicate_task"] += 1
            return
        self.seen[seen_key] = None
        if len(self.seen) > SEEN_KEYS:
            self.seen.popitem(last=False)
        self.received += 1
        self.counters["tasks_in"] += 1
        if self.hooks:
            self.hooks.metrics.task_in(f["stage"])
        self.runner.submit(Job(meta=dict(f), x=x, stage=f["stage"]))

    def _inference_done(self, done) -> None:
        f = done.meta
        if done.error:
            return self._drop("engine_error")
        if self.hooks:
            self.hooks.on_service(done)
        h = f["stage"]
        last = h == self.view.num_stages
        th = self.policy.thresholds().get(h)
        if done.confidence is not None and (last or (th is not None and should_exit(done.confidence, th))):
            self.counters["exited" if not last else "finished"] += 1
            if self.hooks:
                self.hooks.metrics.task_exited(h)
            out = {"id": f["id"], "attempt": f["attempt"], "source": f["source"], "exit_stage": h,
                   "cls": int(done.cls), "confidence": float(done.confidence),
                   "worker": self.cfg.node_id, "hops": f["hops"] + 1, "resends": f["resends"],
                   "created": f["created"]}
            item = OutItem(Kind.RESULT, "R:" + wire.task_key(f["id"], f["attempt"]), out, None,
                           dest=f["source"])
        elif done.features is None or last:
            return self._drop("no_output")
        else:
            nf = dict(f, stage=h + 1, hops=f["hops"] + 1)
            if self.view.serves(h + 1) and self.policy.keep_local(
                    TaskInfo(f["id"], h + 1, done.features.nbytes), self._refresh_view()):
                self.counters["kept_local"] += 1  # this worker holds the next stage too
                self.runner.submit(Job(meta=nf, x=done.features, stage=h + 1))
                return
            item = OutItem(Kind.TASK, wire.task_key(f["id"], f["attempt"]), nf, done.features)
        if self.hooks:
            self.hooks.metrics.task_out(h)
        self._send(item, self.clock())
