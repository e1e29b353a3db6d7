"""A worker's counters in run.json count every process it ran as during a rate.

A fault that kills or restarts a worker starts a new process whose counters begin at zero.
run.json's per-worker counters (behind routing, link utilisation, model and simulator columns)
are the sum over the worker's processes: what a gracefully stopped process wrote at its end,
what a killed one last wrote, and what the running one has now; a rate's share never goes
negative when the process changed since the previous rate. Real agent processes on loopback.
"""

import collections
import glob
import json
import os

from agent.cli import main
from tests.integration.test_testbed_netns import _faulty_topology


def _answers(rate_dir):
    """Completed tasks per answering worker, from the rate's records."""
    got = collections.Counter()
    for path in glob.glob(os.path.join(rate_dir, "cam", "records.jsonl")):
        with open(path) as f:
            for line in f:
                rec = json.loads(line)
                if rec["status"] == "completed":
                    got[rec["worker"]] += 1
    return got


def _answered(counters):
    return counters.get("exited", 0) + counters.get("finished", 0)


def test_counters_of_a_killed_and_a_restarted_worker_sum_over_their_processes(tmp_path, capsys):
    """Rule: with ``fast`` killed for 1 s and ``w2`` restarted in each of two rates, no counter
    of run.json is negative; w2 (stopped gracefully: its last write is whole) counts at least
    every answer the records have from it; and the tasks ``fast`` took in over both rates are
    at least what its two killed processes last wrote (kept next to its stats.json), at most
    that plus what its last process wrote when it stopped."""
    topo = _faulty_topology(tmp_path, [
        {"at": 2.0, "duration": 1.0, "kind": "kill", "target": "fast"},
        {"at": 1.5, "kind": "restart", "target": "w2"}], status_interval_s=0.25)
    out = tmp_path / "out"
    rc = main(["testbed", "--topology", topo, "--policies", "cf", "--rates", "8,10",
               "--duration", "3", "--out", str(out), "--no-plots"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-2000:]
    policy = out / "latest" / "cf"
    took = 0
    for rate in ("rate-8", "rate-10"):
        stats = json.loads((policy / rate / "run.json").read_text())["stats"]
        for node, st in stats.items():
            assert all(v >= 0 for v in st["counters"].values()), (rate, node, st["counters"])
        answers = _answers(str(policy / rate))
        assert answers["w2"] > 0
        assert _answered(stats["w2"]["counters"]) >= answers["w2"], (rate, answers)
        took += stats["fast"]["counters"].get("tasks_in", 0)
    kept = [json.loads(open(p).read())["counters"].get("tasks_in", 0)
            for p in glob.glob(str(policy / "fast" / "stats.*.json"))]
    assert len(kept) == 2 and min(kept) > 0  # one killed process per rate
    # fast's last process, started again 1 s after its kill, near the last rate's end: stopped
    # while still starting on a loaded machine, it wrote no stats.json and took no task
    final = policy / "fast" / "stats.json"
    last = json.loads(final.read_text())["counters"].get("tasks_in", 0) if final.exists() else 0
    assert sum(kept) <= took <= sum(kept) + last, (kept, last, took)
