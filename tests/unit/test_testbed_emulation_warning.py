"""A worker whose emulated capacity is above what its engine measured is named under the
testbed's ``emulated:`` line and in results.json, from the line its log holds."""

import json

from agent.testbed.report import admitted_lines, write_json
from agent.testbed.summary_capacity import capacity_warning_lines, unreachable_capacities
from agent.testbed.topology import parse_topology
from tests.unit.test_testbed_model_window import result, topology_obj

# agent.node.capacity's own words, as a worker logs them at start
LOG = ("2026-01-01 00:00:00,000 WARNING agent.node.capacity: emulate_capacity_flops 1e+15 is "
       "above this machine's measured 2.27e+10 FLOP/s; the emulated speed cannot be reached\n")


def test_unreachable_worker_is_named_with_its_measured_capacity(tmp_path):
    """Rule: only the workers whose log says so are named, with both capacities."""
    topo = parse_topology(topology_obj())
    (tmp_path / "w2.log").write_text("INFO started\n" + LOG)
    (tmp_path / "w1.log").write_text("INFO capacity 2e+06 FLOP/s EMULATED\n")
    found = unreachable_capacities(topo, str(tmp_path))
    assert found == {"w2": {"emulated_flops": 1e15, "measured_flops": 2.27e10}}
    lines = capacity_warning_lines([found, {}])
    assert len(lines) == 1 and lines[0].startswith("WARN ")
    assert "w2 1e+15 FLOP/s (measured 2.27e+10)" in lines[0]


def test_no_log_or_no_warning_gives_no_line(tmp_path):
    """Rule: a worker without a log (a fleet's) or without the warning adds nothing."""
    topo = parse_topology(topology_obj())
    assert unreachable_capacities(topo, str(tmp_path)) == {}
    assert capacity_warning_lines([{}]) == []


def test_warning_printed_under_emulated_and_kept_in_results(tmp_path):
    """Rule: the lines under ``emulated:`` start with the WARN, once for all runs, and each
    run's results.json entry holds what it found."""
    found = {"w2": {"emulated_flops": 1e15, "measured_flops": 2.27e10}}
    runs = [result(rate) for rate in (4.0, 8.0)]
    for r in runs:
        r.capacity_unreachable = dict(found)
    lines = admitted_lines(runs)
    assert sum(1 for line in lines if line.startswith("WARN ")) == 1
    path = tmp_path / "results.json"
    write_json(str(path), runs)
    assert json.loads(path.read_text())["runs"][0]["capacity_unreachable"] == found
