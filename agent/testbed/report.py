"""Testbed results: per-run summaries of source records, the table, the JSON file, the plots.

Pure apart from the file writers: ``summarise_records`` turns the per-task records that sources
write to ``<state_dir>/records.jsonl`` into one ``RunResult``; ``format_table``,
``write_json`` and ``write_plots`` present a list of them. The JSON schema is
``{"runs": [{"policy", "rate", "created", "completed", "lost", "mean_delay_s",
"mean_delay_ci_s", "p95_delay_s", "accuracy", "model_delay_s", "capacities_emulated"}, ...]}``
plus a few extra fields that readers may ignore. A task's fate is one of ``STATUSES`` and
created = completed + lost + rejected + error in every summary.
"""

from __future__ import annotations

import json
import os
import sys
from array import array
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from agent.ops.atomic import write_atomic
# the records reader's own module; history, local and the benches import it from here
from agent.testbed.report_records import read_records  # noqa: F401
from agent.testbed.progress import Progress  # noqa: F401  (callers import it from here)
# the record check's own module; history, phases, local and the tests import its names here too
from agent.testbed.reportcheck import (  # noqa: F401
    MAX_CLOCK_S, MAX_DELAY_S, STATUSES, TIME_KEYS, _created, _delay, _finite, delay_ok,
    error_kind, error_text, is_record)
from agent.testbed.spread import (  # noqa: F401  (percentile: phases and benches import it here)
    batch_means_half_width, mean_ms_cell, ms_cell, percentile, plus_minus_for)

# Keys of the JSON object of one run, in the documented order.
RUN_KEYS = ("policy", "rate", "created", "completed", "lost", "mean_delay_s", "mean_delay_ci_s",
            "p95_delay_s", "accuracy", "model_delay_s", "capacities_emulated")


