"""Testbed output that survives: a fresh folder per run with a latest link, a lock while in
use, the dead agent's last error line; simulate's columns and one-rate plot."""

from __future__ import annotations

import json
import os
import threading

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


def _outcomes_within(seconds, lock, calls):
    """Run each (name, call) in a thread; {name: its UsageError text, or what else happened}.
    A call still blocked after ``seconds`` (in ``open`` of a FIFO, waiting for a writer) is
    released by opening the FIFO for writing, and reported as "blocked"."""
    out = {}

    def probe():
        for name, call in calls:
            try:
                call()
                out[name] = "no error"
            except UsageError as exc:
                out[name] = str(exc)
            except Exception as exc:  # reported, compared below
                out[name] = repr(exc)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        os.close(os.open(lock, os.O_WRONLY | os.O_NONBLOCK))  # the reader's open returns
        t.join(seconds)
        return {"blocked": True}
    return out


def test_a_fifo_at_the_lock_path_is_refused_without_blocking(tmp_path):
    """RUN/.lock is opened with O_NONBLOCK and must be a regular file: a FIFO there is a
    one-line UsageError naming the path from RunLock and from in_use, at once (in_use's open
    used to block until a writer came, hanging the testbed and its report)."""
    run = new_run_dir(str(tmp_path))
    lock = os.path.join(run, ".lock")
    os.mkfifo(lock)
    got = _outcomes_within(10, lock, [("in_use", lambda: in_use(run)),
                                      ("RunLock", lambda: RunLock(run))])
    want = "run lock: %s is a FIFO; remove it (the testbed locks a regular file there)" % lock
    assert got == {"RunLock": want, "in_use": want}


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_lock_path_is_refused_and_not_followed(tmp_path, dangling):
    """RUN/.lock is opened with O_NOFOLLOW: a symbolic link there (to a file elsewhere, or to
    nothing) is a one-line UsageError naming the path; the file it points to is neither
    written (the lock used to truncate it and write a pid) nor created."""
    run = new_run_dir(str(tmp_path))
    target = tmp_path / "elsewhere.txt"
    if not dangling:
        target.write_text("precious\n")
    lock = os.path.join(run, ".lock")
    os.symlink(str(target), lock)
    want = ("run lock: %s is a symbolic link; remove it (the testbed locks a regular file "
            "there)" % lock)
    for call in (lambda: RunLock(run), lambda: in_use(run)):
        with pytest.raises(UsageError) as err:
            call()
        assert str(err.value) == want
    assert target.exists() != dangling
    assert dangling or target.read_text() == "precious\n"


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
