"""Status of a node: the stats dict, ``<state_dir>/stats.json`` and the status log line.

``NodeStatus`` reads the node's counters, its view, the policy and what its side adds (a
source's task counts); the loop calls ``write`` and ``log_line`` every ``status_interval_s``
and at the end.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional

from agent.config.node import NodeConfig
from agent.ops.atomic import write_atomic
from agent.ops.files import WriteFaults
from agent.policies.api import AgentPolicy, NodeView
from agent.policies.thresholds import thresholds_to_wire

log = logging.getLogger("agent.node.loop")  # these are the loop's steps: logged under its name

# An unchanged status line is logged again only after this long: an idle fleet would otherwise
# write the same line every status_interval_s for days (17,000 lines a day at 5 s) to the
# device's flash, and one line in ten minutes still shows the agent is there.
STATUS_REPEAT_S = 600.0


class NodeStatus:
    """``stats()``, ``write()`` and ``line()`` of one node; ``extra()`` is its side's part."""

    def __init__(self, cfg: NodeConfig, policy: AgentPolicy, view: NodeView,
                 counters: Mapping[str, int], extra: Callable[[], Dict[str, Any]] = dict,
                 wall: Callable[[], float] = time.time):
        self.cfg = cfg
        self.policy = policy
        self.view = view
        self.counters = counters
        self.extra = extra
        self.wall = wall
        self.faults = WriteFaults("stats " + os.path.join(cfg.state_dir, "stats.json"))
        # a worker's power mode now ("" unknown); None: no power_mode key (a source)
        self.power_mode: Optional[Callable[[], str]] = None  # set by powerwatch.attach
        self._logged = ("", -math.inf)  # (the last status line logged, when)

    def stats(self) -> Dict[str, Any]:
        """Counters and state for stats.json and the status line."""
        out: Dict[str, Any] = {"node_id": self.cfg.node_id, "role": self.cfg.role,
                               "stage": self.cfg.stage, "policy": self.policy.name,
                               "counters": dict(self.counters),
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

    def write(self) -> None:
        """Atomically replace ``<state_dir>/stats.json`` (no fsync: it is rewritten every few
        seconds and only has to be whole when read)."""
        path = os.path.join(self.cfg.state_dir, "stats.json")
        try:
            write_atomic(path, json.dumps(self.stats(), indent=1, sort_keys=True), durable=False)
        except OSError as exc:  # a full disk: counted, logged at most once a minute
            self.faults.failed(exc)
        else:
            self.faults.succeeded()

    def line(self) -> str:
        """One status line for the log."""
        s = self.stats()
        parts = ["%s %s" % (self.cfg.role, self.cfg.node_id), "alive=%d" % len(s["alive"]),
                 "queue=%d/%d" % (s["input_queue"], s["output_queue"]), "dropped=%d" % s["dropped"]]
        if "tasks" in s:
            parts.append(" ".join("%s=%d" % kv for kv in s["tasks"].items()))
        own = s["thresholds"].get(str(self.cfg.stage))  # its changes are logged at DEBUG only
        if self.cfg.role == "worker" and own is not None:
            parts.append("threshold=%.3f" % own)
        return " ".join(parts)

    def log_line(self, now: float) -> bool:
        """Log the status line at INFO when it differs from the last one logged, or when that
        was ``STATUS_REPEAT_S`` ago (``now``: a monotonic clock); True when it was logged."""
        line = self.line()
        last, at = self._logged
        if line == last and now - at < STATUS_REPEAT_S:
            return False
        log.info("%s", line)
        self._logged = (line, now)
        return True
