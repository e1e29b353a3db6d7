"""Past testbed and fleet runs read back from their folders, for ``edge-agent report``.

A run folder (``testbed --out DIR`` makes ``DIR/YYYYmmdd-HHMMSS``) holds ``testbed.json`` (how
the run was asked for) and, per (policy, rate), ``POLICY/rate-R/run.json`` next to each
source's ``records.jsonl``. ``load_run`` redoes every rate's summary with the testbed's own
summariser (``agent.testbed.local.summarise_rate``), so the table it gives is the one the
testbed printed; ``delays_after_warmup`` gives the per-task delays behind a delay CDF (a
float64 array taken from the records' columns, 8 bytes a task).

Damaged files never end in a traceback: a ``testbed.json`` that is not the run's (binary, not
a JSON object, wrong field types) is a ``UsageError`` naming it, since nothing of the run can be
redone without it, and so is a damaged ``topology.json`` (the topology the run used,
``agent.testbed.runtopo``); a (policy, rate) whose ``run.json`` or records cannot be read or
summarised is left out and named in ``PastRun.skipped`` (the other rates still report), and a
run with no rate left is a ``UsageError``. Records lines that are no task record (other than a
torn last line) leave the rate in, summarised without them, and are named in
``PastRun.damaged``. A run with faults gets each rate's delay per phase and recovery time
again from the fault log the run folder keeps (``agent.testbed.faultlog``); a damaged log is
named in ``PastRun.damaged`` too, and leaves that rate without them. A local rate's model and
fifo sim columns route by the counters its rate folder keeps from after the warm-up
(``agent.testbed.summary_window.redo_window``), as the testbed printed them; a rate folder
without them is reported over the whole run (``model_window`` "whole run", a line says so), and
a damaged one is named in ``PastRun.damaged``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

from agent.config.checks import short
from agent.config.jsonfile import read_json_file
from agent.errors import UsageError
from agent.testbed.faultlog import redo_fault_phases
from agent.testbed.fleet import summarise_fleet
from agent.testbed.local import RUN_FILE, bundle_stages, summarise_rate
from agent.testbed.bounds import MAX_RATE, MIN_TASK_RATE_TASKS_S, TASK_RATE_RANGE_TEXT
from agent.testbed.report import RunResult, _finite, damaged_lines
from agent.testbed.report_records import RecordsFile, read_records_file
from agent.testbed.reportcheck import CREATED_KEYS, DELAY_PAIRS
from agent.testbed.summary_window import redo_window, stats_problem
from agent.testbed.topology import Topology
from agent.testbed.rundir import RUN_INFO, in_use

if TYPE_CHECKING:  # only named in annotations: numpy is imported where arrays are made
    import numpy as np  # noqa: F401

# tasks one source of one rate may have created: 100 times what one load may create in all
# (MAX_TASKS), so Poisson arrivals above their mean never reach it; a larger count is damage
MAX_EXPECTED = 10 ** 9


@dataclass
class PastRun:
    """One run folder read back."""

    path: str
    info: dict  # testbed.json
    results: List[RunResult]
    # per (policy, rate): the delays behind its CDF (s), a float64 array (or a list)
    delays_s: Dict[Tuple[str, float], Sequence[float]] = field(default_factory=dict)
    in_progress: bool = False
    skipped: List[str] = field(default_factory=list)  # why each damaged (policy, rate) was left out
    # records files with damaged lines, one line each: their rates are reported without them
    damaged: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # e.g. which file an older run's topology is
    planned: int = 0  # (policy, rate)s the run set out to do (0: not recorded)

    @property
    def interrupted(self) -> bool:
        """True when the run stopped (Ctrl-C, an error) before all it planned was done."""
        return not self.in_progress and 0 < len(self.results) + len(self.skipped) < self.planned

    @property
    def label(self) -> str:
        """Short name of the run (its folder's name)."""
        return os.path.basename(self.path.rstrip(os.sep))


def resolve_run_dir(path: str) -> str:
    """A run folder: ``path`` itself, or the run ``path/latest`` points to (a ``--out`` folder)."""
    if os.path.isfile(os.path.join(path, RUN_INFO)):
        return os.path.abspath(path)
    latest = os.path.join(path, "latest")
    if os.path.isfile(os.path.join(latest, RUN_INFO)):
        return os.path.realpath(latest)
    if not os.path.exists(path):
        raise UsageError("%s: no such folder" % path)
    info = os.path.join(path, RUN_INFO)
    if os.path.lexists(info):  # there, but a folder, a FIFO or a dangling link: not "no file"
        raise UsageError("%s: not a run's settings file (%s)" % (
            info, "a folder" if os.path.isdir(info) else "a link to a missing file"
            if not os.path.exists(info) else "not a regular file"))
    raise UsageError("%s: not a testbed run folder (no %s; give DIR/YYYYmmdd-HHMMSS or a --out "
                     "folder with a latest link)" % (path, RUN_INFO))


def delays_after_warmup(files: Sequence[RecordsFile], warmup_s: float) -> "np.ndarray":
    """Delays (s) of the completed tasks created after the warm-up, as the table counts them,
    in the order of ``files`` and their lines: a float64 array, read from the files' columns
    (8 bytes a delay; no ``Record`` made). Each task's creation time and delay are those
    ``reportcheck._created`` and ``_delay`` give, the warm-up's end ``report.warmup_end``'s."""
    import numpy as np

    created, delays, completed = [], [], []
    for f in files:
        first = f.numbers(CREATED_KEYS[0])
        for key in CREATED_KEYS[1:]:  # the first creation time a record has
            none = np.isnan(first)
            if none.any():
                first[none] = f.numbers(key)[none]
        d, todo = np.full(len(f), np.nan), np.ones(len(f), bool)
        for ka, kb in DELAY_PAIRS:  # the first clock with both times
            a, b = f.numbers(ka), f.numbers(kb)
            both = todo & ~np.isnan(a) & ~np.isnan(b)
            d[both] = b[both] - a[both]
            todo &= ~both
        created.append(first)
        delays.append(d)
        completed.append(f.equals("status", "completed"))
    if not files:
        return np.zeros(0)
    created_s, delay_s = np.concatenate(created), np.concatenate(delays)
    if np.isnan(created_s).all():  # no creation time: no warm-up end, no delay counted
        return np.zeros(0)
    end = float(np.nanmin(created_s)) + warmup_s  # warmup_end: the first creation + warm-up
    with np.errstate(invalid="ignore"):  # NaN (no creation time) compares false
        keep = np.concatenate(completed) & (created_s >= end) & ~np.isnan(delay_s)
    return delay_s[keep]


def _rate_ok(v) -> bool:
    return _finite(v) and MIN_TASK_RATE_TASKS_S <= v <= MAX_RATE


def read_run_info(run_dir: str) -> dict:
    """``testbed.json`` of a run folder, checked: a JSON object with a string ``topology``, a
    known ``mdi_mode``, a list of policy names, a list of rates ``TASK_RATE_RANGE_TEXT``, a
    ``duration_s`` in (0, MAX_DURATION_S] and a list of fault labels (missing ones are fine);
    ``UsageError`` naming the file and the field otherwise."""
    from agent.commands.testbed import MAX_DURATION_S, MDI_MODES

    path = os.path.join(run_dir, RUN_INFO)
    info = read_json_file(path, UsageError, "run info")
    if not isinstance(info, dict):
        raise UsageError("%s: not a run's %s (a JSON object is needed, got %s)"
                         % (path, RUN_INFO, type(info).__name__))
    topo = info.get("topology")
    if topo is not None and not (isinstance(topo, str) and topo):
        raise UsageError("%s: topology: must be a file or a shipped name, got %s"
                         % (path, short(topo)))
    mode = info.get("mdi_mode")
    if mode is not None and not (isinstance(mode, str) and mode in MDI_MODES):
        raise UsageError("%s: mdi_mode: must be one of %s or null, got %s"
                         % (path, ", ".join(MDI_MODES), short(mode)))
    pols = info.get("policies")
    if pols is not None and not (isinstance(pols, list) and all(isinstance(p, str) for p in pols)):
        raise UsageError("%s: policies: must be a list of policy names, got %s"
                         % (path, short(pols)))
    checks = (  # key, check, what it must be
        ("rates", lambda v: isinstance(v, list) and all(_rate_ok(r) for r in v),
         "a list of rates " + TASK_RATE_RANGE_TEXT),
        ("duration_s", lambda v: _finite(v) and 0 < v <= MAX_DURATION_S,
         "seconds in (0, %d]" % MAX_DURATION_S),
        ("faults", lambda v: isinstance(v, list) and all(isinstance(f, str) for f in v),
         "a list of fault labels"))
    for key, ok, what in checks:
        if info.get(key) is not None and not ok(info[key]):
            raise UsageError("%s: %s: must be %s, got %s" % (path, key, what, short(info[key])))
    return info


def load_run(path: str) -> PastRun:
    """Read a run folder and redo its summaries (see the module docstring).

    A damaged ``testbed.json`` or ``topology.json`` (or a topology or bundle that no longer
    loads) raises ``UsageError`` naming the file: nothing of the run can be summarised without
    it. A damaged (policy, rate) (its ``run.json`` or a records file) is left out and named in
    ``PastRun.skipped``; with none left, ``UsageError``. Damaged records lines are named in
    ``PastRun.damaged``; an older run's topology file in ``PastRun.notes``.
    """
    from agent.commands.testbed import with_mdi_mode
    from agent.testbed.driver import load_bundle_for
    from agent.testbed.asrun import applied_links
    from agent.testbed.netns import plan_network
    from agent.testbed.runtopo import CopyError, run_topology

    run_dir = resolve_run_dir(path)
    info = read_run_info(run_dir)
    try:
        topo, note = run_topology(run_dir, info.get("topology"))
        topo = with_mdi_mode(topo, info.get("mdi_mode"))
        # the links as the run had them (the link and model columns): netns shapes no link
        # inside a device; on loopback the senders paced what they were told
        topo = applied_links(topo, plan_network(topo) if info.get("network") == "netns"
                             else None)
        bundle = load_bundle_for(topo)
    except CopyError:
        raise  # names the run folder's topology copy
    except UsageError as exc:
        raise UsageError("%s: %s" % (os.path.join(run_dir, RUN_INFO), exc)) from None
    order = {p: i for i, p in enumerate(info.get("policies") or [])}
    files = sorted(glob.glob(os.path.join(run_dir, "*", "rate-*", RUN_FILE)))
    results, delays, skipped, damaged = [], {}, [], []
    for run_file in files:
        try:
            res, ds, bad = read_rate(topo, bundle, run_file)
        except UsageError as exc:
            skipped.append(str(exc))
            continue
        results.append(res)
        delays[(res.policy, res.rate)] = ds
        damaged += [b for b in bad if b not in damaged]  # results.json is shared by the rates
    results.sort(key=lambda r: (order.get(r.policy, len(order)), r.policy, r.rate))
    if skipped and not results:
        raise UsageError("%s; no (policy, rate) of %s could be read%s" % (
            skipped[0], run_dir, " (%d damaged, the first named)" % len(skipped)
            if len(skipped) > 1 else ""))
    if not results:
        raise UsageError("%s: no finished (policy, rate) in this run yet" % run_dir)
    pols, rates = info.get("policies"), info.get("rates")
    planned = len(pols) * len(rates) if isinstance(pols, list) and isinstance(rates, list) else 0
    return PastRun(run_dir, info, results, delays, in_use(run_dir), skipped, damaged,
                   [note] if note else [], planned)


# run.json: key -> (check, what it must be); "local" runs need the last four too
_RUN_FIELDS = {
    "policy": (lambda v: isinstance(v, str) and bool(v), "a policy name"),
    "rate": (_rate_ok, "a rate " + TASK_RATE_RANGE_TEXT),
    "records": (lambda v: isinstance(v, dict) and all(isinstance(p, str) and p
                                                      for p in v.values()),
                "an object {source: records file}"),
    "duration_s": (lambda v: _finite(v) and v >= 0, "seconds >= 0"),
    "expected": (lambda v: isinstance(v, dict) and all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_EXPECTED
        for n in v.values()), "an object {source: tasks created, at most %d}" % MAX_EXPECTED),
    "stats": (lambda v: isinstance(v, dict) and all(s is None or isinstance(s, dict)
                                                    for s in v.values()),
              "an object {node: stats or null}"),
    "load_s": (lambda v: _finite(v) and v >= 0, "seconds >= 0"),
}


