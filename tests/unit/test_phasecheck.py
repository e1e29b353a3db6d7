"""DTO-EE's configuration phases per testbed rate (agent.testbed.phasecheck): read from the
agents' state.json files of a run folder, added up per rate into results.json and the rate's
dtoee_phases.json, and a line under the table when many were cut short."""

import json
import os

import pytest

from agent.testbed.local import node_configs
from agent.testbed.phasecheck import (CUT_SHORT_SHARE, PHASES_FILE, PhaseTally, cut_short_line,
                                      cut_short_lines, lines_under_table, read_phase_counts)
from agent.testbed.report import RunResult
from agent.testbed.topology import parse_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR

CHAIN = ["w1a", "w2a", "w3a", "w4a"]


def _configs(run_dir, policy="dtoee"):
    """Real node configs of a source and a four-worker chain, state kept under ``run_dir``."""
    topo = parse_topology({
        "sources": [{"id": "s1", "share": 1.0}],
        "workers": [{"id": w, "stage": h} for h, w in enumerate(CHAIN, start=1)],
        "links": [{"from": a, "to": b} for a, b in zip(["s1"] + CHAIN, CHAIN)]})
    return node_configs(topo, load_bundle(DEMO_BUNDLE_DIR).path, policy, 1.0, 1.0, run_dir)


def _save(cfg, settled, all_rounds, cut_short):
    """``state.json`` as an agent saves it, with these phase counts."""
    os.makedirs(cfg.state_dir, exist_ok=True)
    with open(os.path.join(cfg.state_dir, "state.json"), "w") as f:
        json.dump({"format_version": 1, "saved_unix_s": 1.0, "state": {
            "policy": "dtoee", "routing": {}, "dtoee_phases": {
                "settled": settled, "all_rounds": all_rounds, "cut_short": cut_short}}}, f)


def _result(policy="dtoee", rate=21.5):
    return RunResult(policy, rate, 10, 10, 0, 0.1, 0.2, 0.9, None, False)


def test_a_rates_phases_are_each_sources_counts_and_each_workers_growth(tmp_path):
    """Rule: a source's counts (a new process each rate, from 0) are its rate's; a worker's
    rate is the growth since its reading after the rate before, or its whole count when one
    went down (a new process after a fault); the totals go to the result and the rate's
    dtoee_phases.json, with each agent's counts and the phase timing."""
    cfgs = _configs(str(tmp_path))
    tally = PhaseTally()
    _save(cfgs["s1"], 0, 1, 7)
    for w in CHAIN:
        _save(cfgs[w], 2, 3, 5)
    first = _result()
    tally.record(first, cfgs, str(tmp_path / "rate-21.5"))
    assert first.dtoee_phases == {"settled": 8, "all_rounds": 13, "cut_short": 27}
    _save(cfgs["s1"], 1, 0, 2)  # the next rate's source, counted from 0
    _save(cfgs["w1a"], 2, 4, 9)  # grew by 0, 1, 4
    _save(cfgs["w2a"], 0, 1, 1)  # lower: restarted, all of it is this rate's
    second = _result(rate=30.0)
    tally.record(second, cfgs, str(tmp_path / "rate-30"))
    assert second.dtoee_phases == {"settled": 1 + 0 + 0, "all_rounds": 0 + 1 + 1,
                                   "cut_short": 2 + 4 + 1}
    doc = json.loads((tmp_path / "rate-30" / PHASES_FILE).read_text())
    assert doc["nodes"]["w1a"] == {"settled": 0, "all_rounds": 1, "cut_short": 4}
    assert doc["nodes"]["w3a"] == {"settled": 0, "all_rounds": 0, "cut_short": 0}
    assert doc["agents"] == 5 and doc["rounds_per_slot"] == cfgs["w1a"].rounds_per_slot
    assert doc["started"] == 2  # the source and the restarted w2a (the first rate: all five)
    assert json.loads((tmp_path / "rate-21.5" / PHASES_FILE).read_text())["started"] == 5
    assert doc["round_interval_s"] == cfgs["w1a"].round_interval_s
    assert second.to_json()["dtoee_phases"] == second.dtoee_phases  # results.json's entry


def test_other_policies_and_agents_without_counts_leave_nothing(tmp_path):
    """Rule: a rate of another policy, or whose agents saved no dtoee_phases (an older agent,
    a damaged state.json), gets no dtoee_phases and no file."""
    cfgs = _configs(str(tmp_path), "mdi-exit")
    for n in cfgs:
        _save(cfgs[n], 0, 0, 9)
    res = _result("mdi-exit")
    PhaseTally().record(res, cfgs, str(tmp_path / "rate-21.5"))
    assert res.dtoee_phases == {} and not (tmp_path / "rate-21.5").exists()
    cfgs = _configs(str(tmp_path / "d"))
    os.makedirs(cfgs["s1"].state_dir)
    with open(os.path.join(cfgs["s1"].state_dir, "state.json"), "w") as f:
        f.write('{"state": {"dtoee_phases": {"settled": -1, "all_rounds": 0}}}')
    assert read_phase_counts(cfgs["s1"].state_dir) is None
    res = _result()
    PhaseTally().record(res, cfgs, str(tmp_path / "d" / "rate-21.5"))
    assert res.dtoee_phases == {} and not (tmp_path / "d" / "rate-21.5").exists()


