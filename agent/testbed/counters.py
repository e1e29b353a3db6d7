"""A worker's counters over every process it ran as, for the testbed's per-rate columns.

A worker's ``stats.json`` holds the counters of its current process, and a process started
after a fault (``kill``, ``restart``) counts from zero. So the fault injector keeps the last
``stats.json`` of each worker process it ends (``keep_ended``): the final write of one stopped
with SIGTERM, read once it has exited, or the last periodic write of one killed with SIGKILL
(it writes none at its death: what it did after that write, at most one
``status_interval_s``, is not counted). ``with_ended`` adds the kept counters to those of the
running process, so a worker's counters are running totals over all its processes and one
rate's share is the difference of two readings (``agent.testbed.columns.stats_delta``).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Mapping, Optional

from agent.ops.state import STATS_FILE

# stats counters that are levels, not running totals: the latest value is kept, never summed
GAUGE_PREFIXES = ("link_rate_bytes_s_",)


def read_stats(path: str) -> Optional[dict]:
    """A node's ``stats.json`` (None when absent or unreadable)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def is_total(key: str, value) -> bool:
    """Whether counter ``key`` with ``value`` is a running total (a number, not a gauge)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not key.startswith(GAUGE_PREFIXES))


def with_ended(stats: Optional[Mapping], ended: Optional[Mapping]) -> Optional[dict]:
    """``stats`` (the running process's ``stats.json``) with its running totals increased by
    ``ended``'s counters (those of the node's processes that ended before it); gauges and
    everything else are the running process's own, or ``ended``'s where it has none (a
    process that has not written its file yet, or sent on a link the older ones used)."""
    if ended is None or stats is None:
        picked = stats if ended is None else ended
        return None if picked is None else dict(picked)
    gone = ended.get("counters") or {}
    counters = dict(gone)
    for k, v in (stats.get("counters") or {}).items():
        counters[k] = v + gone[k] if is_total(k, v) and is_total(k, gone.get(k)) else v
    out = dict(stats)
    out["counters"] = counters
    return out


def keep_ended(ended: Dict[str, dict], node: str, state_dir: str, pid: int) -> None:
    """Add the last ``stats.json`` of ``node``'s process ``pid``, now gone, to
    ``ended[node]``, and move the file aside (``stats.<pid>.json``, kept for a look later):
    until the node's next process writes its own, nothing reads the old one as the new
    one's, which would count it twice."""
    path = os.path.join(state_dir, STATS_FILE)
    last = read_stats(path)
    if last is None:
        return
    ended[node] = with_ended(last, ended.get(node)) or {}
    try:
        os.replace(path, os.path.join(state_dir, "stats.%d.json" % pid))
    except OSError:
        try:
            os.remove(path)
        except OSError:
            pass
