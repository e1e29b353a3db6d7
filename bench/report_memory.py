"""Wall time and peak memory of ``edge-agent report`` on a long run's records.

Grows a copy of a real testbed run folder to ``--tasks`` task records: each source's
``records.jsonl`` is its own lines again and again, each copy with fresh task ids and its times
moved on by the source's span, so the copy reads as one long run at the same rate (its
``run.json`` expects the grown counts). Then runs ``python -m agent report`` on it under
``/usr/bin/time -v`` and prints its wall time and CPU time (user + system, s) and peak
resident set size (MB)::

    python -m agent testbed --policies cf --rates 60% --duration 3 --no-plots --seed 1 \\
        --out /tmp/rm/run
    python bench/report_memory.py /tmp/rm/run/latest /tmp/rm/big --tasks 300000 \\
        [--json /tmp/rm/report.json] [--out /tmp/rm/plots] [--keep]

``--json`` passes a file to ``report --json`` and ``--out`` a folder to ``report --out`` (the
plots, the delay CDF's included), to compare two versions of the code; ``--keep`` measures the
grown copy as it is (run it with each version in turn, the copy grown once).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time


def grow(src_run: str, dst_run: str, tasks: int) -> int:
    """Copy run folder ``src_run`` to ``dst_run`` with every rate's records replicated up to
    about ``tasks`` task records in all; returns the records written."""
    src_run = os.path.realpath(src_run)
    if os.path.exists(dst_run):
        shutil.rmtree(dst_run)
    shutil.copytree(src_run, dst_run, symlinks=True)
    run_files = []
    for root, _dirs, files in os.walk(dst_run):
        if "run.json" in files and os.path.basename(root).startswith("rate-"):
            run_files.append(os.path.join(root, "run.json"))
    per_rate = max(1, tasks // max(1, len(run_files)))
    written = 0
    for run_file in run_files:
        with open(run_file, encoding="utf-8") as f:
            run = json.load(f)
        d = os.path.dirname(run_file)
        lines = {}
        for sid, rel in run["records"].items():
            with open(os.path.join(d, rel), encoding="utf-8") as f:
                lines[sid] = [json.loads(x) for x in f if x.strip()]
        total = sum(len(v) for v in lines.values()) or 1
        copies = max(1, per_rate // total)
        for sid, recs in lines.items():
            created = [r["created_mono"] for r in recs]
            span_s = (max(created) - min(created) + 1.0) if created else 1.0
            with open(os.path.join(d, run["records"][sid]), "w", encoding="utf-8") as out:
                for k in range(copies):
                    for r in recs:
                        r2 = dict(r, id="%s-%d" % (r["id"], k))
                        for key in ("created_mono", "finished_mono", "created_wall",
                                    "finished_wall"):
                            if isinstance(r2.get(key), float):
                                r2[key] = r2[key] + k * span_s
                        out.write(json.dumps(r2, separators=(",", ":")) + "\n")
            run["expected"][sid] = run["expected"].get(sid, len(recs)) * copies
            written += copies * len(recs)
        with open(run_file, "w", encoding="utf-8") as f:
            json.dump(run, f, indent=1)
    return written


def measure(run_dir: str, json_out: str = "", out_dir: str = "") -> dict:
    """Run ``report`` once on ``run_dir`` under ``/usr/bin/time -v``: wall s, CPU s (user +
    system), peak RSS MB."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "agent", "report", run_dir]
    if json_out:
        cmd += ["--json", json_out]
    if out_dir:
        cmd += ["--out", out_dir]
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    wall_s = time.monotonic() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    # CPU seconds (user + system): steadier than the wall time on a loaded machine
    cpu = [float(v) for v in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", p.stderr)]
    return {"rc": p.returncode, "wall_s": round(wall_s, 2),
            "cpu_s": round(sum(cpu), 2) if len(cpu) == 2 else None,
            "peak_rss_mb": round(int(rss.group(1)) / 1024.0, 1) if rss else None,
            "table": p.stdout}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="a testbed run folder (DIR/latest of testbed --out DIR)")
    ap.add_argument("dst", help="where the grown copy goes (replaced)")
    ap.add_argument("--tasks", type=int, default=300000)
    ap.add_argument("--json", default="", help="report --json FILE")
    ap.add_argument("--out", default="", help="report --out DIR (write the plots too)")
    ap.add_argument("--keep", action="store_true", help="measure dst as it is, do not regrow")
    a = ap.parse_args()
    if not a.keep:
        print("records written: %d" % grow(a.src, a.dst, a.tasks))
    size = sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(a.dst)
               for f in fs if f == "records.jsonl")
    print("records files: %.1f MB" % (size / 1e6))
    m = measure(a.dst, a.json, a.out)
    print(m.pop("table"))
    print(json.dumps(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
