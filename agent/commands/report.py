"""``edge-agent report``: summarise past testbed or fleet runs again and compare them.

Output paths are checked before anything is read. A damaged run (its ``testbed.json`` or
``topology.json``) is one error line, exit status 2; a damaged (policy, rate) of a run is a
warning line on stderr naming its file, the rest is reported, and the exit status is 1
(``agent.testbed.history``); so are records lines that are no task record, but their rate is
still summarised (without them). A run folder from before ``topology.json`` gets a warning
line naming the topology file read instead (exit status unchanged).
"""

from __future__ import annotations

import argparse
import os

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
    import sys

    from agent.errors import UsageError
    from agent.ops.atomic import write_atomic
    from agent.testbed.history import load_run, write_cdf_plot
    from agent.testbed.phasecheck import lines_under_table
    from agent.testbed.report import admitted_lines, error_lines, format_table, write_plots
    from agent.testbed.runtopo import settings_warning

    check_outputs(args.out, args.json)  # before any work: a wrong path fails at once
    check_json_not_an_input(args.json, args.runs)
    runs = [_load(p, load_run) for p in args.runs]
    seen = {}
    for given, run in zip(args.runs, runs):  # `latest` and its target are one run too
        where = os.path.realpath(run.path)
        if where in seen:
            raise UsageError("%s: the same run as %s, given twice" % (given, seen[where]))
        seen[where] = given
    skipped = 0
    for run in runs:
        for note in run.notes:
            print("edge-agent report: warning: %s" % " ".join(note.split()), file=sys.stderr)
        for why in run.skipped:
            print("edge-agent report: warning: %s; this (policy, rate) is left out"
                  % " ".join(why.split()), file=sys.stderr)
        for why in run.damaged:
            print("edge-agent report: warning: %s" % " ".join(why.split()), file=sys.stderr)
        skipped += len(run.skipped) + len(run.damaged)
        print("run %s (%s%s)%s" % (run.path, "submit to %s" % run.info.get("endpoint")
                                   if run.info.get("kind") == "submit" else
                                   "topology %s" % run.info.get("topology"),
                                   ", mdi mode %s" % run.info["mdi_mode"]
                                   if run.info.get("mdi_mode") else "",
                                   "  [in progress]" if run.in_progress else
                                   "  [interrupted: %d of %d (policy, rate) done]"
                                   % (len(run.results), run.planned)
                                   if run.interrupted else ""))
        print(format_table(run.results))
        for line in admitted_lines(run.results) + error_lines(run.results):
            print(line)  # errors: what the sources said of inputs they refused (fleet mode)
        for line in lines_under_table(run.path, run.results):  # as the testbed printed them
            print(line)
        print()
    warning = settings_warning(runs)  # side by side is for one setting under changed code
    if warning:
        print("edge-agent report: warning: " + warning, file=sys.stderr)
    if len(runs) > 1:
        print(compare_table(runs))
    try:
        if args.out:
            if len(runs) == 1:
                for path in write_plots(args.out, runs[0].results):
                    print("plot: %s" % path)
            print("plot: %s" % write_cdf_plot(os.path.join(args.out, CDF_PLOT), runs))
        if args.json:
            everything = [dict(r.to_json(), run=run.path) for run in runs for r in run.results]
            write_atomic(args.json, json.dumps({"runs": everything}, indent=2) + "\n")
    except OSError as exc:
        raise UsageError("cannot write %s: %s" % (exc.filename or args.out or args.json,
                                                   exc.strerror or exc)) from None
    return 1 if skipped else 0


CDF_PLOT = "delay_cdf.png"


def _load(path: str, load_run):
    """A testbed run folder (``load_run``), or one `submit --out` wrote (its records summarised
    as one row: ``agent.commands.submit_records``)."""
    from agent.commands.submit_records import INFO, load_submit_run, submit_run_dir
    from agent.errors import UsageError
    from agent.testbed.rundir import RUN_INFO

    if os.path.isfile(path):  # a run's own file (tab completion goes one step too far)
        up = os.path.dirname(path) or "."
        raise UsageError("%s: a file, not a run folder; give %s" % (
            path, "its folder, %s" % up if os.path.basename(path) in (RUN_INFO, INFO)
            else "a run folder (DIR/YYYYmmdd-HHMMSS, the one holding %s)" % RUN_INFO))
    found = submit_run_dir(path)
    return load_run(path) if found is None else load_submit_run(found)


