"""Testbed output that survives: two testbeds on one --out each get their own folder and
correct counts; Ctrl-C after the first (policy, rate) keeps its results and plot. Real agent
processes on loopback, run as the `edge-agent testbed` command a user types."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology
from tests.unit.processes import pids_with

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _testbed(topo, out, rates, *extra, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    return subprocess.Popen([sys.executable, "-m", "agent", "testbed", "--topology", topo,
                             "--policies", "cf", "--rates", rates, "--duration", "2",
                             "--out", out] + list(extra), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, cwd=cwd)


def _runs(out):
    return sorted(d for d in os.listdir(out) if d != "latest")


def test_two_testbeds_on_one_out_folder_keep_apart(tmp_path):
    """Started together with the same --out, both finish (0 lost) in folders of their own, and
    each run's records hold exactly the tasks its results count."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    procs = [_testbed(topo, out, "10") for _ in range(2)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-2000:]
    runs = _runs(out)
    assert len(runs) == 2
    for name in runs:
        run = json.loads(open(os.path.join(out, name, "results.json")).read())
        assert run["complete"] is True
        r = run["runs"][0]
        assert r["created"] > 0 and r["lost"] == 0
        with open(os.path.join(out, name, "cf", "rate-10", "cam", "records.jsonl")) as f:
            assert sum(1 for line in f if line.strip()) == r["created"]


def test_ctrl_c_after_the_first_rate_keeps_its_results_and_plot(tmp_path):
    """SIGINT once the first (policy, rate) is written: exit 130, one line saying what was kept,
    results.json with that run and its plot on disk, and the --json file with the same."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    asked = str(tmp_path / "asked.json")
    p = _testbed(topo, out, "5,10", "--json", asked)
    deadline = time.monotonic() + 300
    results = None
    while time.monotonic() < deadline and p.poll() is None:
        runs = _runs(out) if os.path.isdir(out) else []
        path = os.path.join(out, runs[0], "results.json") if runs else ""
        if path and os.path.exists(path) and json.loads(open(path).read())["runs"]:
            results = path
            break
        time.sleep(0.2)
    assert results is not None, p.communicate()[1][-2000:]
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr[-3000:]
    assert "interrupted: 1 of 2 runs finished, kept in %s" % results in stderr
    run = json.loads(open(results).read())
    assert run["complete"] is False and [r["rate"] for r in run["runs"]] == [5.0]
    assert json.loads(open(asked).read()) == run
    assert os.path.getsize(os.path.join(os.path.dirname(results), "delay_vs_rate.png")) > 0


def test_sigterm_before_any_rate_finished_exits_143_and_says_nothing_was_kept(tmp_path):
    """Rule: SIGTERM is handled as Ctrl-C (agents stopped, one line) but exits 143, and a run
    stopped before any (policy, rate) finished says there is nothing to keep instead of naming
    a results.json that does not exist."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    p = _testbed(topo, out, "5")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        runs = _runs(out) if os.path.isdir(out) else []
        if runs and os.path.isdir(os.path.join(out, runs[0], "cf")):  # its agents start
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 143, stderr[-3000:]
    assert "interrupted: 0 of 1 runs finished, nothing to keep" in stderr, stderr[-3000:]
    assert not os.path.exists(os.path.join(out, _runs(out)[0], "results.json"))


def test_report_redoes_a_run_from_its_folder_alone(tmp_path):
    """Rule: a run whose --topology was relative to the folder the testbed ran in reports the
    numbers the testbed printed from any other folder, even after that file changed: the run
    folder holds the topology it ran (topology.json)."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    fleet, elsewhere = tmp_path / "fleet1", tmp_path / "elsewhere"
    fleet.mkdir()
    elsewhere.mkdir()
    obj = json.loads(open(topo).read())
    (fleet / "topo.json").write_text(json.dumps(obj))
    p = _testbed("topo.json", "runs", "10", "--no-plots", cwd=str(fleet))
    _, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-2000:]
    obj["warmup_s"] = 1.5  # what the file says now, here and in the other folder
    for folder in (fleet, elsewhere):
        (folder / "topo.json").write_text(json.dumps(obj))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    rep = subprocess.run([sys.executable, "-m", "agent", "report", "../fleet1/runs", "--json",
                          "r.json"], cwd=str(elsewhere), env=env, capture_output=True, text=True)
    assert rep.returncode == 0 and rep.stderr == "", rep.stderr
    keys = ("created", "completed", "lost", "mean_delay_s", "p95_delay_s", "accuracy")
    (then,) = json.loads((fleet / "runs" / "latest" / "results.json").read_text())["runs"]
    (now,) = json.loads((elsewhere / "r.json").read_text())["runs"]
    assert {k: now[k] for k in keys} == {k: then[k] for k in keys}


def _agents_under(folder):
    """Pids of processes whose command line names a file under ``folder``."""
    return pids_with(folder)


def test_ctrl_c_to_the_whole_process_group_is_an_interrupt_not_an_agent_crash(tmp_path):
    """Rule: a terminal's Ctrl-C (SIGINT to the testbed's whole process group) reaches the
    testbed alone; it stops its agents itself and exits 130 with the one `interrupted:` line,
    never calling an agent crashed, and leaves no agent behind."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    out = str(tmp_path / "out")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    p = subprocess.Popen([sys.executable, "-m", "agent", "testbed", "--topology", topo,
                          "--policies", "cf", "--rates", "5", "--duration", "8", "--out", out],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, start_new_session=True)
    deadline = time.monotonic() + 300
    started = False
    while time.monotonic() < deadline and p.poll() is None and not started:
        runs = _runs(out) if os.path.isdir(out) else []
        cf = os.path.join(out, runs[0], "cf") if runs else ""
        # the sources' logs appear once every worker is ready: the load is under way
        started = os.path.isdir(cf) and any(n.startswith("cam") and n.endswith(".log")
                                            for n in os.listdir(cf))
        time.sleep(0.1)
    assert started, p.communicate()[1][-2000:]
    time.sleep(0.5)
    agents = [a for a in _agents_under(out) if a != p.pid]
    # whether an agent or the testbed sees the signal first is a race: the groups are not
    # (the load lasts 8 s: it is still under way when the signal comes, even on a slow machine)
    assert agents and p.pid not in [os.getsid(a) for a in agents]
    try:
        os.killpg(p.pid, signal.SIGINT)
    finally:
        _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130, stderr[-3000:]
    assert "interrupted: 0 of 1 runs finished" in stderr, stderr[-3000:]
    assert "exited with status" not in stderr
    assert _agents_under(out) == []
