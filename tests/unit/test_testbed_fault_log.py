"""The fault log in results.json: every fault that ended has both its monotonic and its
wall-clock end, whatever its kind."""

from __future__ import annotations

from agent.testbed.faults import Fault
from agent.testbed.inject import FaultRunner, relative_log


class _Agents:
    """Stands in for ``LocalAgents``: records what the runner asked of it."""

    def __init__(self):
        self.injected = set()
        self.calls = []
        self.procs = {}  # no process runs: the runner has no stats of one to keep

    def kill(self, name):
        self.calls.append(("kill", name))

    def stop(self, names):
        self.calls.append(("stop", list(names)))

    def launch(self, names):
        self.calls.append(("launch", list(names)))

    def start(self, names, ready_s):
        self.calls.append(("start", list(names)))


def test_restart_and_kill_for_good_log_their_wall_clock_end_like_every_other_fault():
    """Rule: a restart (ends as it begins), a kill without a duration (down for good from its
    start) and a kill with one each have ended_wall in results.json next to ended_s."""
    now = [100.0]
    faults = [Fault(1.0, 0.0, "restart", "w1"), Fault(1.0, 0.0, "kill", "w2"),
              Fault(1.0, 2.0, "kill", "w3")]
    runner = FaultRunner(faults, _Agents(), clock=lambda: now[0])
    runner.start()
    now[0] = 101.5
    runner.poll()
    now[0] = 103.5
    runner.poll()
    runner.finish()
    log = relative_log(runner.log, 100.0)
    assert [e["fault"] for e in log] == [f.label() for f in faults]
    for e in log:
        assert "ended_s" in e and isinstance(e["ended_wall"], float), e
        assert e["ended_wall"] >= e["began_wall"]
    assert [e["ended_s"] for e in log] == [1.5, 1.5, 3.5]
