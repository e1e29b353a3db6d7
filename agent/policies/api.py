"""Agent-side policy interface (``AgentPolicy``, which every policy extends; ``fixed``, the
trivial one, is ``agent.policies.fixed_agent.FixedWeightsPolicy``).

The node loop owns sockets, queues and clocks; a policy object owns only decisions. Everything
the policy may read is in a ``NodeView`` the loop keeps up to date; everything it wants to say
to neighbours it returns as ``Outgoing`` control messages, which the loop publishes. So a policy
never touches a socket and its equations stay in ``agent/policies`` (pure, shared with the
simulator and ``plan``).

Interface (``AgentPolicy``), called from the I/O loop only:

- ``thresholds() -> {stage: c}``: exit threshold per early-exit stage, used for every task.
- ``choose_successor(task, view, exclude) -> peer id | None``: where a task goes next (called
  per task; ``exclude`` lists successors already tried for it). None = keep it and ask again.
- ``keep_local(task, view) -> bool``: on a worker holding several stages, whether the task's
  next stage runs here instead of being offloaded.
- ``reclaim(view) -> bool``: workers only, when a task is held for a stage the node serves
  too: run the oldest such held task here instead (idle reclaim).
- ``configuring``: True while a configuration phase runs (the node defers its state save).
- ``admit(view, now) -> bool``: sources only, before creating a task (admission control);
  ``interarrival_s(view, now)`` may override the Poisson mean gap (rate adaptation).
- ``on_control(msg, view, now) -> [Outgoing]``: a control message from a neighbour
  (``wire.Message``: DTO-EE request/status, threshold proposals, heartbeats / queue state).
- ``on_tick(view, now) -> [Outgoing]``: called every ``tick_interval_s`` (rounds, slot clock).
- ``next_tick_s(now) -> float``: time until the next tick (default ``tick_interval_s``).
- ``on_peers_changed(view)``: a neighbour came or went (``view.alive`` changed).
- ``on_transfer(dest, seconds, payload_bytes)``: a TASK handed to successor ``dest`` was
  ACKed; ``seconds`` is its measured transfer delay (from the moment the link starts carrying
  it to its ACK), ``payload_bytes`` the tensor size (``TaskInfo.nbytes``). Default: ignored.
- ``snapshot() -> dict`` / ``restore(dict)``: state saved each slot and restored at start-up.
- ``routing() -> {peer: p}``: current routing row, for metrics and stats.
- ``on_head(head, view) -> HeadAction``: workers, after a stage with an exit head ran on a
  task: ANSWER (a RESULT now, optionally with another ``cls``/``confidence`` and extra RESULT
  fields), CONTINUE (the next stage, here or on a successor) or ESCALATE (the task's raw input
  goes again, as a stage-1 TASK with extra fields, to ``choose_successor``'s pick). The base
  rule is the threshold rule every policy had before the hook: ANSWER at the node's last head
  (the final stage, or ``last_stage`` of a ``terminal`` worker) or when ``should_exit(conf,
  thresholds()[stage])``, else CONTINUE; the node calls the hook only for a policy that
  overrides it (DIMEE's tiers use the base rule, MLCI overrides it).
- ``on_issue(task, view)``: sources, before each issue of a task is routed: ``task.x`` is its
  raw input, ``task.attempt`` the issue (0 = a new task), so a policy can decide per task from
  the input (DIMEE's embedding) and update its state once per task.

A queue-based policy such as MDI-Exit fits the same shape: ``choose_successor`` reads the
queues and the neighbours' queue state (``view.peer_state``), returns None to keep a task
queued; ``admit``/``interarrival_s``/``thresholds`` carry admission and threshold adaptation.
Which class serves which ``policy`` name is ``agent.policies.registry``'s table. ``count(name)``
adds to the node's counters (stats.json).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from agent.protocol.wire import Kind, Message
from agent.policies.setting import DEFAULT_TRADEOFF
from agent.policies.thresholds import DEFAULT_THRESHOLD, thresholds_from_wire, thresholds_to_wire
from engines.exit_profile import should_exit


@dataclass
class Outgoing:
    """A control message a policy wants published: topic ``dest`` (node id or wire.BROADCAST)."""

    kind: Kind
    dest: str
    fields: Dict[str, Any]
    slot: int = 0
    round: int = 0


@dataclass
class NodeView:
    """What a policy may read about its node and neighbours; kept current by the node loop."""

    node_id: str
    role: str  # "source" | "worker"
    stage: int  # 0 for a source
    num_stages: int
    stage_flops: Tuple[float, ...]  # alpha_h for h = 1..H (index h-1)
    stage_input_bytes: Tuple[float, ...]  # beta_h for h = 1..H
    exit_stages: Tuple[int, ...]  # early-exit stages (1-based)
    successors: Tuple[str, ...]  # configured next-stage peers, in config order
    predecessors: Tuple[str, ...]  # configured previous-stage peers
    link_rate_bytes_s: Dict[str, float]  # r to each peer (0 = unknown)
    capacity_flops: float = 0.0  # own mu (workers)
    arrival_rate_tasks_s: float = 0.0  # own phi: measured (workers), estimated (client
    # sources: agent.node.arrivalrate) or configured (Poisson sources)
    input_queue: int = 0  # tasks waiting for / in the engine
    output_queue: int = 0  # O_n: tasks waiting to leave (held, or queued on an emulated link)
    service_time_s: float = 0.0  # own per-task compute time (Gamma)
    alive: Set[str] = field(default_factory=set)  # neighbours heard from recently
    peer_state: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # last heartbeat fields
    exit_profile: Any = None  # engines.exit_profile.ExitProfile of the bundle, when present
    tradeoff: float = DEFAULT_TRADEOFF  # a in U
    last_stage: int = 0  # last stage this node serves (> stage when it holds several)
    peer_stages: Dict[str, Tuple[int, int]] = field(default_factory=dict)  # (first, last) per peer
    # successors that refused a task (queue full) or have no route on: peer -> monotonic time
    # until which they take nothing (the node loop keeps it current)
    unavailable: Dict[str, float] = field(default_factory=dict)
    no_route: int = 0  # first stage this node has no live route to (0: every stage reachable)
    terminal: bool = False  # a worker answering every task at its last_stage (a tier)
    answers_alone: bool = False  # its policy answers what no later stage can take (MLCI level)
    # successors not heard from yet, within their silence limit of the node's start (the loop's)
    joining: Set[str] = field(default_factory=set)  # a task drawn for one waits for it

    def serves(self, stage: int) -> bool:
        """True when this node itself can run ``stage``."""
        return self.stage > 0 and self.stage <= stage <= max(self.stage, self.last_stage)

    def alive_successors(self, stage: Optional[int] = None, usable: bool = True) -> List[str]:
        """Alive successors; with ``stage``, only those that serve that stage. ``usable``
        leaves out those that take no task now: refusing (``unavailable``) or reporting that
        they have no route themselves (their heartbeat's ``no_route``)."""
        out = [s for s in self.successors if s in self.alive]
        if usable:
            out = [s for s in out if s not in self.unavailable
                   and not self.peer_state.get(s, {}).get("no_route")]
        return self._of_stage(out, stage)

    def joining_successors(self, stage: Optional[int] = None,
                           exclude: Sequence[str] = ()) -> List[str]:
        """Successors still ``joining`` and not in ``exclude``; with ``stage``, only those that
        serve that stage (none at once once every successor was heard: the per-task case)."""
        if not self.joining:
            return []
        return self._of_stage([s for s in self.successors
                               if s in self.joining and s not in exclude], stage)

    def _of_stage(self, peers: List[str], stage: Optional[int]) -> List[str]:
        if stage is not None and self.peer_stages:
            peers = [s for s in peers if s in self.peer_stages
                     and self.peer_stages[s][0] <= stage <= self.peer_stages[s][1]]
        return peers


def bounded_weights(weights: Sequence[float]) -> List[float]:
    """Weights to sample or normalise by: negative and NaN ones count 0; when they sum past
    the float range (a peer's capacity of 1e308) they are scaled by the largest, or the
    infinite ones alone count (``random.choices`` refuses an infinite total, and w / inf
    is 0 for every w)."""
    out = [max(0.0, float(x)) for x in weights]  # max(0.0, nan) is 0.0
    if not sum(out) < math.inf:
        top = max(out)
        out = [float(x == top) for x in out] if top == math.inf else [x / top for x in out]
    return out


def first_unreachable_stage(view: NodeView) -> int:
    """The first stage ``view``'s node cannot get a task to (0: a route to every stage).

    The stage after the last one this node serves needs an alive successor serving it that
    has a route on itself (no ``no_route`` in its heartbeat); a busy successor still counts.
    """
    nxt = (view.last_stage or view.stage) + 1 if view.stage > 0 else 1
    if nxt > view.num_stages or view.terminal or view.answers_alone:  # none it must send on
        return 0
    alive = view.alive_successors(nxt, usable=False)
    if not alive:
        return nxt
    onward = [int(view.peer_state.get(s, {}).get("no_route", 0) or 0) for s in alive]
    return 0 if 0 in onward else min(onward)


def first_group(groups: Sequence[Sequence[str]], alive: Sequence[str],
                exclude: Sequence[str] = ()) -> Tuple[int, List[str]]:
    """(index, members) of the first group of peer ids with an alive member not in ``exclude``;
    when every such member was tried, the first group with any alive member; (-1, []) when
    none is alive. Tiered policies (DIMEE's tiers, MLCI's levels) route with it."""
    for pass_exclude in (exclude, ()):
        for i, ids in enumerate(groups):
            cands = [s for s in alive if s in ids and s not in pass_exclude]
            if cands:
                return i, cands
    return -1, []


@dataclass
class TaskInfo:
    """What a policy learns about one task when routing it."""

    id: str
    stage: int  # stage the task needs next
    nbytes: int  # payload size
    x: Any = None  # the raw input (numpy array), given to ``on_issue`` at the source
    attempt: int = 0  # the source's issue of the task (0 = new), given to ``on_issue``


ANSWER, CONTINUE, ESCALATE = "answer", "continue", "escalate"  # HeadAction kinds


@dataclass
class HeadInfo:
    """What a worker tells ``on_head`` after a stage with an exit head ran on a task."""

    id: str
    attempt: int
    stage: int  # the stage that just ran
    confidence: float  # the head's max softmax
    cls: int  # the head's argmax
    logits: Any  # (C,) float32 head output when the policy ``wants_logits``, else None
    fields: Mapping[str, Any]  # the TASK's header fields (optional ones included)
    local: Dict[str, Any]  # per-task state kept on this node while the task is here; never sent
    last: bool  # this node's last head for the task: it is answered whatever the hook says,
    # unless the hook escalates


@dataclass
class HeadAction:
    """``on_head``'s answer: ``kind`` ANSWER / CONTINUE / ESCALATE; for ANSWER an optional
    ``cls``/``confidence`` replacing the head's and ``fields`` added to the RESULT; for
    ESCALATE ``fields`` added to the stage-1 TASK (optional wire fields only), and optionally
    the ``cls``/``confidence`` this node would answer if it kept the task (``answer_kept``)."""

    kind: str = ANSWER
    cls: Optional[int] = None
    confidence: Optional[float] = None
    fields: Dict[str, Any] = field(default_factory=dict)


_CONTINUE = HeadAction(CONTINUE)
_ANSWER = HeadAction(ANSWER)


def routing_seed(seed: int, node_id: str) -> int:
    """The seed of node ``node_id``'s routing draws (``AgentPolicy.rng``) from its config's
    ``seed``: the two mixed, so that nodes with the same ``seed`` (the default 0 on every
    worker) draw different streams; with one stream, every node's early draws lean the same
    way and a run's routing is off its rows alike on all nodes, in every run. Stable across
    processes and Python versions (sha256, not ``hash``)."""
    digest = hashlib.sha256(("%d:routing:%s" % (seed, node_id)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


class AgentPolicy:
    """Base class: uniform routing over alive successors, fixed thresholds, no messages."""

    name = "base"
    tick_interval_s = 0.5
    # True while a configuration phase runs (DTO-EE's rounds): the node then puts off its
    # per-slot state save, which would stall every neighbour waiting on this node's answers
    configuring = False
    wants_logits = False  # True: workers keep each head's logits for ``on_head`` (HeadInfo)
    tunes_thresholds = False  # True: saved thresholds are its own (else an earlier config's)

    def __init__(self, thresholds: Mapping[int, float], knobs: Mapping[str, Any], seed: int = 0):
        self._thresholds = dict(thresholds)
        self.knobs = dict(knobs)
        self.rng = random.Random(seed)
        # the node hands its own wall clock (slots align across nodes) and counters (stats.json)
        self.wall: Callable[[], float] = time.time
        self.count: Callable[[str], None] = lambda name: None

    def configure(self, cfg: Any, view: NodeView) -> None:
        """Called once at start-up with the node config (slot length, rounds, ...)."""

    def thresholds(self) -> Dict[int, float]:
        """Exit threshold per early-exit stage, ``{stage: c}``."""
        return dict(self._thresholds)

    def weights(self, view: NodeView) -> Dict[str, float]:
        """Routing row over configured successors (need not be normalised)."""
        return {s: 1.0 for s in view.successors}

    def routing(self) -> Dict[str, float]:
        """Current routing row ``{peer: p}`` for metrics and stats ({} = none to report)."""
        return {}

    def choose_successor(self, task: TaskInfo, view: NodeView,
                         exclude: Sequence[str] = ()) -> Optional[str]:
        """Where ``task`` goes next: sampled by ``weights`` over alive successors not tried;
        None (the task waits) when the draw falls on a successor still ``joining``."""
        alive = view.alive_successors(task.stage)
        if not alive:
            return None
        cands = [s for s in alive if s not in exclude] or alive
        # Start-up: a successor not heard from yet keeps its routing share; a task drawn for it
        # (a draw of its own, the same at every offer) waits for its first heartbeat. Sent on,
        # a source's first tasks crossed a link its routing avoids (80% load: seconds of queue).
        late = view.joining_successors(task.stage, exclude)
        w = self.weights(view)
        ws = bounded_weights([w.get(s, 0.0) for s in cands + late])
        if late:
            total, ws = sum(ws), ws[:len(cands)]
            draw = zlib.crc32(task.id.encode()) / 2.0 ** 32  # the task's own, in [0, 1)
            if total > sum(ws) and draw * total >= sum(ws):  # drawn for a joining successor
                return None
        if sum(ws) <= 0:  # routing mass only on gone/excluded peers: spread over the rest
            ws = [1.0] * len(cands)
        return self.rng.choices(cands, weights=ws)[0]

    def keep_local(self, task: TaskInfo, view: NodeView) -> bool:
        """A worker holding the task's next stage itself: run it here (True) or offload it.
        Called only when ``view.serves(task.stage)``; the default keeps it (one device running
        consecutive stages, no transfer). Queue-based policies decide by queue lengths."""
        return True

    def reclaim(self, view: NodeView) -> bool:
        """Workers: take the oldest task held in the output queue for a stage this node serves
        back into its own engine (idle reclaim). Asked after a task was held and after every
        tick, with that task counted in ``view.output_queue``; the default never does."""
        return False

    def admit(self, view: NodeView, now: float) -> bool:
        """Sources: whether to create the next task (admission control)."""
        return True

    def interarrival_s(self, view: NodeView, now: float) -> Optional[float]:
        """Sources: a mean gap overriding the configured rate; None keeps it."""
        return None

    def on_control(self, msg: Message, view: NodeView, now: float) -> List[Outgoing]:
        """A neighbour's control message; returns the messages to publish."""
        return []

    def on_tick(self, view: NodeView, now: float) -> List[Outgoing]:
        """Called every ``tick_interval_s``; returns the messages to publish."""
        return []

    def next_tick_s(self, now: float) -> float:
        """Seconds from ``now`` to the next ``on_tick`` this policy needs: ``tick_interval_s``,
        or longer while it has nothing to do (fewer wake-ups of an idle device). Asked after
        every tick and every pass of the node's loop, so a message that starts work can bring
        the next tick forward; while tasks wait to be re-offered the node ticks every
        ``tick_interval_s`` anyway."""
        return self.tick_interval_s

    def on_peers_changed(self, view: NodeView) -> None:
        """A neighbour came or went (``view.alive`` changed)."""

    def on_transfer(self, dest: str, seconds: float, payload_bytes: int) -> None:
        """A task sent to ``dest`` was ACKed ``seconds`` after its link transfer began."""

    def on_head(self, head: HeadInfo, view: NodeView) -> HeadAction:
        """Workers: what happens to a task after a stage with a head (module docstring); the
        base rule is the threshold rule (``should_exit``), the last head answers."""
        th = self.thresholds().get(head.stage)
        if head.last or (th is not None and should_exit(head.confidence, th)):
            return _ANSWER
        return _CONTINUE

    def answer_kept(self, escalated: HeadAction) -> Optional[HeadAction]:
        """Workers of a tier: the ANSWER, at this node, of a task it escalated (``escalated``,
        from ``on_head``) that no higher tier can take any more (every one went while the TASK
        was in the outbox); None: the escalation waits in the outbox, as a forwarded task does."""
        return None

    def on_issue(self, task: TaskInfo, view: NodeView) -> None:
        """Sources: each issue of a task, with its raw input ``task.x``, before it is routed."""

    def snapshot(self) -> Dict[str, Any]:
        """State saved each slot (JSON-able; thresholds with text keys)."""
        return {"policy": self.name, "thresholds": thresholds_to_wire(self._thresholds)}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back a ``snapshot``; invalid entries are ignored. Thresholds only when the policy
        tunes them: a fixed policy's saved ones are an earlier config's, which its config overrides."""
        th = thresholds_from_wire(state.get("thresholds")) if self.tunes_thresholds else {}
        self._thresholds.update({h: c for h, c in th.items() if h in self._thresholds})


class TieredPolicy(AgentPolicy):
    """Base of policies that route a task to a group of workers (DIMEE's tiers, MLCI's levels):
    ``pick`` takes the first group in the given order with an alive member (``first_group``).

    A node starts serving before it has heard every neighbour: a task whose own group (or one
    before the group it would take) has a member not heard from yet (``view.joining``, for its
    silence limit from the node's start) waits for it instead of going to the next group.
    """

    def pick(self, groups: Sequence[Sequence[str]], view: NodeView, stage: int,
             exclude: Sequence[str] = ()) -> Tuple[int, Optional[str]]:
        """(index of the group, peer) for a task of ``stage``: a uniform pick in the first
        group with an alive member; (-1, None) to keep the task waiting."""
        i, cands = first_group(groups, view.alive_successors(stage), exclude)
        if not cands or (i > 0 and view.joining and first_group(
                groups[:i], view.joining_successors(stage), exclude)[1]):
            return -1, None
        return i, self.rng.choice(cands)


def default_thresholds(exit_stages: Sequence[int], configured: Sequence[float]) -> Dict[int, float]:
    """Threshold per early-exit stage: ``configured[h-1]`` when given, else DEFAULT_THRESHOLD."""
    out = {}
    for h in exit_stages:
        out[h] = float(configured[h - 1]) if len(configured) >= h else DEFAULT_THRESHOLD
    return out