def read_run_file(topo: Topology, path: str) -> dict:
    """A rate's ``run.json``, checked against the fields ``summarise_run_file`` uses and the
    topology's sources; ``UsageError`` naming the file and the field otherwise."""
    obj = read_json_file(path, UsageError, "run file")
    if not isinstance(obj, dict):
        raise UsageError("%s: not a rate's %s (a JSON object is needed, got %s)"
                         % (path, RUN_FILE, type(obj).__name__))
    kind = obj.get("kind", "local")
    if not (isinstance(kind, str) and kind in ("local", "fleet")):
        raise UsageError("%s: kind: must be \"local\" or \"fleet\", got %s"
                         % (path, short(kind)))
    for key, (ok, what) in _RUN_FIELDS.items():
        if kind == "fleet" and key in ("expected", "stats", "load_s"):
            continue
        if key not in obj or not ok(obj[key]):
            raise UsageError("%s: %s: must be %s, got %s"
                             % (path, key, what, short(obj.get(key))))
    bad = stats_problem(obj["stats"]) if kind == "local" else None
    if bad:
        raise UsageError("%s: %s" % (path, bad))
    missing = [s.id for s in topo.sources if s.id not in obj["records"]]
    if kind == "local" and missing:
        raise UsageError("%s: records: no records file for source %s"
                         % (path, ", ".join(missing)))
    return obj


