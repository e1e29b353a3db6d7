"""Delay before, during and after a rate's faults, and how long the delay took to recover.

Pure functions of the sources' records (``created_mono``/``finished_mono``: the monotonic
clock the testbed also reads when it injects a fault). The fault window runs from the first
fault's start to the last one's end; a kill for good (no duration) lasts until the load's end,
so its worker's absence is "during", and nothing is "after" it. Tasks are put in a phase by
creation time; the warm-up's tasks are left out of "before".
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from agent.testbed.report import delay_ok, percentile

PHASES = ("before", "during", "after")
RECOVERED_RUN = 5  # consecutive tasks back at the normal delay that mark the recovery
FOR_GOOD_LABEL = "down for good"  # the recovery column of a rate with a kill for good


def for_good(entry: Mapping) -> bool:
    """Whether a fault log entry is a kill for good (no duration): its ``for_good`` flag, or
    for a log written before the flag, its label (``Fault.label``: "... for 0s")."""
    if entry.get("for_good") is True:
        return True
    return entry.get("kind") == "kill" and str(entry.get("fault", "")).endswith(" for 0s")


def _delay(rec: Mapping) -> Optional[float]:
    a, b = rec.get("created_mono"), rec.get("finished_mono")
    if rec.get("status") != "completed" or not isinstance(a, (int, float)) \
            or not isinstance(b, (int, float)):
        return None
    d = float(b) - float(a)
    # records from read_records are checked already; one finished before it was created (or
    # with overflowing times) must not turn a phase's mean negative or infinite either way
    return d if delay_ok(d) else None


def phase_stats(recs: Sequence[Mapping]) -> dict:
    """Tasks, completed, lost, rejected (refused by admission control or an overloaded
    worker: no loss, but no answer either), error (an input the source refused, in fleet
    mode), resent, mean and p95 delay (s) of one phase's records."""
    delays = [d for d in (_delay(r) for r in recs) if d is not None]
    fates = Counter(r.get("status") for r in recs)
    return {"tasks": len(recs), "completed": fates["completed"],
            "lost": len(recs) - fates["completed"] - fates["rejected"] - fates["error"],
            "rejected": fates["rejected"], "error": fates["error"],
            "resent": sum(1 for r in recs if int(r.get("resends", 0) or 0) > 0),
            "mean_delay_s": sum(delays) / len(delays) if delays else None,
            "p95_delay_s": percentile(delays, 95.0)}


def split_phases(recs: Sequence[Mapping], window: Tuple[float, float],
                 warmup_end: float) -> Dict[str, List[Mapping]]:
    """Records by phase: created before the window (after the warm-up), in it, after it."""
    start, end = window
    out: Dict[str, List[Mapping]] = {p: [] for p in PHASES}
    for r in recs:
        c = r.get("created_mono")
        if not isinstance(c, (int, float)):
            continue
        if c < start:
            if c >= warmup_end:
                out["before"].append(r)
        elif c < end:
            out["during"].append(r)
        else:
            out["after"].append(r)
    return out


def recovery_time(after: Sequence[Mapping], end: float, before: Mapping) -> Optional[float]:
    """Seconds from the window's end to the creation of the first task from which
    ``RECOVERED_RUN`` tasks in a row complete within the normal delay (the larger of the
    before-phase p95 and 1.5x its mean); None when that never happens (or no baseline)."""
    mean, p95 = before.get("mean_delay_s"), before.get("p95_delay_s")
    if mean is None or p95 is None:
        return None
    limit = max(p95, 1.5 * mean)
    recs = sorted(after, key=lambda r: r["created_mono"])
    ok = [(_delay(r) is not None and _delay(r) <= limit) for r in recs]
    for i in range(len(recs)):
        run = ok[i:i + RECOVERED_RUN]
        if len(run) == RECOVERED_RUN and all(run):
            return max(0.0, float(recs[i]["created_mono"]) - end)
    return None


def target_resumed(recs: Sequence[Mapping], worker: str, end: float) -> Optional[float]:
    """Seconds from a fault's ``end`` until the first answer from ``worker`` (a record whose
    ``worker`` it is, finished at or after ``end``): how soon tasks flow through it again;
    None when it answers none after the end."""
    done = [float(r["finished_mono"]) for r in recs
            if r.get("worker") == worker and r.get("status") == "completed"
            and isinstance(r.get("finished_mono"), (int, float)) and r["finished_mono"] >= end]
    return min(done) - end if done else None


def fault_phases(recs: Sequence[Mapping], windows: Sequence[Tuple[float, float]],
                 warmup_end: float) -> Tuple[Dict[str, dict], Optional[float]]:
    """({phase: stats}, recovery time) of a rate's records for its fault windows."""
    if not windows:
        return {}, None
    window = (min(w[0] for w in windows), max(w[1] for w in windows))
    parts = split_phases(recs, window, warmup_end)
    stats = {p: phase_stats(parts[p]) for p in PHASES}
    return stats, recovery_time(parts["after"], window[1], stats["before"])


def recovery_label(rec: Optional[float], ph: Mapping[str, dict], lasting: bool = False) -> str:
    """The recovery column: seconds, or why there are none: ``down for good`` (``lasting``: a
    kill for good kept the faults on until the load's end), ``no baseline`` (no delay measured
    before the faults), ``too short`` (fewer than RECOVERED_RUN tasks after them: the load
    ended first), ``never`` (enough tasks after, no run of them back at the normal delay)."""
    if rec is not None:
        return "%.1f" % rec
    if lasting:
        return FOR_GOOD_LABEL
    if (ph.get("before") or {}).get("mean_delay_s") is None:
        return "no baseline"
    return "too short" if (ph.get("after") or {}).get("tasks", 0) < RECOVERED_RUN else "never"


def format_phases(rows: Sequence[Tuple[str, float, Mapping[str, dict], Optional[float], bool]]
                  ) -> str:
    """A table: policy, rate, then per phase mean/p95 ms, lost and (when any phase of any row
    had one) rejected and error, and the recovery time. Each row: (policy, rate, phases,
    recovery s, whether a kill for good was among the faults)."""
    extra = [k for k in ("rejected", "error")
             if any((ph.get(p) or {}).get(k) for _, _, ph, _, _ in rows for p in PHASES)]
    head = ["policy", "rate/s"]
    for p in PHASES:
        head += ["%s mean ms" % p, "p95", "lost"] + extra
    head.append("recovery s")
    lines = [head]
    for policy, rate, ph, rec, lasting in rows:
        row = [policy, "%.1f" % rate]
        for p in PHASES:
            s = ph.get(p) or {}
            row += ["-" if s.get("mean_delay_s") is None else "%.0f" % (s["mean_delay_s"] * 1e3),
                    "-" if s.get("p95_delay_s") is None else "%.0f" % (s["p95_delay_s"] * 1e3),
                    str(s.get("lost", "-"))]
            row += [str(s.get(k, "-")) for k in extra]
        row.append(recovery_label(rec, ph, lasting))
        lines.append(row)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in lines)


def phase_lines(results: Sequence) -> List[str]:
    """The delay-per-phase table of the results that had faults, under the line saying what it
    holds; none when no result had faults."""
    rows = [(r.policy, r.rate, r.phases, r.recovery_s, any(isinstance(f, dict) and for_good(f)
                                                       for f in r.faults))
            for r in results if r.phases]
    if not rows:
        return []
    return ["delay per phase (tasks created before, during and after the faults; recovery: "
            "from the last fault's end until %d tasks in a row are back at the normal delay; a "
            "kill for good lasts until the load's end)" % RECOVERED_RUN, format_phases(rows)]