def check_outputs(out_dir, json_file) -> None:
    """``--out`` must be a folder (or not exist yet, under a folder) with no folder where a
    plot goes; ``--json`` a file (or not exist yet) in an existing folder. ``UsageError``
    otherwise, before anything is read."""
    import os

    from agent.errors import UsageError
    from agent.ops.files import check_file_slot
    from agent.testbed.report import PLOT_NAMES

    if out_dir:
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise UsageError("--out: %s is a file, not a folder; give a folder for the plots"
                             % out_dir)
        up = os.path.abspath(out_dir)
        while not os.path.exists(up):
            up = os.path.dirname(up)
        if not os.path.isdir(up):
            raise UsageError("--out: %s cannot be made: %s is a file, not a folder"
                             % (out_dir, up))
        for name in tuple(PLOT_NAMES) + (CDF_PLOT,):
            check_file_slot(os.path.join(out_dir, name), "--out")
    if json_file:
        if os.path.isdir(json_file):
            raise UsageError("--json: %s is a folder; give a file name, e.g. %s"
                             % (json_file, os.path.join(json_file, "report.json")))
        check_file_slot(os.path.abspath(json_file), "--json")
        if not os.path.isdir(os.path.dirname(os.path.abspath(json_file))):
            raise UsageError("--json: %s: its folder does not exist" % json_file)


def check_json_not_an_input(json_file, run_dirs) -> None:
    """``--json`` must not name a file of a run given (its ``testbed.json``, a ``run.json``,
    a records file...): the report would be written over what it was made from, and the run
    could not be read again. An existing file in a run folder is taken only when it holds a
    report's own output (``{"runs": ...}``, as an earlier ``--json`` left it); ``UsageError``
    otherwise, before anything is read."""
    from agent.errors import UsageError

    if not json_file or not os.path.isfile(json_file):
        return
    target = os.path.realpath(json_file)
    for given in run_dirs:
        folders = [os.path.realpath(given)]
        if os.path.isdir(os.path.join(given, "latest")):  # a --out folder: its latest run
            folders.append(os.path.realpath(os.path.join(given, "latest")))
        if any(target.startswith(f + os.sep) for f in folders) and not _report_output(target):
            raise UsageError("--json: %s is a file of run %s, which report reads; write the "
                             "report to a new file, e.g. %s" % (
                                 json_file, given, os.path.join(given, "report.json")))


def _report_output(path: str) -> bool:
    """Whether ``path`` begins as a ``--json`` output does (an object whose first key is
    ``runs``); only its first bytes are read (a records file may be large)."""
    import re

    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:  # unreadable: not known to be a report's; refused as a run's file
        return False
    return re.match(br'\s*\{\s*"runs"\s*:', head) is not None


def compare_table(runs, plus_minus=None) -> str:
    """Mean delay ± its 95% interval (p95) in ms and accuracy of each (policy, rate), one
    column per run; ``plus_minus`` as ``format_table``'s."""
    import sys

    from agent.testbed.spread import mean_ms_cell, plus_minus_for

    pm = plus_minus if plus_minus is not None else plus_minus_for(sys.stdout)
    keys = list(dict.fromkeys((r.policy, r.rate) for run in runs for r in run.results))
    labels = [run.label for run in runs]
    if len(set(labels)) < len(labels):  # runs of one name in two --out folders: say which
        labels = [os.path.relpath(run.path) for run in runs]
    head = ["policy", "rate/s"] + labels
    rows = [head]
    for pol, rate in keys:
        row = [pol, "%.1f" % rate]
        for run in runs:
            r = next((x for x in run.results if (x.policy, x.rate) == (pol, rate)), None)
            if r is None or r.mean_delay_s is None:
                row.append("-")
            else:
                row.append("%s (%.1f) ms, %s, %d/%d%s" % (
                    mean_ms_cell(r.mean_delay_s, r.mean_delay_ci_s, pm), (r.p95_delay_s or 0) * 1e3,
                    "-" if r.accuracy is None else "%.3f" % r.accuracy, r.completed, r.created,
                    "".join(", %d %s" % (n, what) for n, what in (
                        (r.rejected, "rejected"), (r.error, "error"), (r.lost, "lost")) if n)))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["side by side: mean%s95%% interval (p95) delay, accuracy, completed/created (and "
             "the rejected, error and lost, if any)" % pm]
    for n, row in enumerate(rows):
        lines.append("  ".join([row[0].ljust(widths[0])]
                               + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