def read_rate(topo: Topology, bundle, path: str) -> Tuple[RunResult, "np.ndarray", List[str]]:
    """One rate's summary redone from its ``run.json`` and records, the delays after the
    warm-up behind its CDF, and a line per records file with damaged lines (the summary leaves
    those lines out); ``UsageError`` naming the file when they cannot be redone."""
    obj = read_run_file(topo, path)
    d = os.path.dirname(path)
    records = {s: os.path.join(d, p) for s, p in obj["records"].items()}
    # each file's records, held (their columns) while the summary reads them, so every reader
    # of the same file shares one parse; no list of every record of the rate is kept
    files: List[RecordsFile] = []
    damaged: List[str] = []
    for p in records.values():
        bad: List[int] = []
        files.append(read_records_file(p, bad))
        if bad:
            damaged.append(damaged_lines(p, bad))
    try:
        if obj.get("kind") == "fleet":
            res = summarise_fleet(topo, obj["policy"], obj["rate"],
                                  [r for f in files for r in f.records()], obj["duration_s"])
        else:
            stages = bundle_stages(bundle)
            res = summarise_rate(topo, bundle, stages, obj["policy"], obj["rate"], records,
                                 obj["expected"], obj["stats"], obj["duration_s"], obj["load_s"])
            # the model columns over the sends after the warm-up, and the faults' delay per
            # phase, as the testbed printed them (a damaged file: a warning)
            problems = [redo_window(topo, stages, res, d),
                        redo_fault_phases(res, d, records, topo.warmup_s) if topo.faults else None]
            damaged += [p for p in problems if p]
        return res, delays_after_warmup(files, topo.warmup_s), damaged
    except UsageError as exc:
        # a records file names itself; anything else (a value the model refuses) is this
        # run.json's, so the warning names it rather than an internal field alone
        if d + os.sep in str(exc):
            raise
        raise UsageError("%s: cannot redo this summary from it (%s)" % (path, exc)) from None
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as exc:
        # a record or stats field the summary cannot use: the files are damaged (the
        # UsageError of an unreadable file passes through)
        raise UsageError("%s: cannot redo this summary from it and its records (%s: %s)"
                         % (path, type(exc).__name__, exc)) from None


