"""Real agents (processes, ZeroMQ, onnxruntime) whose wall clock steps while they serve.

A Jetson without an RTC battery boots at a stale time that NTP steps later, by days or years,
while the agents run; an operator may ``date -s``. CI must not step the system clock, so each
agent here runs under a launcher (``CODE``) that stands in for the system clock being stepped:
its ``time.time`` returns the real time plus an offset read from a file the test rewrites (the
monotonic clock, as on the device, does not move). The agents' ``python -m agent run`` is
otherwise untouched."""

import json
import os

from .agent_cluster import Cluster, build_two_stage_bundle

TIMEOUT_S = 120.0
DAY_S = 86400.0
NODES = {"s1": 0, "w1": 1, "w2": 2}

# python -c CODE run --config FILE ...: time.time offset by the number in $CLOCK_STEP_FILE
# (re-read every 20 ms), then the agent's own entry point
CODE = r'''
import os, threading, time
_real, _offset, _path = time.time, [0.0], os.environ["CLOCK_STEP_FILE"]
def _read():
    try:
        with open(_path) as f:
            _offset[0] = float(f.read().strip() or 0)
    except (OSError, ValueError):
        pass
def _poll():
    while True:
        _read()
        time.sleep(0.02)
_read()
threading.Thread(target=_poll, daemon=True).start()
time.time = lambda: _real() + _offset[0]
import runpy
runpy.run_module("agent", run_name="__main__", alter_sys=True)
'''


class SteppedClockCluster(Cluster):
    """Agents whose wall clock is the real one plus the offset in ``$CLOCK_STEP_FILE``."""

    launcher = ("-c", CODE)


def _set_offset(path, offset_s):
    with open(path + ".tmp", "w") as f:
        f.write(repr(offset_s))
    os.replace(path + ".tmp", path)


def _log_lines(cluster, node, text):
    with open(cluster.logs[node], errors="replace") as f:
        return [line for line in f if text in line]


def test_wall_clock_steps_lose_no_task_keep_delays_monotonic_and_are_one_warning_each(
        tmp_path, monkeypatch):
    """Rule: a wall-clock step of either sign while a fleet serves (a stale 1970-style boot
    clock stepped forward by NTP, then back by an operator) is one WARNING per node and step,
    loses and duplicates no task, and every delay stays on the monotonic clock: completed
    tasks' delays are the monotonic ones, and a source SIGKILLed and restarted after a
    further step records the tasks it never wrote (reason crash) with their monotonic delay
    from creation to the restart, never the stepped wall clock's."""
    step_file = str(tmp_path / "clock_offset")
    monkeypatch.setenv("CLOCK_STEP_FILE", step_file)
    offset = -20 * 365 * DAY_S  # booted 20 years in the past
    _set_offset(step_file, offset)
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    c = SteppedClockCluster(str(tmp_path), bundle, NODES, policy="fixed",
                            arrival_rate_tasks_s=10.0, result_timeout_s=6.0, max_attempts=3)
    try:
        for n in ("w2", "w1", "s1"):
            c.start(n)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 10, TIMEOUT_S, "10 results")
        offset += 20 * 365 * DAY_S  # NTP: forward 20 years
        _set_offset(step_file, offset)
        c.wait_for(lambda: all(_log_lines(c, n, "wall clock stepped forward") for n in NODES),
                   TIMEOUT_S, "every node to see the step forward")
        done = c.tasks("s1").get("completed", 0)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= done + 10, TIMEOUT_S,
                   "10 more results")
        offset -= 2 * DAY_S  # date -s: back 2 days
        _set_offset(step_file, offset)
        c.wait_for(lambda: all(_log_lines(c, n, "wall clock stepped back") for n in NODES),
                   TIMEOUT_S, "every node to see the step back")
        done = c.tasks("s1").get("completed", 0)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= done + 10, TIMEOUT_S,
                   "10 more results")
        # the source dies with record lines in memory (flushed every 60 s), the clock steps
        # forward a day, and the source starts again in the same boot
        c.stop_all()
        os.remove(os.path.join(str(tmp_path), "s1", "stats.json"))  # counts of this run only
        c = SteppedClockCluster(str(tmp_path), bundle, NODES, policy="fixed",
                                arrival_rate_tasks_s=10.0, result_timeout_s=6.0,
                                max_attempts=3)
        for n in ("w2", "w1"):
            c.start(n)
        c.start("s1", records_flush_interval_s=60.0)
        c.wait_for(lambda: c.tasks("s1").get("completed", 0) >= 10, TIMEOUT_S, "10 results")
        c.kill("s1")
        offset += DAY_S
        _set_offset(step_file, offset)
        c.start("s1")
        c.wait_for(lambda: c.tasks("s1").get("crash_recovered", 0) >= 10, TIMEOUT_S,
                   "the source to record the tasks it never wrote")
    finally:
        c.stop_all()
    for n in NODES:
        for sign in ("forward", "back"):
            lines = _log_lines(c, n, "wall clock stepped " + sign)
            assert len(lines) == (2 if sign == "forward" and n != "s1" else 1), (n, lines)
            assert all(" WARNING " in line for line in lines), lines
    with open(os.path.join(str(tmp_path), "s1", "records.jsonl")) as f:
        records = [json.loads(line) for line in f]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "a task recorded twice"
    journal = os.path.join(str(tmp_path), "s1", "records.jsonl.journal")
    with open(journal) as f:  # every task any run journalled has its one final line
        opened = {json.loads(line[1:])["id"] for line in f if line.startswith("+")}
    assert opened <= set(ids)
    crash = [r for r in records if r["reason"] == "crash"]
    assert len(crash) >= 10
    for r in records:
        assert r["delay_s"] == r["finished_mono"] - r["created_mono"], r
        assert 0 <= r["delay_s"] < TIMEOUT_S * 5, r  # never a step's days
        if r["status"] == "lost":
            assert r["reason"] == "crash", r
    assert any(r["finished_wall"] - r["created_wall"] > DAY_S / 2 for r in crash)
