"""Testbed output that survives: a fresh folder per run with a latest link, a lock while in
use, the dead agent's last error line; simulate's columns and one-rate plot."""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.testbed.rundir import RunLock, in_use, new_run_dir


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    """Two runs under one --out never share a folder; latest points to the newer one."""
    a = new_run_dir(str(tmp_path), clock=lambda: 1.7e9)
    b = new_run_dir(str(tmp_path), clock=lambda: 1.7e9)
    assert a != b and os.path.basename(b) == os.path.basename(a) + "-2"
    assert os.path.realpath(str(tmp_path / "latest")) == b


def test_a_run_folder_in_use_is_locked(tmp_path):
    """A second lock on a run folder in use is refused with one line; released, it is free."""
    run = new_run_dir(str(tmp_path))
    with RunLock(run):
        assert in_use(run)
        with pytest.raises(UsageError, match="in use by another testbed"):
            RunLock(run)
    assert not in_use(run)


def test_a_dead_agent_is_reported_with_its_last_error_line(tmp_path):
    """The error line of an agent's log is picked, not the routine status lines after it."""
    from agent.testbed.procs import AgentProcess

    log = tmp_path / "a.log"
    log.write_text("2026 INFO agent.run: serving\n"
                   "2026 ERROR agent.node.loop: inference failed: boom\n"
                   "2026 INFO agent.node.loop: worker w1 alive=2 queue=0/0 dropped=0\n")
    p = AgentProcess.__new__(AgentProcess)
    p.log_path = str(log)
    assert p.last_error() == "2026 ERROR agent.node.loop: inference failed: boom"
    log.write_text("Traceback (most recent call last):\n  File \"x\", line 1\n"
                   "ValueError: bad thing\n")
    assert p.last_error() == "ValueError: bad thing"


def test_simulate_prints_unfinished_and_plots_a_single_rate(tmp_path, capsys):
    """With one rate, simulate still writes the rate plot (and its title says why it is one
    point); the table's columns are created, completed and unfinished, as results.json has."""
    from agent.scenario.format import save_scenario
    from agent.scenario.paper import paper_scenario

    sc = paper_scenario("paper-bert", seed=3, num_sources=6, num_samples=400)
    path = save_scenario(str(tmp_path / "bert.json"), sc)[0]
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", path, "--policies", "cf", "--rates", "3",
                 "--duration", "6", "--warmup", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    head = text.splitlines()[0].split()
    assert ["created", "completed", "unfinished"] == head[head.index("created"):
                                                          head.index("unfinished") + 1]
    row = json.loads((out / "results.json").read_text())["rates"][0]
    cells = text.splitlines()[1].split()
    assert str(row["tasks"]) in cells and str(row["unfinished"]) in cells
    assert (out / "bert_vs_rate.png").exists()
