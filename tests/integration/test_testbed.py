"""The testbed end to end: real agent processes on loopback, real sockets and engines.

Kept short (one policy, one rate, a few seconds of load) so the suite stays lean; the full
default run is the README's main-job command.
"""

import json
import os
import re
import time

from agent.cli import main
from tests.integration.agent_cluster import build_two_stage_bundle


def write_topology(tmp_path, bundle_dir):
    """Two stage-1 workers (3x apart in capacity, behind links 4x apart), one worker per later
    stage."""
    from engines.bundle import load_bundle

    stages = load_bundle(bundle_dir).stages
    h = len(stages)
    # capacities in tasks/s of each stage's FLOP: even a policy that sends every task to the
    # slow worker keeps it below half load at the test's 20 tasks/s
    workers = [{"id": "fast", "stage": 1, "emulate_capacity_flops": 120.0 * stages[0].flops},
               {"id": "slow", "stage": 1, "emulate_capacity_flops": 40.0 * stages[0].flops}]
    links = [{"from": "cam", "to": "fast", "rate_bytes_s": 5e4},
             {"from": "cam", "to": "slow", "rate_bytes_s": 2e5}]
    prev = ["fast", "slow"]
    for st in range(2, h + 1):
        wid = "w%d" % st
        workers.append({"id": wid, "stage": st,
                        "emulate_capacity_flops": 100.0 * stages[st - 1].flops})
        links += [{"from": p, "to": wid, "rate_bytes_s": 1e6} for p in prev]
        prev = [wid]
    topo = {
        "bundle": bundle_dir,
        "warmup_s": 0.5,
        "slot_s": 2.0,
        "agent": {"replay_path": os.path.join(os.path.dirname(bundle_dir), "replay.npz"),
                  "warmup_runs": 1, "timing_runs": 3, "heartbeat_interval_s": 0.2,
                  # a just-started source's first answer is sometimes re-issued: keep it short
                  "result_timeout_s": 5.0,
                  # stats.json rewritten each second: the testbed waits one such period after
                  # each rate for the workers' counters (5 s with the default)
                  "status_interval_s": 1.0},
        "sources": [{"id": "cam", "share": 1.0}],
        "workers": workers,
        "links": links,
    }
    path = tmp_path / "topology.json"
    path.write_text(json.dumps(topo))
    return str(path), len(workers)


def run_serving(out: str, proc, timeout_s: float) -> str:
    """The run folder of a `testbed --out OUT --policies cf` started as ``proc``, once its
    source ``cam`` has recorded a task ("" when ``proc`` ended or ``timeout_s`` passed first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        runs = sorted(d for d in os.listdir(out) if d != "latest") if os.path.isdir(out) else []
        run = os.path.join(out, runs[0]) if runs else ""
        recs = os.path.join(run, "cf", "cam", "records.jsonl")
        if run and os.path.exists(recs) and os.path.getsize(recs) > 0:
            return run
        time.sleep(0.1)
    return ""


def test_testbed_run_loses_nothing_and_every_task_has_a_record(tmp_path, capsys):
    """One short DTO-EE run: every created task completes (0 lost), each source's records file
    holds one line per task, and the JSON object carries the documented fields with the model's
    delay for the routing used."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, num_workers = write_topology(tmp_path, bundle)
    out = tmp_path / "out"
    result = tmp_path / "result.json"
    rc = main(["testbed", "--topology", topo, "--policies", "dtoee", "--rates", "20",
               "--duration", "2", "--out", str(out), "--json", str(result), "--no-plots"])
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, captured.err[-2000:]
    runs = json.loads(result.read_text())["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["policy"] == "dtoee" and run["rate"] == 20.0
    assert run["created"] > 0 and run["lost"] == 0 and run["completed"] == run["created"]
    assert run["capacities_emulated"] is True
    assert run["mean_delay_s"] > 0 and run["p95_delay_s"] >= run["mean_delay_s"] * 0.5
    assert run["model_delay_s"] is not None and run["model_delay_s"] > 0
    with open(out / "latest" / "dtoee" / "rate-20" / "cam" / "records.jsonl") as f:
        records = [json.loads(line) for line in f if line.strip()]
    assert len(records) == run["created"]
    assert {r["status"] for r in records} == {"completed"}
    assert len({r["id"] for r in records}) == len(records)
    assert "emulated: capacities of %d/%d workers" % (num_workers, num_workers) in printed


def test_an_agent_that_fails_to_start_is_named_in_one_line(tmp_path, capsys):
    """A worker that cannot start (the calibration profile its config names is missing: the
    testbed's own checks before the run do not read it) stops the testbed with one line naming
    the agent and its log, and no agent process is left behind. (A missing replay set is
    refused before any agent starts: tests/unit/test_testbed_parts.py.)"""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    obj = json.loads(open(topo).read())
    obj["agent"]["capacity_profile"] = str(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(obj))
    rc = main(["testbed", "--topology", str(bad), "--policies", "fixed", "--rates", "5",
               "--duration", "1", "--out", str(tmp_path / "out"), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert re.search(r"agent (fast|slow|w\d)\b", err[-1]), err
    assert "exited with status 78" in err[-1]
    assert "missing.json" in err[-1]  # the agent's own last log line says why
