"""Past testbed and fleet runs read back from their folders, for ``edge-agent report``.

A run folder (``testbed --out DIR`` makes ``DIR/YYYYmmdd-HHMMSS``) holds ``testbed.json`` (how
the run was asked for) and, per (policy, rate), ``POLICY/rate-R/run.json`` next to each
source's ``records.jsonl``. ``load_run`` redoes every rate's summary with the testbed's own
summariser (``agent.testbed.local.summarise_rate``), so the table it gives is the one the
testbed printed; ``delays_after_warmup`` gives the per-task delays behind a delay CDF.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from agent.errors import UsageError
from agent.testbed.fleet import summarise_fleet
from agent.testbed.local import RUN_FILE, _created, bundle_stages, summarise_rate
from agent.testbed.report import RunResult, _delay, read_records
from agent.testbed.topology import Topology
from agent.testbed.rundir import RUN_INFO, in_use


@dataclass
class PastRun:
    """One run folder read back."""

    path: str
    info: dict  # testbed.json
    results: List[RunResult]
    delays_s: Dict[Tuple[str, float], List[float]] = field(default_factory=dict)
    in_progress: bool = False

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
    raise UsageError("%s: not a testbed run folder (no %s; give DIR/YYYYmmdd-HHMMSS or a --out "
                     "folder with a latest link)" % (path, RUN_INFO))


def delays_after_warmup(records: List[dict], warmup_s: float) -> List[float]:
    """Delays (s) of the completed tasks created after the warm-up, as the table counts them."""
    created = [c for c in (_created(r) for r in records) if c is not None]
    t0 = min(created, default=0.0)
    out = []
    for r in records:
        c = _created(r)
        if r.get("status") == "completed" and c is not None and c - t0 >= warmup_s:
            d = _delay(r)
            if d is not None:
                out.append(d)
    return out


def load_run(path: str) -> PastRun:
    """Read a run folder and redo its summaries (see the module docstring)."""
    from agent.commands.testbed import with_mdi_mode
    from agent.testbed.driver import load_bundle_for
    from agent.testbed.topology import load_topology

    run_dir = resolve_run_dir(path)
    with open(os.path.join(run_dir, RUN_INFO), "r", encoding="utf-8") as f:
        info = json.load(f)
    topo = with_mdi_mode(load_topology(info.get("topology")), info.get("mdi_mode"))
    bundle = load_bundle_for(topo)
    order = {p: i for i, p in enumerate(info.get("policies") or [])}
    files = glob.glob(os.path.join(run_dir, "*", "rate-*", RUN_FILE))
    results, delays = [], {}
    for run_file in files:
        res = summarise_run_file(topo, bundle, run_file)
        results.append(res)
        with open(run_file, "r", encoding="utf-8") as f:
            recs_paths = json.load(f)["records"].values()
        recs = [r for p in recs_paths
                for r in read_records(os.path.join(os.path.dirname(run_file), p))]
        delays[(res.policy, res.rate)] = delays_after_warmup(recs, topo.warmup_s)
    results.sort(key=lambda r: (order.get(r.policy, len(order)), r.policy, r.rate))
    if not results:
        raise UsageError("%s: no finished (policy, rate) in this run yet" % run_dir)
    return PastRun(run_dir, info, results, delays, in_use(run_dir))


def summarise_run_file(topo: Topology, bundle, path: str) -> RunResult:
    """Redo one rate's summary from its ``run.json`` and records (``edge-agent report``)."""
    with open(path, "r", encoding="utf-8") as f:
        obj = json.load(f)
    d = os.path.dirname(path)
    records = {s: os.path.join(d, p) for s, p in obj["records"].items()}
    if obj.get("kind") == "fleet":
        recs = [r for p in records.values() for r in read_records(p)]
        return summarise_fleet(topo, obj["policy"], obj["rate"], recs, obj["duration_s"])
    return summarise_rate(topo, bundle, bundle_stages(bundle), obj["policy"], obj["rate"],
                          records, obj["expected"], obj["stats"], obj["duration_s"],
                          obj["load_s"])


def write_cdf_plot(path: str, runs: List[PastRun]) -> str:
    """Delay CDF per policy and run: one panel per policy, one line per (run, rate)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(r.policy for run in runs for r in run.results))
    fig, axes = plt.subplots(1, len(policies), figsize=(4.2 * len(policies), 3.4), squeeze=False)
    for ax, pol in zip(axes[0], policies):
        for run in runs:
            for (p, rate), ds in sorted(run.delays_s.items()):
                if p != pol or not ds:
                    continue
                xs = sorted(d * 1000.0 for d in ds)
                ys = [(i + 1) / float(len(xs)) for i in range(len(xs))]
                ax.step(xs, ys, where="post", label="%s @ %g/s" % (run.label, rate))
        ax.set_title(pol)
        ax.set_xlabel("delay (ms)")
        ax.set_ylabel("fraction of tasks")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
