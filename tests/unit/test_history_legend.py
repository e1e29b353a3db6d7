"""`edge-agent report --out` on a run where a policy has no delay measured (every task lost)
writes its delay CDF plot without a word on stderr: the panel says "no delays measured"
instead of asking matplotlib for a legend of nothing (which warned "No artists with labels
found to put in legend"). Real CLI subprocess, real run folder files, real matplotlib."""

from __future__ import annotations

import json
import subprocess
import sys


def _record(source, i, lost):
    done = None if lost else 100.0 + 0.3 * i + 0.05
    return json.dumps({
        "id": "%s-%d" % (source, i), "source": source, "status": "lost" if lost else "completed",
        "created_mono": 100.0 + 0.3 * i, "finished_mono": done,
        "created_wall": 1e9 + 0.3 * i, "finished_wall": None if lost else 1e9 + 0.3 * i + 0.05,
        "delay_s": None if lost else 0.05, "exit_stage": None if lost else 4,
        "cls": None if lost else 0, "label": 0, "correct": None if lost else True,
        "confidence": None if lost else 0.9, "hops": 0 if lost else 4, "resends": 0,
        "attempts": 1, "worker": None if lost else "w4a",
        "reason": "timeout" if lost else None}) + "\n"


def _run(tmp_path, lost_by_policy):
    """A run folder as `testbed` leaves it: one rate per policy, every task lost or not."""
    run = tmp_path / "20260101-000000"
    run.mkdir()
    (run / "testbed.json").write_text(json.dumps({
        "topology": "default", "mdi_mode": None, "policies": list(lost_by_policy),
        "rates": [1.0], "duration_s": 1.0, "seed": 1, "network": "loopback", "faults": []}))
    for policy, lost in lost_by_policy.items():
        d = run / policy / "rate-1"
        for s, n in (("cam1", 4), ("cam2", 3)):
            (d / s).mkdir(parents=True)
            (d / s / "records.jsonl").write_text("".join(_record(s, i, lost) for i in range(n)))
        (d / "run.json").write_text(json.dumps({
            "kind": "local", "policy": policy, "rate": 1.0,
            "records": {"cam1": "cam1/records.jsonl", "cam2": "cam2/records.jsonl"},
            "expected": {"cam1": 4, "cam2": 3}, "stats": {}, "duration_s": 1.0,
            "load_s": 1.5}))
    return run


def _report(run, out):
    return subprocess.run([sys.executable, "-m", "agent", "report", str(run), "--out", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)


def test_a_policy_without_delays_plots_without_a_legend_warning(tmp_path):
    """Rule: a policy whose every task was lost (no delay measured) gets its CDF panel and the
    report says nothing on stderr, exit 0."""
    proc = _report(_run(tmp_path, {"cf": True}), tmp_path / "plots")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert err == ""
    assert (tmp_path / "plots" / "delay_cdf.png").stat().st_size > 0


def test_a_run_with_and_without_delays_plots_quietly(tmp_path):
    """Rule: one policy with delays (its panel has a legend) beside one without: the plot is
    written and nothing is said on stderr."""
    proc = _report(_run(tmp_path, {"cf": False, "dtoee": True}), tmp_path / "plots")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert err == ""
    assert "plot: %s" % (tmp_path / "plots" / "delay_cdf.png") in proc.stdout.decode()