@dataclass
class RunResult:
    """What one (policy, rate) run measured, plus the model's prediction where there is one."""

    policy: str
    rate: float  # total arrival rate over all sources, tasks/s
    created: int  # tasks the sources created
    completed: int  # tasks whose result came back
    lost: int  # tasks lost (no result after every re-issue) or without any record
    mean_delay_s: Optional[float]  # mean response time of completed tasks (source clock)
    p95_delay_s: Optional[float]
    accuracy: Optional[float]  # fraction of completed tasks answered correctly
    # eq. 8 mean response time (links as shared servers, agent.policies.model) for the routing used
    model_delay_s: Optional[float]
    capacities_emulated: bool  # worker capacities padded to emulate_capacity_flops
    rejected: int = 0  # refused at once by the source, with a reason (admission, overload, ...)
    # answered "error" by the source, which made no task of the input (fleet mode: an input it
    # refused, reason bad_input); what it said, "reason: detail" -> tasks, the first few kinds
    error: int = 0
    error_reasons: Dict[str, int] = field(default_factory=dict)
    # simulator, same routing, FIFO workers and serialised links (the agent's queueing)
    fifo_sim_delay_s: Optional[float] = None
    duration_s: float = 0.0  # load duration of the run
    resent: int = 0  # tasks that needed at least one re-send
    # routing each offloader used {node: {successor: p}} and remaining ratio I_h per stage
    routing: Dict[str, Dict[str, float]] = field(default_factory=dict)
    remaining: List[float] = field(default_factory=list)
    # tasks leaving at each stage (1-based), from the records
    exit_counts: Dict[int, int] = field(default_factory=dict)
    note: str = ""
    # tasks answered per second between the warm-up's end and each source's last arrival,
    # summed over sources (``served_rate``): under admission control (MDI-Exit's
    # Alg. 3) the sources pace themselves, so this is the rate the network admits and serves
    admitted_rate_tasks_s: Optional[float] = None
    # with a fault schedule: what was injected when (s after the load's start), the delay
    # per phase {before|during|after: stats} (agent.testbed.phases) and the recovery time
    faults: List[dict] = field(default_factory=list)
    phases: Dict[str, dict] = field(default_factory=dict)
    recovery_s: Optional[float] = None
    # mean utilisation of each shaped link {"a->b": rho} (wire bytes the sender sent / the time
    # from the rate's first task to its last record / real rate; agent.testbed.columns) and the
    # senders' own rate estimates at the end, bytes/s
    link_utilisation: Dict[str, float] = field(default_factory=dict)
    link_rate_measured_bytes_s: Dict[str, float] = field(default_factory=dict)
    dtoee_phases: Dict[str, int] = field(default_factory=dict)  # how they ended (phasecheck)
    # the mean delay's 95% confidence interval, half-width (agent.testbed.spread); None: < 20
    mean_delay_ci_s: Optional[float] = None
    model_window: str = ""  # the sends model/fifo sim route by (testbed.summary_window); and
    # emulating workers slower than their emulate_capacity_flops (testbed.summary_capacity)
    capacity_unreachable: Dict[str, Dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["exit_counts"] = {str(k): v for k, v in sorted(self.exit_counts.items())}
        ordered = {k: d.pop(k) for k in RUN_KEYS}
        ordered.update(d)
        return ordered


def damaged_lines(path: str, lines: Sequence[int]) -> str:
    """One line naming a records file's damaged lines (the first few, with their count)."""
    if len(lines) == 1:
        return ("%s: line %d is not a task record; its (policy, rate) is summarised without it"
                % (path, lines[0]))
    more = " and %d more" % (len(lines) - 5) if len(lines) > 5 else ""
    return ("%s: %d lines are not task records (lines %s%s); its (policy, rate) is summarised "
            "without them" % (path, len(lines), ", ".join(str(n) for n in lines[:5]), more))


def summarise_records(records: Iterable[Mapping], policy: str, rate: float,
                      capacities_emulated: bool, model_delay_s: Optional[float] = None,
                      duration_s: float = 0.0, expected_created: Optional[int] = None
                      ) -> RunResult:
    """Count the fates of a run's tasks and the delay/accuracy of the completed ones.

    A task id seen twice counts once (its last record wins). ``expected_created``, when the
    sources report how many tasks they made, turns tasks without any record into losses.
    created = completed + lost + rejected + error: an ``error`` answer (the source refused
    the input) is no loss; its reason and detail go to ``error_reasons``. The mean delay's
    confidence interval takes the completed tasks in creation order (``mean_delay_ci_s``).
    """
    latest = latest_by_task(records)
    # creation time and delay of the completed tasks with a delay, in the order of ``latest``
    created_s, delays_s = array("d"), array("d")
    correct = 0
    completed = 0
    rejected = 0
    errors: Counter = Counter()
    said: Dict[str, str] = {}
    resent = 0
    exits: Counter = Counter()
    for rec in latest:
        if int(rec.get("resends", 0) or 0) > 0:
            resent += 1
        status = rec.get("status")
        if status == "rejected":
            rejected += 1
        if status == "error":  # counted by kind, shown in the first one's words
            kind = error_kind(error_text(rec))
            said.setdefault(kind, error_text(rec))
            errors[kind] += 1
        if status != "completed":
            continue
        completed += 1
        d = _delay(rec)
        if d is not None:
            created_s.append(_created(rec) or 0.0)
            delays_s.append(d)
        if rec.get("correct") is True:  # null: the task had no label to check it against
            correct += 1
        st = rec.get("exit_stage")
        if isinstance(st, int) and not isinstance(st, bool):  # JSON true is no stage 1
            exits[st] += 1
    created = len(latest)
    if expected_created is not None:
        created = max(created, int(expected_created))
    kinds = {said[k]: n for k, n in errors.most_common(ERROR_KINDS_KEPT)}
    ds = in_creation_order(created_s, delays_s)
    return RunResult(
        policy=policy, rate=float(rate), created=created, completed=completed,
        lost=created - completed - rejected - sum(errors.values()), rejected=rejected,
        error=sum(errors.values()), error_reasons=kinds,
        mean_delay_s=(sum(ds) / len(ds)) if ds else None, p95_delay_s=percentile(ds, 95.0),
        mean_delay_ci_s=batch_means_half_width(ds),
        accuracy=(correct / completed) if completed else None,
        model_delay_s=model_delay_s, capacities_emulated=capacities_emulated,
        duration_s=float(duration_s), resent=resent, exit_counts=dict(exits))


def latest_by_task(records: Iterable[Mapping]) -> Sequence[Mapping]:
    """The last record of each task (``source``/``id``; a record without an id is a task of its
    own), in the order each task was first seen."""
    records = records if isinstance(records, (list, tuple)) else list(records)
    by_id: Dict[str, Mapping] = {}
    # each id a string of one source whose name has no "/": the id alone names the task, no
    # "source/id" string need be made for each (a third of a record's size)
    for rec in records:
        rid, src = rec.get("id"), rec.get("source", "")
        if type(rid) is not str or type(src) is not str or "/" in src:
            return _latest_by_key(records)
        prev = by_id.get(rid)
        if prev is not None and prev.get("source", "") != src:
            return _latest_by_key(records)
        by_id[rid] = rec
    return list(by_id.values())


def _latest_by_key(records: Sequence[Mapping]) -> Sequence[Mapping]:
    by_key: Dict[str, Mapping] = {}
    for i, rec in enumerate(records):
        by_key["%s/%s" % (rec.get("source", ""), rec.get("id", i))] = rec
    return list(by_key.values())


def in_creation_order(created_s: Sequence[float], delays_s: Sequence[float]) -> List[float]:
    """``delays_s`` sorted by ``created_s`` (equal creation times: in the order given)."""
    import numpy as np

    if not len(delays_s):
        return []
    order = np.argsort(np.asarray(created_s, dtype=float), kind="stable")
    return np.asarray(delays_s, dtype=float)[order].tolist()


ERROR_KINDS_KEPT = 5  # distinct error answers a summary keeps (results.json, the end line)


def error_lines(runs: Sequence[RunResult]) -> List[str]:
    """One line per run whose sources answered inputs ``error``: the count and what they said
    (the first few kinds, each with its count), so nobody has to look for it in their logs."""
    out = []
    for r in runs:
        if not r.error:
            continue
        kinds = sorted(r.error_reasons.items(), key=lambda kv: -kv[1])[:3]
        more = r.error - sum(n for _, n in kinds)
        out.append("ERROR %d task(s) of %s at %.1f tasks/s answered error by the sources: %s%s"
                   % (r.error, r.policy, r.rate, "; ".join("%s (%d)" % kv for kv in kinds),
                      "; %d of other kinds" % more if more else ""))
    return out


def warmup_end(recs: Iterable[Mapping], warmup_s: float) -> Optional[float]:
    """When one rate's warm-up ends: ``warmup_s`` after the first task any of its sources
    created (the load's start, as the records show it); None without a creation time.

    The one start of the warm-up: the summary's delay and accuracy, the delay per phase and
    the delay CDF all leave out the tasks created before this, so their counts agree. Every
    source starts at the load's start, so one start serves them all (a source's own first
    task comes a random arrival gap later, longer at a lower rate).
    """
    created = [c for c in (_created(r) for r in recs) if c is not None]
    return min(created) + warmup_s if created else None


def served_rate(recs: Sequence[Mapping], warmup_s: float) -> Optional[float]:
    """Tasks answered per second while one source's arrivals last, after the warm-up.

    Counts answers (``finished_mono``) between the warm-up's end and the source's last
    arrival, whatever the task's creation time. Under admission control (Alg. 3) the source
    keeps its node's queues filled, so this is the rate the network admits and serves; a task
    re-issued long after the load has ended does not stretch it. None for a window under 1 s.
    """
    created = [c for c in (_created(r) for r in recs) if c is not None]
    if not created:
        return None
    start, end = min(created) + warmup_s, max(created)
    if end - start < 1.0:
        return None
    n = sum(1 for r in recs if r.get("status") == "completed"
            and isinstance(r.get("finished_mono"), (int, float))
            and start <= r["finished_mono"] <= end)
    return n / (end - start)


def busiest_link(utilisation: Mapping[str, float]) -> str:
    """"0.62 cam1->w1a": the highest utilisation and its link ("-" for none)."""
    if not utilisation:
        return "-"
    link = max(sorted(utilisation), key=lambda k: utilisation[k])
    return "%.2f %s" % (utilisation[link], link)


# RunResult.model_window of a local run (agent.testbed.summary_window): its model and fifo sim
# columns route by the sends after the warm-up, or by the whole run's, warm-up included
AFTER_WARMUP = "after warm-up"
WHOLE_RUN = "whole run"


def window_lines(runs: Sequence[RunResult]) -> List[str]:
    """One line when some run's model columns still include its warm-up (``WHOLE_RUN``)."""
    whole = ["%s@%g/s" % (r.policy, r.rate) for r in runs if r.model_window == WHOLE_RUN
             and (r.model_delay_s is not None or r.fifo_sim_delay_s is not None)]
    if not whole:
        return []
    return ["model, fifo sim: routing over the whole run, warm-up included, for %s (no "
            "reading of its send counters at the warm-up's end: none could be taken, the run "
            "had faults, or its rate folder keeps no window.json)" % ", ".join(whole)]


def admitted_lines(runs: Sequence[RunResult]) -> List[str]:
    """Lines under ``emulated:``: unreached emulated capacities (``summary_capacity``),
    whole-run model columns (``window_lines``), the rate each admission-control run (MDI-Exit's
    Alg. 3) admitted."""
    from agent.testbed.summary_capacity import capacity_warning_lines
    return capacity_warning_lines([r.capacity_unreachable for r in runs]) + window_lines(runs) + [
        "%s: admitted %.2f tasks/s after the warm-up (Alg. 3 admits one arrival per mu)"
            % (r.policy, r.admitted_rate_tasks_s) for r in runs
            if r.admitted_rate_tasks_s is not None]


def rate_cells(rates: Sequence[float]) -> Dict[float, str]:
    """The ``rate/s`` cell of each rate: one decimal, or two (the runs' own precision) when one
    decimal would print two rates alike or a rate as 0.0."""
    one = {r: "%.1f" % r for r in rates}
    if len(set(one.values())) == len(one) and all(float(c) > 0 for c in one.values()):
        return one
    return {r: "%.2f" % r for r in rates}


def format_table(runs: Sequence[RunResult], plus_minus: Optional[str] = None) -> str:
    """A plain-text table, one row per run, delays in milliseconds.

    A ``rejected`` column (admission control) appears when some run rejected tasks, an
    ``error`` one when a source answered some input ``error`` (fleet mode), a ``link
    util`` one (the busiest shaped link's mean utilisation, ``busiest_link``) when some run has
    shaped links. ``measured`` is how many completed tasks the delays and accuracy are over
    (those created after the warm-up): a short run's mean may rest on a handful. ``mean ms``
    is ``97.8±6.1``, the mean and its 95% interval's half-width (``mean_ms_cell``; the sign is
    ``plus_minus``, by default what stdout can print: ``plus_minus_for``).
    """
    pm = plus_minus if plus_minus is not None else plus_minus_for(sys.stdout)
    rej = any(r.rejected for r in runs)
    err = any(r.error for r in runs)
    util = any(r.link_utilisation for r in runs)
    head = ("policy", "rate/s", "created", "completed", "lost") + (("rejected",) if rej else ()) \
        + (("error",) if err else ()) \
        + ("measured", "mean ms", "p95 ms", "accuracy", "model ms", "fifo sim ms") \
        + (("link util",) if util else ())
    rows = [head]
    rate_cell = rate_cells([r.rate for r in runs])
    for r in runs:
        rows.append((r.policy, rate_cell[r.rate], str(r.created), str(r.completed), str(r.lost))
                    + ((str(r.rejected),) if rej else ())
                    + ((str(r.error),) if err else ())
                    + (str(sum(r.exit_counts.values())),
                       mean_ms_cell(r.mean_delay_s, r.mean_delay_ci_s, pm), ms_cell(r.p95_delay_s),
                       "-" if r.accuracy is None else "%.3f" % r.accuracy,
                       ms_cell(r.model_delay_s), ms_cell(r.fifo_sim_delay_s))
                    + ((busiest_link(r.link_utilisation),) if util else ()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str, runs: Sequence[RunResult], extra: Optional[Mapping] = None) -> None:
    """Write ``{"runs": [...]}`` (plus ``extra`` top-level fields) atomically."""
    obj = {"runs": [r.to_json() for r in runs]}
    if extra:
        obj.update(extra)
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


PLOT_NAMES = ("delay_vs_rate.png", "accuracy_vs_rate.png")


def write_plots(directory: str, runs: Sequence[RunResult]) -> List[str]:
    """Mean delay and accuracy versus total arrival rate, one line per policy (PNG files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    by_policy: Dict[str, List[RunResult]] = defaultdict(list)
    for r in runs:
        by_policy[r.policy].append(r)
    written = []
    for name, attr, label, scale in zip(PLOT_NAMES, ("mean_delay_s", "accuracy"),
                                        ("mean delay (ms)", "accuracy"), (1000.0, 1.0)):
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for pol, rs in sorted(by_policy.items()):
            pts = sorted((r for r in rs if getattr(r, attr) is not None), key=lambda r: r.rate)
            err = [(r.mean_delay_ci_s or 0.0) * scale for r in pts]  # 95% interval: error bars
            line = ax.errorbar([r.rate for r in pts], [getattr(r, attr) * scale for r in pts],
                               yerr=err if attr == "mean_delay_s" else None, marker="o",
                               capsize=3, label=pol).lines[0]
            model = sorted((r for r in rs if r.model_delay_s is not None), key=lambda r: r.rate)
            if attr == "mean_delay_s" and model:
                # the model's prediction for the routing this policy used, in its colour
                ax.plot([r.rate for r in model], [r.model_delay_s * scale for r in model],
                        linestyle="--", color=line.get_color(), label=pol + " model (eq. 8)")
        ax.set_xlabel("total arrival rate (tasks/s)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = os.path.join(directory, name)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