def _doc(settled, all_rounds, cut_short, **over):
    doc = {"policy": "dtoee", "rate": 21.55, "agents": 27, "cpus": 2, "round_interval_s": 0.05,
           "rounds_per_slot": 20, "dtoee_phases": {"settled": settled, "all_rounds": all_rounds,
                                                   "cut_short": cut_short}}
    doc.update(over)
    return doc


def test_a_line_says_how_many_phases_were_cut_short_from_the_share_on():
    """Rule: a rate with CUT_SHORT_SHARE or more of its phases cut short gets one line with
    the counts and the phase timing of how many agents on how many CPUs (or, with faults,
    that they took neighbours away); below that share, or with no phase, none."""
    line = cut_short_line(_doc(0, 6, 264))
    assert line == ("dtoee at 21.6 tasks/s: 264 of 270 configuration phases cut short (a "
                    "neighbour late or gone; each agent's first after its start left out): "
                    "round_interval_s 0.05 s x rounds_per_slot 20 may be too short for 27 "
                    "agents on 2 CPUs; see docs/cli.md (testbed)")
    assert "faults took neighbours away" in cut_short_line(_doc(0, 6, 264), faults=True)
    assert cut_short_line(_doc(0, 100 - 20, 20)) is not None  # exactly the share
    assert CUT_SHORT_SHARE == 0.2 and cut_short_line(_doc(10, 71, 19)) is None
    assert cut_short_line(_doc(0, 0, 0)) is None


def test_one_cut_short_phase_per_agent_started_in_the_rate_is_left_out():
    """Rule: an agent's first phase after its start is cut short as a rule (its neighbours
    are starting); one per agent started in the rate (``started``) leaves both counts, so a
    short run whose every other phase ran all its rounds gets no line."""
    assert cut_short_line(_doc(2, 32, 9, started=9, agents=9)) is None  # 9 agents, 10 s
    line = cut_short_line(_doc(0, 6, 264, started=27))
    assert line.startswith("dtoee at 21.6 tasks/s: 237 of 243 configuration phases cut short")
    assert cut_short_line(_doc(0, 6, 3, started=27)) is None  # fewer than started: none


def _rate_dir(run_dir, doc):
    from agent.testbed.local import rate_label

    d = run_dir / "dtoee" / rate_label(21.55)  # the folder the testbed writes the rate to
    d.mkdir(parents=True)
    (d / PHASES_FILE).write_text(json.dumps(doc))
    return d


def test_report_reads_the_rates_file_back_and_fills_a_resummarised_result(tmp_path):
    """Rule: from a run folder, a DTO-EE result without dtoee_phases (re-summarised from the
    records) gets its rate file's totals and the same line the testbed printed; results of
    another policy or without a file get neither; the lines follow the faults' table."""
    _rate_dir(tmp_path, _doc(0, 27, 243))
    res, other, none = _result(rate=21.55), _result("mdi-exit", 21.55), _result(rate=5.0)
    lines = lines_under_table(str(tmp_path), [res, other, none])
    assert res.dtoee_phases == {"settled": 0, "all_rounds": 27, "cut_short": 243}
    assert other.dtoee_phases == {} and none.dtoee_phases == {}
    assert lines == [cut_short_line(_doc(0, 27, 243))]


@pytest.mark.parametrize("text", ["{not json", json.dumps(_doc(0, 1, "many")),
                                  json.dumps({"rate": 21.55})])
def test_a_damaged_rate_file_is_one_line_naming_it(tmp_path, text):
    """Rule: a rate's dtoee_phases.json that is not JSON, or has no count for each kind, is
    one line naming the file; the result keeps no counts."""
    d = tmp_path / "dtoee" / "rate-21.55"
    d.mkdir(parents=True)
    (d / PHASES_FILE).write_text(text)
    res = _result(rate=21.55)
    lines = cut_short_lines(str(tmp_path), [res])
    assert len(lines) == 1 and str(d / PHASES_FILE) in lines[0]
    assert lines[0].startswith("dtoee at 21.6 tasks/s: configuration phases not read: ")
    assert res.dtoee_phases == {}


def test_dtoee_does_not_restore_its_phase_counts_so_a_new_source_counts_from_zero():
    """Rule (the per-rate reading of a source rests on it): a DTO-EE policy given saved state
    with dtoee_phases starts its own counts at 0."""
    from tests.unit.test_dtoee_agent_rounds import _fleet, _scenario

    pol, _ = _fleet(_scenario(3, 0.7), 4)["s0"]
    saved = dict(pol.snapshot(), dtoee_phases={"settled": 4, "all_rounds": 5, "cut_short": 6})
    fresh, _ = _fleet(_scenario(3, 0.7), 4)["s0"]
    fresh.restore(saved)
    assert fresh.snapshot()["dtoee_phases"] == {"settled": 0, "all_rounds": 0, "cut_short": 0}
