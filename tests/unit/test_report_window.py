"""`edge-agent report` gives the testbed's model and fifo sim columns again: the window the
testbed read after the warm-up is kept in each rate's folder (``window.json``), and a folder
without one is reported over the whole run with the line that says so
(``agent.testbed.summary_window``). The state files are named once (``agent.ops.state``), and
the testbed's least task rate has one home (``agent.testbed.bounds``)."""

from __future__ import annotations

import ast
import json
import os
import pathlib

import pytest

from agent.ops.state import RECORDS_FILE, STATS_FILE
from agent.testbed.asrun import applied_links
from agent.testbed.bounds import MIN_TASK_RATE_TASKS_S, TASK_RATE_RANGE_TEXT
from agent.testbed.driver import load_bundle_for
from agent.testbed.history import summarise_run_file
from agent.testbed.local import bundle_stages
from agent.testbed.report import AFTER_WARMUP, WHOLE_RUN, format_table
from agent.testbed.runtopo import run_topology
from agent.testbed.summary_window import WINDOW_FILE, WindowSnapshot
from agent.testbed.topology import parse_topology
from tests.unit.test_report_damaged import _report, make_run
from tests.unit.test_testbed_model_window import (STAGES, WARMUP_S, Clock, record, result,
                                                  stats, topology_obj, write)

AGENT_DIR = pathlib.Path(__file__).resolve().parents[2] / "agent"


def _sends(topo, per_successor):
    """{node: stats} with ``sent_to_<successor>`` counters given by ``per_successor(k)`` for
    each node's k-th successor."""
    return {n: stats(n, **{"sent_to_" + l.dst: per_successor(k)
                           for k, l in enumerate(topo.successors(n))})
            for n in topo.node_ids()}


def _testbed_window(run, rate=1.0):
    """What the testbed does for one local rate of ``run`` (make_run's folder): read every
    node's stats.json once after the warm-up (every successor sent to once), let the load go
    on (only each node's first successor sent to, 5 more), summarise the rate, then apply the
    reading. Returns the result the testbed printed."""
    topo, _ = run_topology(str(run), "default")
    topo = applied_links(topo, None)
    bundle = load_bundle_for(topo)
    policy_dir = run / "cf"
    clock = Clock(100.0)  # the records' first task is created at 100.0 (make_run)
    snap = WindowSnapshot(topo, bundle_stages(bundle), str(policy_dir), clock=clock)
    for n, st in _sends(topo, lambda k: 1).items():
        write(str(policy_dir / n / STATS_FILE), st)
    snap.tick(0, "load")
    clock.t = 100.0 + topo.warmup_s + snap.interval
    snap.tick(0, "load")
    rate_dir = policy_dir / ("rate-%g" % rate)
    for n, st in _sends(topo, lambda k: 6 if k == 0 else 1).items():
        write(str((rate_dir if n in ("cam1", "cam2") else policy_dir) / n / STATS_FILE), st)
    r = summarise_run_file(topo, bundle, str(rate_dir / "run.json"))
    snap.apply(0, r)
    return r


def test_report_prints_the_model_columns_and_routing_the_testbed_printed(tmp_path, capsys):
    """Rule: a rate whose testbed read the counters after the warm-up is reported with the same
    routing, model and fifo sim columns (``after warm-up``), not the whole run's; a rate
    without that reading is reported over the whole run, and a line names it."""
    run = make_run(tmp_path)
    printed = _testbed_window(run)
    assert printed.model_window == AFTER_WARMUP and printed.model_delay_s is not None
    assert (run / "cf" / "rate-1" / WINDOW_FILE).is_file()
    assert printed.routing["cam1"] == {"w1a": 1.0, "w1b": 0.0}
    rc, out, err = _report(capsys, run, "--json", run / "r.json")
    assert rc == 0 and err == []
    rows = {r["rate"]: r for r in json.loads((run / "r.json").read_text())["runs"]}
    got = rows[1.0]
    assert got["model_window"] == AFTER_WARMUP
    assert (got["routing"], got["model_delay_s"], got["fifo_sim_delay_s"]) == (
        printed.routing, printed.model_delay_s, printed.fifo_sim_delay_s)
    assert format_table([printed], "+-").splitlines()[2] in out.splitlines()
    assert rows[2.0]["model_window"] == WHOLE_RUN  # no window.json in rate-2
    assert rows[2.0]["routing"]["cam1"] == {"w1a": 0.5, "w1b": 0.5}
    whole = [l for l in out.splitlines() if "warm-up included" in l]
    assert len(whole) == 1 and "cf@2/s" in whole[0] and "cf@1/s" not in whole[0]


def test_a_run_folder_without_window_files_is_reported_over_the_whole_run_and_says_so(
        tmp_path, capsys):
    """Rule: a run folder from before the window file has ``model_window`` "whole run" in
    --json (it had "") and the line under the table naming every such (policy, rate)."""
    run = make_run(tmp_path)
    rc, out, _ = _report(capsys, run, "--json", run / "r.json")
    assert rc == 0
    assert [r["model_window"] for r in json.loads((run / "r.json").read_text())["runs"]] == [
        WHOLE_RUN, WHOLE_RUN]
    assert any("warm-up included" in l and "cf@1/s, cf@2/s" in l for l in out.splitlines())


