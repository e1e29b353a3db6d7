"""A local DTO-EE testbed run keeps how its agents' configuration phases ended, per rate: in
results.json and the rate folder's dtoee_phases.json, which ``report`` reads back (real agent
processes on loopback, demo bundle)."""

from __future__ import annotations

import json

import pytest

from agent.cli import main

CHAIN = ["w1a", "w2a", "w3a", "w4a"]


@pytest.mark.slow
def test_a_dtoee_rate_has_its_phase_counts_in_results_json_and_report_reads_them_back(
        tmp_path, capsys):
    """Rule: after a DTO-EE rate the testbed puts the settled / all_rounds / cut_short totals
    of its agents' state.json counts into results.json and the rate folder's
    dtoee_phases.json (each agent's counts, the agents started in the rate); report --json
    gives the same totals from the run folder."""
    topo = {"warmup_s": 2.0, "slot_s": 2.0, "sources": [{"id": "s1", "share": 1.0}],
            "workers": [{"id": w, "stage": h} for h, w in enumerate(CHAIN, start=1)],
            "links": [{"from": a, "to": b} for a, b in zip(["s1"] + CHAIN, CHAIN)],
            # the testbed waits one status period after the rate (5 s by default)
            "agent": {"status_interval_s": 1.0}}
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(topo))
    out = tmp_path / "out"
    rc = main(["testbed", "--topology", str(path), "--policies", "dtoee", "--rates", "2",
               "--duration", "3", "--out", str(out), "--no-plots"])
    text = capsys.readouterr().out
    assert rc == 0, text
    run = json.loads((out / "latest" / "results.json").read_text())["runs"][0]
    phases = run["dtoee_phases"]
    assert set(phases) == {"settled", "all_rounds", "cut_short"} and sum(phases.values()) > 0
    doc = json.loads((out / "latest" / "dtoee" / "rate-2" / "dtoee_phases.json").read_text())
    assert doc["dtoee_phases"] == phases and set(doc["nodes"]) == {"s1"} | set(CHAIN)
    assert doc["started"] == 5 and doc["agents"] == 5  # the first rate: every agent started
    assert sum(c["cut_short"] for c in doc["nodes"].values()) == phases["cut_short"]
    rc = main(["report", str(out / "latest"), "--json", str(tmp_path / "report.json")])
    assert rc == 0, capsys.readouterr()
    again = json.loads((tmp_path / "report.json").read_text())["runs"][0]
    assert again["dtoee_phases"] == phases
