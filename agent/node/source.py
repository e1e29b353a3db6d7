"""The source side of a node: task creation, custody of each task to its result, records.

A task's path: a Poisson arrival samples the replay set (or a local client pushes a tensor);
it is admitted only when the fleet can take it, else recorded at once as ``rejected`` with its
reason: ``admission`` (the policy's ``admit`` said no), ``no_route`` (no live route to some
stage, or no stage-1 successor takes tasks now and none of them is full: each is stopping or
has no route on), ``overload`` (every stage-1 successor refused work lately, one being full,
or the source already holds ``max_queue_tasks`` unACKed or waiting: ``source_refusal``),
``shutdown`` (a client's input that comes while the source drains after SIGTERM; what it
admitted before is drained as usual). The book (``book.SourceBook``)
gives an admitted task an unpredictable id; the source gives it a secret ``token`` and sets its
result deadline (``result_timeout_s``); the stage-1 TASK carries both (the deadline as
``ttl_s``). The RESULT comes back from whichever worker let it exit; the source ACKs it and
records it only when it echoes the task's token (only nodes on the task's path saw it; anything
else is ``drop_forged_result``), then (client mode) answers the client, in the same loop pass
once the task's record line is written. A task with no result
by its deadline is re-issued as a new attempt (by then its earlier issue has expired wherever
it waited, so the two never run side by side), also while no route is on (the re-issue waits
for one), and recorded as lost after ``max_attempts``.

A local client gets exactly one answer per task it pushed: the RESULT, or a RESULT with
``outcome`` rejected / lost / error and a ``reason`` (``wire.answer_fields``; a rejected one
with the wait the source advises before it is sent again, ``retry_s``). A client's uint8
images of the stage-1 shape for a floating-point stage 1 are scaled to [0, 1] by
``engines.profile.as_input``, as the replay set is (``book.ReplaySet``), and said once per run
at INFO; an input that is not the stage-1 dtype and shape otherwise, or holds non-finite values
or values above ``INPUT_ABS_MAX`` or far outside the replay set's value range
(``INPUT_RANGE_WIDTHS``), is refused with outcome ``error``, reason ``bad_input``. A task from
a client whose key was removed from ``client_keys_dir`` and the source sent SIGHUP (the
connection it opened before stays up: ZeroMQ checks keys only at the handshake) is refused
with outcome ``error``, reason ``revoked_client`` (``drop_revoked_client``).

A client source's arrival rate, the phi DTO-EE plans with, is estimated at each slot's end from
the new tasks it took in over the slot (``arrivalrate.ArrivalRate``, the configured
``arrival_rate_tasks_s`` its prior): every task ``_create_task`` sees counts once, admitted or
rejected (the load offered to the fleet, which routing has to spread), never a re-issue, nor a
client input refused as ``bad_input`` (no task of the model). A Poisson source keeps its
configured rate (``arrivalrate.measures_arrivals``).
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from agent.config.node import NodeConfig
from agent.protocol import wire
from agent.protocol.text import input_refusal
from agent.protocol.wire import Kind
from agent.node.arrivalrate import ArrivalRate, measures_arrivals
from agent.node.book import Pending, ReplaySet, SourceBook
from agent.node.outbox import Outbox
from agent.node.outitem import OutItem
from agent.node.role import Role
from agent.node import source_refusal
from agent.policies.api import AgentPolicy, TaskInfo
from engines.profile import INPUT_RANGE_WIDTHS, as_input, beyond_range, unscaled_hint

log = logging.getLogger(__name__)

INPUT_ABS_MAX = 1e6  # a client's input values must lie within +-this (finite)
STALLED_SLOTS = 2.0  # a slot longer than this many slot lengths had the loop stalled
# ... and within the replay set's value range widened on each side by INPUT_RANGE_WIDTHS times
# its width or its largest magnitude, whichever is more (``engines.profile.beyond_range``, the
# rule replay and profiling sets are compared with the model's training inputs by): 0-255
# images where the model takes [0, 1] are refused, not answered wrong


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
        # arrivals and replay rows from a generator of their own, seeded by the config alone:
        # every policy then gets the same arrival times and images (the policy's own generator
        # is drawn from as it routes, differently per policy)
        self.rng = random.Random("%d:arrivals" % cfg.seed)
        self.interarrival_s = 1.0 / cfg.arrival_rate_tasks_s if cfg.arrival_rate_tasks_s > 0 else 0
        self.arrivals_done = cfg.arrival != "poisson" or self.interarrival_s == 0
        self.next_arrival = 0.0
        self.tokens: Dict[str, str] = {}  # task id -> the secret its RESULT must echo
        self.rejected: Dict[str, int] = {}  # reason -> tasks rejected for it
        # client answers of this loop pass: sent once their tasks' record lines are written, so
        # that a client never holds an answer a SIGKILL then turns into a `crash` record
        self.answers: List[Tuple[bytes, Dict[str, Any]]] = []
        self.scaling_said = False  # the INFO line on scaling a client's uint8 input, once a run
        # the estimated rate of a client source (None: a Poisson source's configured rate stands)
        self.rate = (ArrivalRate(cfg.arrival_rate_tasks_s) if measures_arrivals(cfg.arrival)
                     else None)
        self.arrived = 0  # new tasks taken in this slot, admitted or not
        self.slot_from = clock()  # when this slot's count started
        self.stalled = False  # the last slot ran long: it is counted with the next one
        self.stopping = False  # draining after SIGTERM: tasks in flight only, no new one

    # -- life cycle --------------------------------------------------------------------------

    def start(self, now: float) -> None:
        self.next_arrival = self.slot_from = now

    def stop_arrivals(self) -> None:
        self.arrivals_done = self.stopping = True  # a client's new input: rejected, shutdown

    @property
    def drain_time_s(self) -> float:
        return self.cfg.drain_timeout_s

    def in_flight(self) -> bool:
        return bool(self.book.pending)

    def finish(self, now: float, wall: float) -> None:
        """Tasks still unanswered are recorded as lost; the records file is closed."""
        for tid in list(self.book.pending):
            self._lose(tid, now, "shutdown")
        self.book.records.close()
        self.send_answers()

    def flush(self) -> None:
        self.book.records.flush()
        if self.book.records.has_recovered():  # lines given up while the disk was full
            self.book.recover(self.wall(), self.clock(), "unrecorded")

    def stats(self) -> Dict[str, Any]:
        # the rate the view carries, rounded: an idle client source's estimate decays towards 0
        # by SMOOTHING a slot, and stats.json is rewritten only when something in it changed
        return {"tasks": self.book.counts(), "rejected_by_reason": dict(self.rejected),
                "arrival_rate_tasks_s": round(self.out.view.arrival_rate_tasks_s, 3),
                "arrival_rate_measured": self.rate is not None}

    def slot_rate(self, slot_length_s: float) -> Optional[float]:
        """A client source's estimate after the slot just ended (None for a Poisson source:
        its configured rate stands). The slot is timed on the source's clock, not taken as
        ``slot_length_s``: a loop pass that comes late makes a longer slot, not a higher rate.
        A slot over twice its length (the loop stalled or the process was stopped: the clients'
        tasks of that time still wait in the sockets, and the next slot takes them) is counted
        on with the next, so that neither shows a rate no client sent."""
        now = self.clock()
        if self.rate is None:
            return None
        if now - self.slot_from > STALLED_SLOTS * slot_length_s and not self.stalled:
            self.stalled = True  # this slot and the next, counted together at the next boundary
            return None
        self.stalled = False
        arrived, self.arrived = self.arrived, 0
        slot_s, self.slot_from = now - self.slot_from, now
        return self.rate.update(arrived, slot_s)

    # -- arrivals ----------------------------------------------------------------------------

    def wake_at(self) -> Optional[float]:
        return None if self.arrivals_done else self.next_arrival

    def send_answers(self) -> None:
        """The pass's client answers, after the record lines of their tasks are written."""
        if self.answers:
            self.book.records.flush_unless_failing()
            answers, self.answers = self.answers, []
            for identity, fields in answers:
                self.out.answer_client(identity, fields)

    def on_clock(self, now: float) -> None:
        """The pass's client answers; Poisson arrivals: one task when due, then the next gap
        (the policy may set its mean)."""
        if self.answers:  # guarded as the handler that queued them was
            self.out.guarded(self.send_answers)
        if self.arrivals_done or now < self.next_arrival:
            return
        self.out.guarded(self._arrival, now)
        gap = self.policy.interarrival_s(self.out.view, now) or self.interarrival_s
        self.next_arrival = max(self.next_arrival + self.rng.expovariate(1.0 / gap), now - 1.0)

    def _arrival(self, now: float) -> None:
        if self.cfg.max_tasks and self.book.created >= self.cfg.max_tasks:
            self.arrivals_done = True
            return
        x, label, row = self.replay.sample_row(self.rng)
        self._create_task(x, label, row=row)

    def on_client(self, identity: bytes, msg: wire.Message) -> None:
        """A local client pushed a task (TASK message, its own id); answered with a RESULT. A
        client whose key was removed from ``client_keys_dir`` (on the connection it opened
        before) is refused, answered ``error`` / ``revoked_client``, and nothing it sends is
        admitted."""
        if getattr(identity, "revoked", False):
            self.out.reject("revoked_client", identity, "its key is not in client_keys_dir "
                            "(any more): refused (answered error, revoked_client)")
            if msg.kind == Kind.TASK:
                self._answer((identity, msg.fields["id"]), "error", "revoked_client",
                             "this client's key is no longer allowed by the source")
            return None
        if msg.kind != Kind.TASK:
            return self.out.reject("unexpected_kind", identity, "%s from a client" % msg.kind.name)
        x = msg.tensors[0]
        want = self.replay.x
        client = (identity, msg.fields["id"])
        shaped = tuple(x.shape) == (1,) + tuple(want.shape[1:])
        if shaped and x.dtype == np.uint8 and self.replay.unit_scale:
            x = self._scaled(x, want.dtype.name)  # then checked as any float input is
        if x.dtype != want.dtype or not shaped:
            why = input_refusal(x.dtype.name, x.shape, want.dtype.name,
                                (1,) + tuple(want.shape[1:]))
            self.out.reject("bad_shape", identity, "a client's %s (answered error, bad_input)"
                            % why)
            return self._answer(client, "error", "bad_input", why)
        if x.dtype.kind in "fc" and not (np.isfinite(x).all()
                                         and float(np.abs(x).max(initial=0)) <= INPUT_ABS_MAX):
            why = "input holds NaN, inf or values beyond +-%g" % INPUT_ABS_MAX
            self.out.reject("bad_input", identity, "a client's %s (answered error, bad_input)"
                            % why)
            return self._answer(client, "error", "bad_input", why)
        why = self._out_of_range(x)
        if why:
            self.out.reject("bad_input", identity, "a client's %s (answered error, bad_input)"
                            % why)
            return self._answer(client, "error", "bad_input", why)
        self._create_task(np.ascontiguousarray(x), -1, client=client)

    def _scaled(self, x: np.ndarray, dtype: str) -> np.ndarray:
        """A client's uint8 images ``x`` for a stage 1 taking float ``dtype`` on [0, 1] (the
        replay set's scale, ``ReplaySet.unit_scale``): scaled to [0, 1] as the replay set is
        (``as_input``), so the engine gets what the replay set gives it; said at INFO the first
        time in a run, never counted as a refusal. A model fed 0-255 floats gets no scaled
        input: its uint8 inputs are refused as a dtype it does not take."""
        if not self.scaling_said:
            self.scaling_said = True
            log.info("client inputs in uint8 are scaled to [0, 1] as %s for stage 1 (x / 255), "
                     "as the replay set is", dtype)
        return as_input(x, dtype)

    def _out_of_range(self, x: np.ndarray) -> str:
        """Why ``x``'s values are far outside the replay set's (the scale the engine takes);
        "" when they are not, or the set has no range to compare with."""
        lo, hi = self.replay.value_range
        if x.dtype.kind != "f" or not x.size:
            return ""
        x_lo, x_hi = float(x.min()), float(x.max())
        if not beyond_range((lo, hi), x_lo, x_hi, INPUT_RANGE_WIDTHS):
            return ""
        return ("input values in [%.4g, %.4g], far outside the [%.4g, %.4g] of the source's "
                "replay set: scale it as the model's inputs are%s"
                % (x_lo, x_hi, lo, hi, unscaled_hint(hi, x_lo, x_hi)))

    def on_client_refused(self, identity: bytes, task_id: Optional[str], why: str = "") -> None:
        """A client's task the wire check refused (a dtype it may not send, an oversized or
        malformed tensor): answered ``error`` / ``bad_input`` with ``why`` as its detail when
        it names its id, so the client need not wait out its timeout."""
        if task_id is not None:
            self._answer((identity, task_id), "error", "bad_input", why)

    def refusal(self) -> str:
        """Why a new task cannot be admitted now ("" when it can: ``source_refusal.refusal``)."""
        return source_refusal.refusal(self.out.current_view(), self.out.refused_why,
                                      self.out.held()[0], self.cfg.max_queue_tasks)

    def _create_task(self, x: np.ndarray, label: int, client=None,
                     row: Optional[int] = None) -> None:
        now, w = self.clock(), self.wall()
        self.arrived += 1  # offered load: counted before admission decides
        # the node's own refusal first: an admission policy counts the tasks it admits (MDI-Exit
        # spaces them by mu), and one rejected for another reason must not use up a place
        reason = "shutdown" if self.stopping else self.refusal()
        reason = reason or ("" if self.policy.admit(self.out.current_view(), now) else "admission")
        if reason:
            self.book.reject(w, now, reason)
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            self.out.metrics.refused(reason)
            if client is not None:
                self._answer(client, "rejected", reason, retry_s=self.retry_s(reason, now))
            return
        task = self.book.new(x, label, w, now)
        task.client = client
        task.row = row
        self.tokens[task.id] = secrets.token_hex(8)
        self._issue(task, now)

    def _issue(self, task: Pending, now: float) -> None:
        task.result_due = now + self.cfg.result_timeout_s
        fields = {"id": task.id, "source": self.cfg.node_id, "stage": 1, "attempt": task.attempt,
                  "created": task.created_wall, "hops": 0, "resends": task.resends,
                  "token": self.tokens[task.id]}
        item = OutItem(Kind.TASK, wire.task_key(task.id, task.attempt), fields, task.x,
                       expires=task.result_due)
        self.policy.on_issue(TaskInfo(task.id, 1, task.x.nbytes, x=task.x, attempt=task.attempt),
                             self.out.current_view())
        self.out.call_at(task.result_due, task.id)
        self.out.send(item, now)

    def retry_s(self, reason: str, now: float) -> Optional[float]:
        """How long a client whose input was rejected for ``reason`` should wait before it
        sends it again (the answer's ``retry_s``: ``source_refusal.retry_s``)."""
        return source_refusal.retry_s(self.out.view, reason, self.cfg.heartbeat_interval_s, now)

    def _answer(self, client, outcome: str, reason: str, detail: str = "",
                retry_s: Optional[float] = None) -> None:
        if client is not None:
            ident, cid = client
            self.answers.append((ident, wire.answer_fields(
                cid, self.cfg.node_id, outcome, reason, self.wall(), detail, retry_s)))

    def _lose(self, task_id: str, now: float, reason: str) -> None:
        task = self.book.pending.get(task_id)
        self.tokens.pop(task_id, None)
        self.book.lose(task_id, self.wall(), now, reason)
        if task is not None:
            self._answer(task.client, "lost", reason)

    def _release(self, task: Pending) -> None:
        """End the custody of ``task``'s latest issue, sent or held: it is neither sent again
        (a worker would run an answered task) nor counted in ``held`` (admission, drain)."""
        key = wire.task_key(task.id, task.attempt)
        self.out.cancel(key)
        self.out.take_back(lambda item: item.key == key)

    # -- results -----------------------------------------------------------------------------

    def on_timer(self, key: str, now: float) -> None:
        """Result deadline of task ``key``: re-issue it as a new attempt, or record it lost
        after ``max_attempts`` (reason ``no_route`` when no route is on then, else
        ``deadline``). A re-issue made while no route is on waits for one: a stage's only
        worker restarting looks, at the deadline, like one gone for good."""
        task = self.book.pending.get(key)
        if task is None or now < task.result_due:
            return
        self._release(task)
        if task.attempt + 1 >= self.cfg.max_attempts:
            return self._lose(key, now, "no_route" if self.out.current_view().no_route
                              else "deadline")
        task.attempt += 1
        task.resends += 1
        self.out.count("reissued")
        self._issue(task, now)

    def on_data(self, identity: bytes, msg: wire.Message) -> None:
        """A RESULT, or a RESULTS batch, of this source's tasks (anything else is dropped);
        each result is ACKed, checked and recorded on its own."""
        if msg.kind == Kind.RESULTS:
            for f in msg.fields["items"]:
                self._on_result(identity, f)
        elif msg.kind == Kind.RESULT:
            self._on_result(identity, msg.fields)
        else:
            self.out.reject("unexpected_kind", identity, "%s, not a result" % msg.kind.name)

    def _on_result(self, identity: bytes, f: Dict[str, Any]) -> None:
        self.out.ack(identity, ["R:" + wire.task_key(f["id"], f["attempt"])])
        if f["source"] != self.cfg.node_id:
            return self.out.reject("foreign_result", identity,
                                   "a result for source %r" % f["source"])
        token = self.tokens.get(f["id"])
        if token is None:
            return self.out.count("duplicate_result")  # answered already, or never ours
        if not secrets.compare_digest(token, f.get("token", "")):
            return self.out.reject("forged_result", identity,
                                   "task %r's result without its token" % f["id"])
        del self.tokens[f["id"]]
        task = self.book.complete(f, self.wall(), self.clock())
        if task is None:
            return self.out.count("duplicate_result")
        self._release(task)  # an earlier attempt's result may cross the latest issue
        if task.client is not None:
            ident, cid = task.client
            answer = {k: v for k, v in f.items() if k != "token"}  # the secret stays here
            self.answers.append((ident, dict(answer, id=cid, outcome="completed", reason="")))
