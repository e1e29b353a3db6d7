"""Carrying out a fault schedule (``agent.testbed.faults``) during one rate's load.

``fault_commands`` is pure: the ip/tc commands that begin and end a network fault on a netns
plan. ``FaultRunner`` is polled by the testbed's wait loop: it begins and ends each fault on
time (signals for process faults, the commands for network ones), marks the agents it takes
down as injected so their death is no failure, and on ``finish`` undoes whatever is still in
effect (network restored, stopped workers continued, killed workers started again) so the
next rate starts from a whole topology. ``log`` says what was done and when (monotonic
seconds, the clock of the sources' records); ``ended`` keeps the counters of the worker
processes it ended (``agent.testbed.counters``), which the per-rate columns add in.
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from agent.errors import UsageError

from agent.testbed import shaping
from agent.testbed.counters import keep_ended
from agent.testbed.faults import EVERY_LINK, Fault
from agent.testbed.netns import DEV, NetPlan
from agent.testbed.phases import fault_phases, for_good, target_resumed
from agent.testbed.report import read_records, warmup_end
from agent.testbed.topology import TopologyError

Cmd = List[str]
FAULT_PREF = 10  # tc filter preference of fault i: FAULT_PREF + i (before the shaping filters)


def fault_commands(fault: Fault, index: int, plan: NetPlan) -> Tuple[List[Cmd], List[Cmd]]:
    """(begin, end) commands of network fault number ``index`` on the plan's network."""
    pref = FAULT_PREF + index
    hub = plan.hub
    if fault.link is not None:
        a, b = fault.link
        da, db = plan.device_of(a), plan.device_of(b)
        if da.index == db.index:
            raise TopologyError("faults: %s: %s and %s share device %r (its loopback cannot be "
                                "shaped)" % (fault.target, a, b, da.name))
        if fault.kind == "link-down":
            return ([shaping.drop_filter(da.ns, DEV, pref, db.address),
                     shaping.drop_filter(db.ns, DEV, pref, da.address)],
                    [shaping.delete_filter(da.ns, DEV, pref),
                     shaping.delete_filter(db.ns, DEV, pref)])
        if fault.kind == "blackhole":
            return ([shaping.drop_filter(da.ns, DEV, pref, db.address)],
                    [shaping.delete_filter(da.ns, DEV, pref)])
        if fault.kind == "loss":
            return ([shaping.loss_filter(da.ns, DEV, pref, fault.loss, db.address)],
                    [shaping.delete_filter(da.ns, DEV, pref)])
        if fault.kind == "rate":
            shaped = plan.link(a, b)
            minor = 10 + db.index
            if shaped is None:  # an unshaped link gets a class for the fault's time
                return (shaping.link_commands(da.ns, DEV, minor, db.address, fault.rate_bytes_s),
                        [shaping.delete_filter(da.ns, DEV, shaping.LINK_PREF + minor)])
            return (shaping.class_commands(da.ns, DEV, minor, fault.rate_bytes_s, change=True),
                    shaping.class_commands(da.ns, DEV, minor, shaped.rate_bytes_s, change=True))
    if fault.target == EVERY_LINK:  # loss on every link: every device's sending side
        return ([shaping.loss_filter(d.ns, DEV, pref, fault.loss) for d in plan.devices],
                [shaping.delete_filter(d.ns, DEV, pref) for d in plan.devices])
    d = plan.device_of(fault.target)
    if fault.kind == "link-down":
        return ([["ip", "-n", d.ns, "link", "set", DEV, "down"],
                 ["ip", "-n", hub, "link", "set", d.hub_dev, "down"]],
                [["ip", "-n", hub, "link", "set", d.hub_dev, "up"],
                 ["ip", "-n", d.ns, "link", "set", DEV, "up"],
                 ["ip", "-n", d.ns, "route", "replace", "default", "via", d.gateway]])
    if fault.kind == "blackhole":
        return ([shaping.drop_filter(d.ns, DEV, pref), shaping.drop_filter(hub, d.hub_dev, pref)],
                [shaping.delete_filter(d.ns, DEV, pref),
                 shaping.delete_filter(hub, d.hub_dev, pref)])
    if fault.kind == "loss":
        return ([shaping.loss_filter(d.ns, DEV, pref, fault.loss),
                 shaping.loss_filter(hub, d.hub_dev, pref, fault.loss)],
                [shaping.delete_filter(d.ns, DEV, pref),
                 shaping.delete_filter(hub, d.hub_dev, pref)])
    raise TopologyError("faults: %s cannot target node %r" % (fault.kind, fault.target))


