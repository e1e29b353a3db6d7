"""The source side of a node: task creation, custody of each task to its result, records.

A task's path: a Poisson arrival samples the replay set (or a local client pushes a tensor);
the policy admits it (``admit``) or it is recorded as rejected; the book (``book.SourceBook``)
gives it an id; the source sets its result deadline (``result_timeout_s``) and hands a stage-1
TASK to the outbox, which routes and sends it. The RESULT comes back from whichever worker let
it exit; the source ACKs it, records it and (client mode) answers the client. A task with no
result by its deadline is re-issued as a new attempt, and recorded as lost after
``max_attempts``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Optional

import numpy as np

from agent.config.node import NodeConfig
from agent.protocol import wire
from agent.protocol.wire import Kind
from agent.node.book import Pending, ReplaySet, SourceBook
from agent.node.outbox import OutItem, Outbox
from agent.node.role import Role
from agent.policies.api import AgentPolicy


class SourceSide(Role):
    """Arrivals, admission, re-issues and records of one source."""

    def __init__(self, cfg: NodeConfig, outbox: Outbox, policy: AgentPolicy, book: SourceBook,
                 replay: ReplaySet, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        super().__init__(outbox)
        self.cfg = cfg
        self.policy = policy
        self.book = book
        self.replay = replay
        self.clock = clock
        self.wall = wall
        self.rng = policy.rng
        self.interarrival_s = 1.0 / cfg.arrival_rate_tasks_s if cfg.arrival_rate_tasks_s > 0 else 0
        self.arrivals_done = cfg.arrival != "poisson" or self.interarrival_s == 0
        self.next_arrival = 0.0

    # -- life cycle --------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.next_arrival = now

    def stop_arrivals(self) -> None:
        self.arrivals_done = True

    @property
    def drain_time_s(self) -> float:
        return self.cfg.drain_timeout_s

    def in_flight(self) -> bool:
        return bool(self.book.pending)

    def finish(self, now: float, wall: float) -> None:
        """Tasks still unanswered are recorded as lost; the records file is closed."""
        for tid in list(self.book.pending):
            self.book.lose(tid, wall, now, "shutdown")
        self.book.records.close()

    def flush(self) -> None:
        self.book.records.flush()

    def stats(self) -> Dict[str, Any]:
        return {"tasks": self.book.counts()}

    # -- arrivals ----------------------------------------------------------------------------

    def wake_at(self) -> Optional[float]:
        return None if self.arrivals_done else self.next_arrival

    def on_clock(self, now: float) -> None:
        """Poisson arrivals: one task when due, then the next gap (the policy may set its mean)."""
        if self.arrivals_done or now < self.next_arrival:
            return
        self.out.guarded(self._arrival, now)
        gap = self.policy.interarrival_s(self.out.view, now) or self.interarrival_s
        self.next_arrival = max(self.next_arrival + self.rng.expovariate(1.0 / gap), now - 1.0)

    def _arrival(self, now: float) -> None:
        if self.cfg.max_tasks and self.book.created >= self.cfg.max_tasks:
            self.arrivals_done = True
            return
        x, label = self.replay.sample(self.rng)
        self._create_task(x, label)

    def on_client(self, identity: bytes, msg: wire.Message) -> None:
        """A local client pushed a task (TASK message, its own id); answered with a RESULT."""
        if msg.kind != Kind.TASK:
            return self.out.drop("unexpected_kind")
        x = msg.tensors[0]
        want = self.replay.x
        if x.dtype != want.dtype or tuple(x.shape) != (1,) + tuple(want.shape[1:]):
            return self.out.drop("bad_shape")
        self._create_task(np.ascontiguousarray(x), -1, client=(identity, msg.fields["id"]))

    def _create_task(self, x: np.ndarray, label: int, client=None) -> None:
        now, w = self.clock(), self.wall()
        if not self.policy.admit(self.out.current_view(), now):
            self.book.reject(w, now)
            return
        task = self.book.new(x, label, w, now)
        task.client = client
        self._issue(task, now)

    def _issue(self, task: Pending, now: float) -> None:
        task.result_due = now + self.cfg.result_timeout_s
        fields = {"id": task.id, "source": self.cfg.node_id, "stage": 1, "attempt": task.attempt,
                  "created": task.created_wall, "hops": 0, "resends": task.resends}
        item = OutItem(Kind.TASK, wire.task_key(task.id, task.attempt), fields, task.x)
        self.out.call_at(task.result_due, task.id)
        self.out.send(item, now)

    # -- results -----------------------------------------------------------------------------

    def on_timer(self, key: str, now: float) -> None:
        """Result deadline of task ``key``: re-issue it as a new attempt, or record it lost."""
        task = self.book.pending.get(key)
        if task is None or now < task.result_due:
            return
        self.out.cancel(wire.task_key(task.id, task.attempt))
        if task.attempt + 1 >= self.cfg.max_attempts:
            self.book.lose(key, self.wall(), now, "no result after %d attempts" % (task.attempt + 1))
            return
        task.attempt += 1
        task.resends += 1
        self.out.count("reissued")
        self._issue(task, now)

    def on_data(self, identity: bytes, msg: wire.Message) -> None:
        """A RESULT of one of this source's tasks (anything else is dropped)."""
        if msg.kind != Kind.RESULT:
            return self.out.drop("unexpected_kind")
        f = msg.fields
        self.out.ack(identity, ["R:" + wire.task_key(f["id"], f["attempt"])])
        if f["source"] != self.cfg.node_id:
            return self.out.drop("foreign_result")
        task = self.book.complete(f, self.wall(), self.clock())
        if task is None:
            self.out.count("duplicate_result")
        elif task.client is not None:
            ident, cid = task.client
            self.out.answer_client(ident, dict(f, id=cid))
