"""Status of a node: the stats dict, ``<state_dir>/stats.json`` and the status log line.

Mixed into ``Node``; reads its counters, view, policy and (on a source) task book.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict

log = logging.getLogger("agent.node.loop")


class StatusMixin:
    """``stats()``, ``write_stats()`` and ``_status_line()`` of a ``Node``."""

    def stats(self) -> Dict[str, Any]:
        """Counters and state for stats.json and the status line."""
        out: Dict[str, Any] = {"node_id": self.cfg.node_id, "role": self.cfg.role,
                               "stage": self.cfg.stage, "policy": self.policy.name,
                               "counters": dict(self.counters),
                               "dropped": sum(v for k, v in self.counters.items()
                                              if k.startswith("drop_")),
                               "alive": sorted(self.view.alive), "routing": self.policy.routing(),
                               "thresholds": {str(k): v for k, v in self.policy.thresholds().items()},
                               "capacity_flops": self.view.capacity_flops,
                               "emulated": {"capacity": self.cfg.emulate_capacity_flops > 0,
                                            "links": self.cfg.emulate_links},
                               "input_queue": self.view.input_queue,
                               "output_queue": self.view.output_queue,
                               "wall_time": self.wall()}
        if self.book:
            out["tasks"] = self.book.counts()
        return out

    def write_stats(self) -> None:
        """Atomically replace ``<state_dir>/stats.json``."""
        path = os.path.join(self.cfg.state_dir, "stats.json")
        tmp = path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(self.stats(), f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write %s: %s", path, exc)

    def _status_line(self) -> str:
        s = self.stats()
        parts = ["%s %s" % (self.cfg.role, self.cfg.node_id), "alive=%d" % len(s["alive"]),
                 "queue=%d/%d" % (s["input_queue"], s["output_queue"]), "dropped=%d" % s["dropped"]]
        if "tasks" in s:
            parts.append(" ".join("%s=%d" % kv for kv in s["tasks"].items()))
        return " ".join(parts)
