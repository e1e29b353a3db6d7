"""Fault schedules of a testbed topology (``faults``): what breaks, when, for how long.

Each entry: ``{"at": S, "duration": S, "kind": K, "target": T}`` plus ``loss`` (kind loss)
or ``rate_bytes_s`` (kind rate). ``at`` counts from the start of each rate's load (the
sources' first arrivals); every rate of every policy gets the same schedule.

Kinds (process faults work in both network modes, the others need ``--network netns``):

- ``kill``: SIGKILL the worker (a power cut); with a ``duration`` > 0 it starts again then.
- ``stop``: SIGSTOP the worker for ``duration`` (a hung device), then SIGCONT.
- ``restart``: SIGTERM the worker and start it again at once (a service restart).
- ``link-down``: a node target's interface goes down for ``duration``; a link target
  ``"a->b"`` loses every packet both ways.
- ``blackhole``: packets are silently dropped for ``duration``: everything a node target sends
  and receives, or what ``a`` sends to ``b`` for a link target.
- ``loss``: a random fraction ``loss`` of the packets is dropped: on every link (target
  ``"*"``), a node's (what it sends and receives) or one direction of a link.
- ``rate``: the link ``"a->b"`` runs at ``rate_bytes_s`` for ``duration``.

Parsing is pure (``parse_faults``); ``agent.testbed.inject`` carries the schedule out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

PROCESS_KINDS = ("kill", "stop", "restart")
NETWORK_KINDS = ("link-down", "blackhole", "loss", "rate")
KINDS = PROCESS_KINDS + NETWORK_KINDS
FAULT_KEYS = ("at", "duration", "kind", "target", "loss", "rate_bytes_s", "comment")
EVERY_LINK = "*"


@dataclass(frozen=True)
class Fault:
    """One scheduled fault."""

    at_s: float  # seconds after the start of a rate's load
    duration_s: float  # how long it lasts (kill: until the restart; 0 = for good)
    kind: str  # one of KINDS
    target: str  # a node id, "a->b" (a link) or "*" (every link)
    loss: float = 0.0  # kind loss: fraction of packets dropped
    rate_bytes_s: Optional[float] = None  # kind rate: the link's rate meanwhile

    @property
    def end_s(self) -> float:
        return self.at_s + self.duration_s

    @property
    def link(self) -> Optional[Tuple[str, str]]:
        """(a, b) for a link target "a->b"; None for a node or every link."""
        if "->" not in self.target:
            return None
        a, b = self.target.split("->", 1)
        return a.strip(), b.strip()

    def label(self) -> str:
        extra = (" %g" % self.loss if self.kind == "loss" else
                 " %g B/s" % self.rate_bytes_s if self.kind == "rate" else "")
        return "%s%s %s at %gs for %gs" % (self.kind, extra, self.target, self.at_s,
                                           self.duration_s)


def parse_faults(top, workers: Sequence[str], nodes: Sequence[str],
                 links: Sequence[Tuple[str, str]]) -> List[Fault]:
    """The ``faults`` list of a topology (``top``: its ``Fields`` reader), checked against its
    workers, nodes and links."""
    out = []
    for f in top.tables("faults", [], known=FAULT_KEYS):
        kind = f.str("kind", choices=KINDS)
        at = f.num("at", lo=0.0)
        dur = f.num("duration", 0.0, lo=0.0)
        target = f.value("target", None)
        if not isinstance(target, str) or not target:
            raise f.fail("target", "must be a node id, \"a->b\" or \"*\"")
        fault = Fault(at, dur, kind, target)
        if kind in PROCESS_KINDS:
            if target not in workers:
                raise f.fail("target", "%s needs a worker id (a source's death ends its "
                                       "records)" % kind)
        elif fault.link is not None:
            if fault.link not in links:
                raise f.fail("target", "no link in the topology")
        elif target == EVERY_LINK:
            if kind != "loss":
                raise f.fail("target", "\"*\" (every link) is for kind loss only")
        elif target not in nodes:
            raise f.fail("target", "unknown node")
        if kind in ("stop", "link-down", "blackhole", "loss", "rate") and not dur > 0:
            raise f.fail("duration", "%s needs a duration > 0 seconds" % kind)
        if kind == "loss":
            fault = Fault(at, dur, kind, target, loss=f.num("loss", lo=0.0, lo_open=True,
                                                            hi=1.0, hi_open=True))
        elif kind == "rate":
            if fault.link is None:
                raise f.fail("target", "rate needs a link \"a->b\"")
            fault = Fault(at, dur, kind, target,
                          rate_bytes_s=f.num("rate_bytes_s", lo=0.0, lo_open=True))
        out.append(fault)
    return out


def loopback_problem(faults: Sequence[Fault]) -> Optional[str]:
    """Why a fault schedule cannot run on loopback (None: only process faults)."""
    net = [f for f in faults if f.kind in NETWORK_KINDS]
    if not net:
        return None
    return ("faults: %s needs --network netns (on loopback only kill, stop and restart can "
            "be injected)" % net[0].kind)


def check_faults(faults: Sequence[Fault], network: str, warmup_s: float,
                 duration_s: float) -> None:
    """Raise ``UsageError`` for a schedule that cannot run as given: a network fault on
    loopback, a fault due once the load is over (the sources have stopped, the run drains
    and the fault would silently never happen), or one still on when the load ends (it would
    be cut short whenever the drain finishes, and no task would be created after it to show
    the recovery). A ``kill`` without a duration (down for good) and a ``restart`` (over at
    once) have no end to check."""
    from agent.errors import UsageError

    problem = loopback_problem(faults) if network == "loopback" else None
    if problem:
        raise UsageError(problem)
    load_s = warmup_s + duration_s
    late = [f for f in faults if f.at_s >= load_s]
    if late:
        raise UsageError("faults: %s starts after the load ends, at %g s (warm-up %g s + "
                         "--duration %g s)" % (late[0].label(), load_s, warmup_s, duration_s))
    over = [f for f in faults if f.kind != "restart" and f.duration_s > 0 and f.end_s > load_s]
    if over:
        raise UsageError("faults: %s is still on when the load ends, at %g s (warm-up %g s + "
                         "--duration %g s): give it a duration of at most %g s, or a longer "
                         "--duration" % (over[0].label(), load_s, warmup_s, duration_s,
                                         load_s - over[0].at_s))
