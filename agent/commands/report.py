"""``edge-agent report``: summarise past testbed or fleet runs again and compare them."""

from __future__ import annotations

import argparse

HELP = "re-summarise past testbed/fleet runs from their records; compare runs side by side"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="a run folder (testbed --out DIR makes DIR/YYYYmmdd-HHMMSS) or a "
                             "--out folder (its latest run)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="write the plots here (default: no plots)")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="also write {\"runs\": [...]} of every run read (with a \"run\" "
                             "field each)")


def run(args: argparse.Namespace) -> int:
    import json
    import os

    from agent.ops.atomic import write_atomic
    from agent.testbed.history import load_run, write_cdf_plot
    from agent.testbed.report import format_table, write_plots

    runs = [load_run(p) for p in args.runs]
    for run in runs:
        print("run %s (topology %s%s)%s" % (run.path, run.info.get("topology"),
                                            ", mdi mode %s" % run.info["mdi_mode"]
                                            if run.info.get("mdi_mode") else "",
                                            "  [in progress]" if run.in_progress else ""))
        print(format_table(run.results))
        print()
    if len(runs) > 1:
        print(compare_table(runs))
    if args.out:
        if len(runs) == 1:
            for path in write_plots(args.out, runs[0].results):
                print("plot: %s" % path)
        print("plot: %s" % write_cdf_plot(os.path.join(args.out, "delay_cdf.png"), runs))
    if args.json:
        everything = [dict(r.to_json(), run=run.path) for run in runs for r in run.results]
        write_atomic(args.json, json.dumps({"runs": everything}, indent=2) + "\n")
    return 0


def compare_table(runs) -> str:
    """Mean (p95) delay in ms and accuracy of each (policy, rate), one column per run."""
    keys = list(dict.fromkeys((r.policy, r.rate) for run in runs for r in run.results))
    head = ["policy", "rate/s"] + [run.label for run in runs]
    rows = [head]
    for pol, rate in keys:
        row = [pol, "%.1f" % rate]
        for run in runs:
            r = next((x for x in run.results if (x.policy, x.rate) == (pol, rate)), None)
            if r is None or r.mean_delay_s is None:
                row.append("-")
            else:
                row.append("%.1f (%.1f) ms, %s, %d/%d" % (
                    r.mean_delay_s * 1e3, (r.p95_delay_s or 0) * 1e3,
                    "-" if r.accuracy is None else "%.3f" % r.accuracy, r.completed, r.created))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["side by side: mean (p95) delay, accuracy, completed/created"]
    for n, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0])]
                               + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
