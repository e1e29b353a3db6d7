"""Status of a node: the stats dict, ``<state_dir>/stats.json`` and the status log line.

``NodeStatus`` reads the node's counters, its view, the policy and what its side adds (a
source's task counts and arrival rate, the latter on the status line of a client source,
whose rate is estimated); the loop calls ``write`` and ``log_line`` every
``status_interval_s`` and at the end. Both leave out what has not changed: stats.json is
replaced only when something in it but its time (``TIME_KEYS``) changed, or
``STATUS_REPEAT_S`` after the last write (so ``wall_time`` is never older than that on a
running agent), or when the file is gone. A link's measured rate
(``link_rate_bytes_s_<peer>``) is left out while that configured peer is gone: the estimate is
kept for its return, but a dead peer's link carries nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional

from agent.config.node import NodeConfig
from agent.node.clockstep import ClockStepWatch
from agent.ops.atomic import write_atomic
from agent.ops.files import WriteFaults
from agent.ops.state import STATS_FILE
from agent.policies.api import AgentPolicy, NodeView
from agent.policies.thresholds import thresholds_to_wire

log = logging.getLogger("agent.node.loop")  # these are the loop's steps: logged under its name

# An unchanged status line is logged again only after this long: an idle fleet would otherwise
# write the same line every status_interval_s for days (17,000 lines a day at 5 s) to the
# device's flash, and one line in ten minutes still shows the agent is there.
STATUS_REPEAT_S = 600.0
# keys of stats.json that change at every write by themselves: a file that differs from the
# last one written in these alone is not written again before STATUS_REPEAT_S (each
# replacement is a journal commit on ext4, every status_interval_s for ever on an idle device)
TIME_KEYS = ("wall_time",)
LINK_RATE_KEY = "link_rate_bytes_s_"  # + peer: its link's measured rate (linkclock.rate_measured)


class NodeStatus:
    """``stats()``, ``write()`` and ``line()`` of one node; ``extra()`` is its side's part."""

    def __init__(self, cfg: NodeConfig, policy: AgentPolicy, view: NodeView,
                 counters: Mapping[str, int], extra: Callable[[], Dict[str, Any]] = dict,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.policy = policy
        self.view = view
        self.counters = counters
        self.extra = extra
        self.wall = wall
        self.mono = mono  # when stats.json was last written (the repeat interval)
        self.faults = WriteFaults("stats " + os.path.join(cfg.state_dir, STATS_FILE))
        # a worker's power mode now ("" unknown); None: no power_mode key (a source)
        self.power_mode: Optional[Callable[[], str]] = None  # set by powerwatch.attach
        self._logged = ("", -math.inf)  # (the last status line logged, when)
        self._written = ("", -math.inf)  # (stats.json last written but TIME_KEYS, when)
        self.skipped = 0  # writes left out: nothing but the time had changed
        self._peers = frozenset(p.id for p in cfg.peers)
        self.clock_steps = ClockStepWatch()  # a stepped wall clock: one WARNING (clockstep)

    def stats(self) -> Dict[str, Any]:
        """Counters and state for stats.json and the status line."""
        out: Dict[str, Any] = {"node_id": self.cfg.node_id, "role": self.cfg.role,
                               "stage": self.cfg.stage, "policy": self.policy.name,
                               "counters": self._counters(),
                               "dropped": sum(v for k, v in self.counters.items()
                                              if k.startswith("drop_")),
                               "alive": sorted(self.view.alive), "routing": self.policy.routing(),
                               "thresholds": thresholds_to_wire(self.policy.thresholds()),
                               "capacity_flops": self.view.capacity_flops,
                               "emulated": {"capacity": self.cfg.emulate_capacity_flops > 0,
                                            "links": self.cfg.emulate_links},
                               "input_queue": self.view.input_queue,
                               "output_queue": self.view.output_queue,
                               "wall_time": self.wall()}
        if self.power_mode is not None:
            out["power_mode"] = self.power_mode()
        out.update(self.extra())
        return out

    def _counters(self) -> Dict[str, int]:
        """The node's counters, but the measured rates of links to peers now gone."""
        out = dict(self.counters)
        for peer in self._peers.difference(self.view.alive):
            out.pop(LINK_RATE_KEY + peer, None)
        return out

    def write(self, force: bool = False) -> bool:
        """Atomically replace ``<state_dir>/stats.json`` (no fsync: it only has to be whole
        when read); False when nothing was written: all but its ``TIME_KEYS`` equal the last
        file written, that was under ``STATUS_REPEAT_S`` ago and the file is still there, and
        not ``force`` (a stop may give it: the final counts, whatever the last write held)."""
        path = os.path.join(self.cfg.state_dir, STATS_FILE)
        stats = self.stats()
        body = json.dumps({k: v for k, v in stats.items() if k not in TIME_KEYS},
                          sort_keys=True)
        now = self.mono()
        last, at = self._written
        if not force and body == last and now - at < STATUS_REPEAT_S and os.path.isfile(path):
            self.skipped += 1
            return False
        try:
            write_atomic(path, json.dumps(stats, indent=1, sort_keys=True), durable=False)
        except OSError as exc:  # a full disk: counted, logged at most once a minute
            self.faults.failed(exc)
            return False  # tried again at the next call, changed or not
        self.faults.succeeded()
        self._written = (body, now)
        return True

    def line(self) -> str:
        """One status line for the log."""
        s = self.stats()
        parts = ["%s %s" % (self.cfg.role, self.cfg.node_id), "alive=%d" % len(s["alive"]),
                 "queue=%d/%d" % (s["input_queue"], s["output_queue"]), "dropped=%d" % s["dropped"]]
        if "tasks" in s:
            parts.append(" ".join("%s=%d" % kv for kv in s["tasks"].items()))
        if s.get("arrival_rate_measured"):  # a client source: the rate DTO-EE plans with
            parts.append("arrival_rate=%.1f/s" % s["arrival_rate_tasks_s"])
        own = s["thresholds"].get(str(self.cfg.stage))  # its changes are logged at DEBUG only
        if self.cfg.role == "worker" and own is not None:
            parts.append("threshold=%.3f" % own)
        return " ".join(parts)

    def log_line(self, now: float) -> bool:
        """Log the status line at INFO when it differs from the last one logged, or when that
        was ``STATUS_REPEAT_S`` ago (``now``: a monotonic clock); True when it was logged.
        A wall-clock step since the last call is said first (``ClockStepWatch``)."""
        self.clock_steps.check(self.mono(), self.wall())  # both read now, as a pair
        line = self.line()
        last, at = self._logged
        if line == last and now - at < STATUS_REPEAT_S:
            return False
        log.info("%s", line)
        self._logged = (line, now)
        return True
