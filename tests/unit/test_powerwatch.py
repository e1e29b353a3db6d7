"""A worker notices a power-mode switch while serving (agent.node.powerwatch).

The pure part (``PowerWatch``: what a switch does to mu, the estimator, the metric and the log)
and the reader (``ModeReader``: reads off the loop's thread, on a clock and reader passed in)
are checked apart; then a real worker built from its config (demo bundle, a calibration profile
with entries for two modes, a real metrics endpoint) is switched by its reader and checked the
way an operator sees it: `edge-agent status`'s summary of its metrics, stats.json's keys, the
view its heartbeats and DTO-EE read.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from agent.node.capacity import Capacity, CapacityReport
from agent.node.powerwatch import READ_HUNG_S, ModeReader, ModeReading, PowerWatch
from agent.ops.metrics import AgentMetrics
from agent.policies.api import NodeView
from agent.testbed.ports import free_ports
from calibration.online import OnlineCapacityEstimator

FLOPS = 1e6  # alpha of the stage


def _view():
    return NodeView("w", "worker", 1, 1, (FLOPS,), (4.0,), (1,), (), (), {})


def _capacity(mu=1.58e8, estimator=True):
    report = CapacityReport(mu, FLOPS / mu, 0.0, "profile", "15W")
    est = OnlineCapacityEstimator(FLOPS, mu) if estimator else None
    return Capacity(report, est)


def _mode_metric(metrics):
    from prometheus_client import generate_latest

    from agent.fleet.status import parse_metrics, summarise
    return summarise(parse_metrics(generate_latest(metrics.registry).decode()))


def test_a_switch_to_a_calibrated_mode_takes_its_entry_as_mu_and_as_the_estimators_baseline(
        caplog):
    """15W -> MAXN with an entry: mu, the view, the estimator's baseline and estimate are the
    entry's at once; the metric moves to MAXN; one WARNING names both modes, mu and its source."""
    cap, view, metrics = _capacity(), _view(), AgentMetrics("w")
    for _ in range(100):
        cap.observe(FLOPS / 1.2e8)  # the estimate has moved below the 15W entry
    watch = PowerWatch("15W", cap, view, metrics, emulated=False)
    metrics.power_mode("15W")
    caplog.set_level(logging.INFO)
    maxn = CapacityReport(6.3e8, FLOPS / 6.3e8, 0.0, "profile", "MAXN")
    assert watch.apply(ModeReading("MAXN", maxn)) is True
    assert view.capacity_flops == pytest.approx(6.3e8)
    assert view.service_time_s == pytest.approx(FLOPS / 6.3e8)
    assert cap.estimator.initial_capacity_flops == pytest.approx(6.3e8)
    assert not cap.estimator.drifting and cap.report.power_mode == "MAXN"
    lines = [r for r in caplog.records if "power mode changed" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "from 15W to MAXN" in lines[0].getMessage()
    assert "6.3e+08 FLOP/s (profile entry for MAXN)" in lines[0].getMessage()
    assert _mode_metric(metrics)["power_mode"] == "MAXN"  # what `edge-agent status` shows
    assert watch.apply(ModeReading("MAXN")) is False  # the same mode again: nothing
    assert watch.changes == 1


def test_a_switch_to_an_uncalibrated_mode_keeps_the_online_estimate_and_says_why(caplog):
    """Without an entry for the new mode mu cannot be timed while serving: the online estimate
    stays (it follows the service times), and the line says so with the reason; without an
    estimator mu stays as it was."""
    cap, view = _capacity(), _view()
    watch = PowerWatch("15W", cap, view, AgentMetrics("w"), emulated=False)
    caplog.set_level(logging.INFO)
    assert watch.apply(ModeReading("7W", None, "stage 1: mode 7W is not calibrated"))
    msg = caplog.records[-1].getMessage()
    assert "from 15W to 7W" in msg and "no profile entry for 7W" in msg
    assert "mode 7W is not calibrated" in msg and "keeping the online estimate" in msg
    assert view.capacity_flops == pytest.approx(1.58e8)
    for _ in range(200):  # the board is now 4x slower: the estimate follows
        cap.observe(4 * FLOPS / 1.58e8)
    assert cap.capacity_flops == pytest.approx(1.58e8 / 4, rel=0.05)
    fixed = PowerWatch("15W", _capacity(estimator=False), _view(), AgentMetrics("w"), False)
    fixed.apply(ModeReading("7W", None, "no capacity_profile"))
    assert "keeping 1.58e+08 FLOP/s (no online estimate)" in caplog.records[-1].getMessage()


def test_emulated_capacity_stays_emulated_and_a_failed_read_is_logged_once(caplog):
    """An emulated worker keeps its emulated mu across a switch; a read that fails keeps the
    mode and is logged once per distinct error, not every period."""
    cap = Capacity(CapacityReport(1e8, 0.01, 3e9, "emulated", "15W"))
    watch = PowerWatch("15W", cap, _view(), AgentMetrics("w"), emulated=True)
    caplog.set_level(logging.INFO)
    assert watch.apply(ModeReading("MAXN"))
    assert "capacity stays emulated at 1e+08 FLOP/s" in caplog.records[-1].getMessage()
    for _ in range(3):
        assert not watch.apply(ModeReading("", error="JtopException: lost"))
    assert caplog.text.count("power mode could not be read") == 1 and watch.mode == "MAXN"


def test_the_reader_reads_on_schedule_off_the_calling_thread_and_looks_up_only_a_new_mode():
    """``poll`` never reads itself: the read runs on the thread ``spawn`` makes, once per
    interval (clock passed in), and the profile is looked up only when the mode differs."""
    now, modes, lookups, spawned = [0.0], ["15W"], [], []
    reader = ModeReader(lambda: modes[0], lambda m: (lookups.append(m), (None, "none"))[1],
                        interval_s=5.0, clock=lambda: now[0], spawn=spawned.append)
    assert reader.poll("15W") is None and not spawned  # the start-up read was just made
    now[0] = 5.0
    assert reader.poll("15W") is None and len(spawned) == 1
    assert reader.poll("15W") is None and len(spawned) == 1  # one read in flight at most
    spawned[0]()  # the reading thread runs
    assert reader.poll("15W") == ModeReading("15W", None, "") and lookups == []
    modes[0] = "MAXN"
    now[0] = 7.0
    assert reader.poll("15W") is None and len(spawned) == 1  # not due before 10 s
    now[0] = 10.0
    reader.poll("15W")
    spawned[1]()
    assert reader.poll("15W") == ModeReading("MAXN", None, "none") and lookups == ["MAXN"]


def test_a_hanging_read_never_blocks_the_loop_and_holds_back_the_next_reads(caplog):
    """A read blocked in jtop: ``poll`` returns at once on a real thread, starts no second
    read, and says so once after READ_HUNG_S; the answer is taken when it comes."""
    now, release, reads = [0.0], threading.Event(), []

    def blocked_read():
        reads.append(1)
        release.wait(30)
        return "MAXN"

    reader = ModeReader(blocked_read, lambda m: (None, "none"), 1.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO)
    for t in (1.0, 2.0, 3.0, 2 + READ_HUNG_S, 3 + READ_HUNG_S):
        now[0] = t
        assert reader.poll("15W") is None  # the read is still blocked: poll did not wait
    assert caplog.text.count("has not returned") == 1
    release.set()
    deadline, got = time.monotonic() + 20, None
    while got is None and time.monotonic() < deadline:
        got = reader.poll("15W")
        time.sleep(0.01)
    assert got == ModeReading("MAXN", None, "none") and len(reads) == 1


def _free_port():
    return free_ports(1)[0]  # below the ephemeral range: no outgoing connection takes it


def _profile(tmp_path, modes):
    """A profile holding the demo bundle's stage 1 on this machine in each of ``modes``
    ({mode: service time s})."""
    from calibration.host import read_host_identity
    from calibration.profile import ProfileEntry, update_profile
    from engines.bundle import load_bundle
    from engines.demo import DEMO_BUNDLE_DIR

    ident, spec = read_host_identity(), load_bundle(DEMO_BUNDLE_DIR).stage(1)
    path = str(tmp_path / "calibration.json")
    update_profile(path, [ProfileEntry(
        board=ident.board, l4t=ident.l4t, power_mode=m, stage=1, stage_sha256=spec.sha256,
        backend="onnxruntime", precision="fp32", flops=float(spec.flops), samples=20,
        service_time_median_s=t, service_time_p90_s=t, capacity_flops=spec.flops / t,
        measured_at="2026-01-01T00:00:00Z") for m, t in modes.items()])
    return path, float(spec.flops)


def test_a_built_worker_follows_a_switch_in_status_stats_and_its_view(tmp_path, caplog,
                                                                      monkeypatch):
    """A real worker (profile entries for its start mode and MAXN, metrics served; the board
    taken for a Jetson) switched by its reader: `edge-agent status`'s summary shows MAXN and its
    mu, stats.json has power_mode, and the view heartbeats and DTO-EE read carries MAXN's
    entry."""
    from agent.node import powerwatch
    from agent.fleet.status import read_node
    monkeypatch.setattr(powerwatch, "is_jetson", lambda root: True)
    from calibration.profile import current_power_mode
    from tests.unit.built_worker import built_worker

    start = current_power_mode()
    path, flops = _profile(tmp_path, {start: 0.004, "MAXN": 0.001})
    port = _free_port()
    built = built_worker(str(tmp_path / "run"), capacity_profile=path, metrics_port=port,
                         power_mode_check_interval_s=0.001)
    try:
        node = built.node
        assert node.status.stats()["power_mode"] == start
        assert node.outbox.current_view().capacity_flops == pytest.approx(flops / 0.004)
        node.hooks.power.reader.read = lambda: "MAXN"  # the board was switched
        caplog.set_level(logging.INFO)
        deadline = time.monotonic() + 20
        while node.hooks.power.watch.mode != "MAXN" and time.monotonic() < deadline:
            node.hooks.gauges(node.view, {}, {})  # what every heartbeat does
            time.sleep(0.01)
        assert node.status.stats()["power_mode"] == "MAXN"
        assert node.outbox.current_view().capacity_flops == pytest.approx(flops / 0.001)
        seen = read_node("http://127.0.0.1:%d/metrics" % port)
        assert seen["power_mode"] == "MAXN"
        assert seen["capacity_flops"] == pytest.approx(flops / 0.001)
        assert "power mode changed from %s to MAXN" % start in caplog.text
    finally:
        built.close()


def test_a_fixed_power_mode_is_reported_and_not_watched(tmp_path):
    """``power_mode = "NAME"`` in the node config: that mode's entry, reported in stats.json,
    and no watch (the operator fixed it)."""
    from tests.unit.built_worker import built_worker

    path, flops = _profile(tmp_path, {"15W": 0.004})
    built = built_worker(str(tmp_path / "run"), capacity_profile=path, power_mode="15W")
    try:
        assert built.node.hooks.power is None
        assert built.node.status.stats()["power_mode"] == "15W"
        assert built.node.outbox.current_view().capacity_flops == pytest.approx(flops / 0.004)
    finally:
        built.close()


def _watch_reading(modes, known="15W"):
    """A PowerModeWatch over a reader that gives ``modes`` one per poll (read inline)."""
    from agent.node.powerwatch import PowerModeWatch
    now, it = [0.0], iter(modes)
    reader = ModeReader(lambda: next(it), lambda m: (None, "no entry"), interval_s=1.0,
                        clock=lambda: now[0], spawn=lambda fn: fn())
    watch = PowerWatch(known, _capacity(), _view(), AgentMetrics("w"), False)

    def step():
        now[0] += 1.0
        reader.poll(watch.mode)  # starts the read (inline) ...
        return pw.poll()  # ... whose result this poll applies
    pw = PowerModeWatch(reader, watch)
    return watch, step


def test_a_new_mode_is_followed_only_when_two_reads_in_a_row_give_it(caplog):
    """Rule: one read of another mode between reads of the known one is no switch (no line);
    the same new mode read twice in a row is followed, with one WARNING."""
    watch, step = _watch_reading(["15W", "MAXN", "15W", "MAXN", "MAXN", "MAXN"])
    with caplog.at_level(logging.WARNING):
        flips = [step() for _ in range(6)]
    assert flips == [False, False, False, False, True, False] and watch.mode == "MAXN"
    assert caplog.text.count("power mode changed") == 1


def test_cpu_path_names_of_one_governor_are_one_mode_whatever_the_frequency(caplog):
    """Rule: without a frequency cap the CPU path's name carries the current frequency, so
    cpu-nogovernor-2600MHz and -2500MHz (a frequency near a 100 MHz boundary) are no switch;
    another governor is."""
    reads = ["cpu-nogovernor-2500MHz", "cpu-nogovernor-2500MHz", "cpu-nogovernor-2600MHz",
             "cpu-performance-2600MHz", "cpu-performance-2600MHz"]
    watch, step = _watch_reading(reads, known="cpu-nogovernor-2600MHz")
    with caplog.at_level(logging.WARNING):
        flips = [step() for _ in range(5)]
    assert flips == [False, False, False, False, True]
    assert watch.mode == "cpu-performance-2600MHz" and caplog.text.count("power mode changed") == 1


def test_off_a_jetson_the_mode_is_reported_but_not_watched(tmp_path):
    """Rule: off a Jetson (no L4T release file) the CPU path has one mode: stats.json reports
    it, and no reads are made while serving (a jtop client per read ran nvcc, dpkg, ldconfig
    and gcc: 0.5 CPU-s a minute per worker)."""
    from agent.node import powerwatch
    from tests.unit.built_worker import built_worker

    if powerwatch.is_jetson(powerwatch.JETSON_ROOT):
        pytest.skip("this machine is a Jetson: its workers watch the mode")
    built = built_worker(str(tmp_path / "run"))
    try:
        assert built.node.hooks.power is None
        assert built.node.status.stats()["power_mode"].startswith("cpu-")
    finally:
        built.close()