class FaultRunner:
    """Begins and ends the faults of a schedule as the testbed polls it."""

    def __init__(self, faults: Sequence[Fault], agents, network=None, clock=time.monotonic):
        self.faults = list(faults)
        self.agents = agents  # agent.testbed.procs.LocalAgents
        self.network = network  # agent.testbed.netns.Network (None on loopback)
        self.clock = clock
        self.t0: Optional[float] = None
        self.started_at: Optional[float] = None  # the last start (kept after finish)
        self._ready_s = 0.0  # while finishing: how long a restarted worker may take
        self.state: Dict[int, str] = {}  # index -> "on" | "off"
        self.log: List[dict] = []
        # worker -> the summed last stats of its processes the faults ended (over every rate)
        self.ended: Dict[str, dict] = {}
        self._cmds = {i: fault_commands(f, i, network.plan)
                      for i, f in enumerate(self.faults)
                      if network is not None and f.kind not in ("kill", "stop", "restart")}

    def start(self, t0: Optional[float] = None) -> None:
        """Count ``at`` from now (or ``t0``, a monotonic time)."""
        self.t0 = self.clock() if t0 is None else t0
        self.started_at = self.t0
        self.state = {}
        self.log = []

    def poll(self) -> None:
        """Begin the faults that are due and end those whose time is over."""
        if self.t0 is None:
            return
        now = self.clock() - self.t0
        for i, f in enumerate(self.faults):
            if i not in self.state and now >= f.at_s:
                self._begin(i, f)
            elif self.state.get(i) == "on" and f.duration_s > 0 and now >= f.end_s:
                self._end(i, f)

    def finish(self, agents_ready_s: float = 90.0) -> None:
        """End every fault still in effect (the next rate starts whole); workers killed for
        good start again and get ``agents_ready_s`` to report ready (0: not waited for)."""
        self._ready_s = agents_ready_s
        try:
            for i, f in enumerate(self.faults):
                if self.state.get(i) == "on":
                    self._end(i, f)
        finally:
            self._ready_s = 0.0
            self.t0 = None

    def windows(self, for_good_end: Optional[float] = None) -> List[Tuple[float, float]]:
        """(began, ended) monotonic times of each fault that began (ended: when it was undone).
        A kill for good is logged as ended when it began (down from then on); with
        ``for_good_end`` its window lasts until then instead."""
        out = []
        for e in self.log:
            end = e.get("ended_mono", e["began_mono"])
            if for_good_end is not None and for_good(e):
                end = max(e["began_mono"], for_good_end)
            out.append((e["began_mono"], end))
        return out

    def _entry(self, i: int) -> dict:
        for e in self.log:
            if e["index"] == i:
                return e
        raise KeyError(i)

    def _begin(self, i: int, f: Fault) -> None:
        self.state[i] = "on"
        self.log.append({"index": i, "fault": f.label(), "kind": f.kind, "target": f.target,
                         "began_mono": self.clock(), "began_wall": round(time.time(), 3)})
        proc = self.agents.procs.get(f.target) if f.kind in ("kill", "restart") else None
        if f.kind == "kill":
            self.agents.injected.add(f.target)
            self.agents.kill(f.target)
            self._keep_stats(f.target, proc)
            if not f.duration_s > 0:
                self.log[-1]["for_good"] = True  # its phases last until the load's end
                self._ended(i)  # down for good: counts from now
        elif f.kind == "stop":
            os.kill(self.agents.procs[f.target].pid, signal.SIGSTOP)
        elif f.kind == "restart":
            self.agents.injected.add(f.target)
            self.agents.stop([f.target])
            self._keep_stats(f.target, proc)
            self.agents.launch([f.target])
            self.agents.injected.discard(f.target)
            self.state[i] = "off"
            self._ended(i)
        else:
            self.network.run(self._cmds[i][0])

    def _keep_stats(self, worker: str, proc) -> None:
        """Keep the counters of ``worker``'s process ``proc``, gone now (``keep_ended``), so
        those of the process started after it add to them."""
        if proc is not None:
            keep_ended(self.ended, worker, self.agents.configs[worker].state_dir, proc.pid)

    def _end(self, i: int, f: Fault) -> None:
        self.state[i] = "off"
        if f.kind == "kill":
            if self._ready_s > 0:
                self.agents.start([f.target], self._ready_s)
            else:
                self.agents.launch([f.target])
            self.agents.injected.discard(f.target)
        elif f.kind == "stop":
            os.kill(self.agents.procs[f.target].pid, signal.SIGCONT)
        elif f.kind != "restart":
            self.network.run(self._cmds[i][1])
        self._ended(i)

    def _ended(self, i: int) -> None:
        """Record when fault ``i`` ended (the first time only): monotonic for its phases,
        wall-clock to line up with the agents' logs; every kind that ends gets both."""
        e = self._entry(i)
        e.setdefault("ended_mono", self.clock())
        e.setdefault("ended_wall", round(time.time(), 3))


def add_fault_phases(result, runner: FaultRunner, records: Mapping[str, str],
                     warmup_s: float) -> None:
    """Fill a rate's ``RunResult`` with its faults, delay per phase and recovery time."""
    if not runner.log or runner.started_at is None:
        return
    recs: List[dict] = []
    for path in records.values():
        try:
            recs += read_records(path)
        except UsageError:
            continue
    t0 = runner.started_at
    # a kill for good: its worker is down for every task created after it, to the load's end
    # (it starts again only once the rate's tasks have drained, in ``finish``)
    end = warmup_end(recs, warmup_s)  # the summary's warm-up, so their counts agree
    result.phases, result.recovery_s = fault_phases(recs, runner.windows(math.inf),
                                                    t0 + warmup_s if end is None else end)
    result.faults = relative_log(runner.log, t0)
    for d, e in zip(result.faults, runner.log):  # a worker's (or a link's receiver's) return
        worker = str(e.get("target", "")).split("->")[-1]
        if "ended_mono" in e and worker != "*":
            d["target_resumed_s"] = target_resumed(recs, worker, e["ended_mono"])


def relative_log(log: Sequence[dict], t0: float) -> List[dict]:
    """The runner's log with times in seconds after ``t0`` (for results.json)."""
    out = []
    for e in log:
        d = {k: v for k, v in e.items() if not k.endswith("_mono")}
        d["began_s"] = round(e["began_mono"] - t0, 3)
        if "ended_mono" in e:
            d["ended_s"] = round(e["ended_mono"] - t0, 3)
        out.append(d)
    return out
