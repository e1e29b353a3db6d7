"""Ctrl-C while the testbed writes its final results (every run finished, the plots and
results.json being written) is an interrupt like any other: it ended the command with status
130 and not a word, and left results.json saying the run was incomplete."""

from __future__ import annotations

import json
import os
import signal

from agent.cli import main
from agent.testbed import report
from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology


def test_ctrl_c_during_the_final_save_says_what_finished_and_keeps_it_complete(
        tmp_path, capsys, monkeypatch):
    """Rule: SIGINT while the last plots are written exits 130 with the `interrupted:` line
    counting every run as finished, and results.json holds them all with complete: true."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo, _ = write_topology(tmp_path, bundle)
    real_plots = report.write_plots
    calls = []

    def plots_then_ctrl_c(directory, runs):
        calls.append(len(runs))
        written = real_plots(directory, runs)
        if len(calls) == 2:  # the final save (the first came after the only rate)
            os.kill(os.getpid(), signal.SIGINT)
        return written

    monkeypatch.setattr(report, "write_plots", plots_then_ctrl_c)
    out = tmp_path / "out"
    rc = main(["testbed", "--topology", topo, "--policies", "cf", "--rates", "5",
               "--duration", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert calls[:2] == [1, 1]  # then written again, whole, after the interrupt
    assert rc == 130, err[-2000:]
    assert "interrupted: 1 of 1 runs finished, kept in" in err
    res = json.loads((out / "latest" / "results.json").read_text())
    assert res["complete"] is True and len(res["runs"]) == 1 and res["partial"] == []