@pytest.mark.parametrize("text,says", [
    ("[1]", "stats: must be an object"),
    ('{"stats": {"cam1": {"counters": {"sent_to_w1a": "x"}}}}',
     "stats.cam1.counters: must be an object {name: number} or null, got {'sent_to_w1a'"),
    ('{"stats": {}, "stats": {}}', "stats"),
    ('{"stats": {}}', "stats: no counters for cam1, cam2"),
    ("NEGATIVE", "stats.cam1.counters.sent_to_w1a: must be in [0, inf), got -5"),
    ("NULL", "stats: no counters for w1a"),
    ("HUGE", "cannot route by it ('routing: probabilities of w1a sum to 0"),
])
def test_a_damaged_window_file_is_named_and_its_rate_reported_over_the_whole_run(
        tmp_path, capsys, text, says):
    """Rule: a window.json that is not an object of {node: {counters, routing}} of numbers,
    lacks a node of the topology or holds a count below 0 is a warning line naming it (exit
    1); its rate is still reported, over the whole run."""
    run = make_run(tmp_path)
    path = run / "cf" / "rate-1" / WINDOW_FILE
    if text == "NEGATIVE":  # every node, as the testbed writes them, one count below 0
        topo, _ = run_topology(str(run), "default")
        window = {n: {"counters": st["counters"], "routing": {}}
                  for n, st in _sends(topo, lambda k: 1).items()}
        window["cam1"]["counters"]["sent_to_w1a"] = -5
        text = json.dumps({"model_window": AFTER_WARMUP, "stats": window})
    elif text in ("NULL", "HUGE"):  # a node's entry null; counts whose sum no float holds
        topo, _ = run_topology(str(run), "default")
        window = {n: {"counters": st["counters"], "routing": {}}
                  for n, st in _sends(topo, lambda k: 1).items()}
        if text == "NULL":
            window["w1a"] = None
        else:
            window["w1a"]["counters"].update(sent_to_w2a=1e308, sent_to_w2b=1e308)
        text = json.dumps({"model_window": AFTER_WARMUP, "stats": window})
    path.write_text(text)
    rc, out, err = _report(capsys, run, "--json", run / "r.json")
    assert rc == 1 and len(err) == 1 and str(path) in err[0] and says in err[0], err
    assert "model and fifo sim are over the whole run" in err[0]
    rows = json.loads((run / "r.json").read_text())["runs"]
    assert [r["model_window"] for r in rows] == [WHOLE_RUN, WHOLE_RUN]


def test_the_window_reading_takes_the_warm_up_start_from_task_records_only(tmp_path):
    """Rule: a records line that is no task record (here an object with a ``created_mono`` of
    50 s but no id) does not move the warm-up's start: a reading within one status interval
    of the real warm-up's end is not trusted, as the summary would not count that line."""
    topo = parse_topology(topology_obj())
    clock = Clock(100.0)
    snap = WindowSnapshot(topo, STAGES, str(tmp_path), clock=clock)
    for n in ("s1", "w1", "w2"):
        write(os.path.join(str(tmp_path), n, STATS_FILE), stats(n, sent_to_w1=1, sent_to_w2=1))
    snap.tick(0, "load")
    clock.t = 100.0 + WARMUP_S + 1.0
    snap.tick(0, "load")
    rate_dir = tmp_path / "rate-4"
    write(str(rate_dir / "s1" / STATS_FILE), stats("s1", sent_to_w1=9, sent_to_w2=1))
    lines = [json.dumps({"created_mono": 50.0, "note": "no task"})]
    lines += [json.dumps(record(i, 101.5 + 0.5 * i)) for i in range(10)]
    (rate_dir / "s1" / RECORDS_FILE).write_text("\n".join(lines) + "\n")
    r = result()
    snap.apply(0, r)
    assert r.model_window == WHOLE_RUN and not (rate_dir / WINDOW_FILE).exists()


def _literals(path):
    """Every string constant of a module that is no docstring."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and isinstance(n.value, str) and id(n) not in docs]


def test_the_state_files_are_named_only_in_agent_ops_state():
    """Rule: "stats.json" and "records.jsonl" are spelled once, in agent.ops.state
    (STATS_FILE, RECORDS_FILE); every other module imports the name."""
    named = {}
    for path in sorted(AGENT_DIR.rglob("*.py")):
        for text in _literals(path):
            if text in (STATS_FILE, RECORDS_FILE):
                named.setdefault(text, []).append(str(path.relative_to(AGENT_DIR)))
    assert named == {STATS_FILE: ["ops/state.py"], RECORDS_FILE: ["ops/state.py"]}


def test_a_run_rate_below_the_least_task_rate_is_refused_naming_the_range(tmp_path, capsys):
    """Rule: a testbed.json rate below MIN_TASK_RATE_TASKS_S (tasks/s, not the wire's least
    FLOP/s or bytes/s rate) is refused naming TASK_RATE_RANGE_TEXT; the least rate itself is
    a rate."""
    run = make_run(tmp_path)
    info = json.loads((run / "testbed.json").read_text())
    info["rates"] = [MIN_TASK_RATE_TASKS_S]
    (run / "testbed.json").write_text(json.dumps(info))
    assert _report(capsys, run)[0] == 0
    info["rates"] = [MIN_TASK_RATE_TASKS_S / 2]
    (run / "testbed.json").write_text(json.dumps(info))
    rc, _, err = _report(capsys, run)
    assert rc == 2 and "rates: must be a list of rates " + TASK_RATE_RANGE_TEXT in err[0]