def summarise_run_file(topo: Topology, bundle, path: str) -> RunResult:
    """Redo one rate's summary from its ``run.json`` and records (``edge-agent report``)."""
    return read_rate(topo, bundle, path)[0]


def write_cdf_plot(path: str, runs: List[PastRun]) -> str:
    """Delay CDF per policy and run: one panel per policy, one line per (run, rate)."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(r.policy for run in runs for r in run.results))
    fig, axes = plt.subplots(1, len(policies), figsize=(4.2 * len(policies), 3.4), squeeze=False)
    for ax, pol in zip(axes[0], policies):
        for run in runs:
            for (p, rate), ds in sorted(run.delays_s.items(), key=lambda kv: kv[0]):
                if p != pol or not len(ds):
                    continue
                xs = np.sort(np.asarray(ds, dtype=np.float64) * 1000.0)
                ys = np.arange(1, len(xs) + 1) / float(len(xs))
                ax.step(xs, ys, where="post", label="%s @ %g/s" % (run.label, rate))
        ax.set_title(pol)
        ax.set_xlabel("delay (ms)")
        ax.set_ylabel("fraction of tasks")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:  # no completed task after the warm-up at any rate: a legend of nothing warns
            ax.text(0.5, 0.5, "no delays measured", ha="center", va="center",
                    transform=ax.transAxes)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
