"""An agent started the way its systemd unit starts it: sd_notify READY (after the engine is
loaded and the sockets are bound), WATCHDOG pings from the main loop, STOPPING on SIGTERM;
its Prometheus endpoint serves the documented series."""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from agent.config.node import dump_config
from agent.testbed.ports import free_ports

from .agent_cluster import REPO, Cluster, build_two_stage_bundle

UNIT = os.path.join(REPO, "systemd", "edge-agent@.service")
TIMEOUT_S = 90.0


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; collects every assignment line."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.lines = []

    def wait_for(self, pred, proc, what):
        end = time.monotonic() + TIMEOUT_S
        while time.monotonic() < end:
            if pred(self.lines):
                return
            try:
                self.lines.extend(self.sock.recv(4096).decode().splitlines())
            except socket.timeout:
                if proc.poll() is not None:
                    raise AssertionError("agent exited with %s before %s" % (proc.returncode, what))
        raise AssertionError("no %s within %.0f s; got %r" % (what, TIMEOUT_S, self.lines))

    def close(self):
        self.sock.close()


def unit_command(config_path):
    """ExecStart of the shipped unit, with the venv's console script run as ``python -m agent``
    (same entry point) and the instance's config path filled in."""
    with open(UNIT) as f:
        line = next(ln for ln in f.read().splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line[len("ExecStart="):])
    assert argv[0].endswith("/bin/edge-agent")
    return [sys.executable, "-m", "agent"] + [
        config_path if a == "/etc/edge-agent/%i.toml" else a for a in argv[1:]]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_agent_started_like_the_unit_notifies_ready_then_watchdog_then_stopping(bundle, tmp_path):
    cluster = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2})
    # backend "onnxruntime", as `fleet render` writes: its TensorRT provider builds a plan too
    cfg = cluster.config("w1", backend="onnxruntime")
    os.makedirs(cfg.state_dir)
    cfg_path = str(tmp_path / "w1.toml")
    with open(cfg_path, "w") as f:
        f.write(dump_config(cfg))
    notify = NotifySocket(str(tmp_path / "notify.sock"))
    data_port = int(cfg.data_bind.rsplit(":", 1)[1])
    # The environment systemd gives a Type=notify unit with WatchdogSec=30s.
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="30000000",
               PYTHONUNBUFFERED="1", PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    log_path = str(tmp_path / "w1.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(unit_command(cfg_path), stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd="/")
    try:
        notify.wait_for(lambda ls: "READY=1" in ls, proc, "READY=1")
        # READY means serving: the data socket is already bound.
        with socket.create_connection(("127.0.0.1", data_port), timeout=10):
            pass
        assert "MAINPID=%d" % proc.pid in notify.lines
        before_ready = notify.lines[:notify.lines.index("READY=1")]
        assert not any(ln == "WATCHDOG=1" for ln in before_ready)
        # a TensorRT plan may be built (either backend): more start-up time is asked for first
        assert any(ln.startswith("EXTEND_TIMEOUT_USEC=") for ln in before_ready), before_ready
        notify.wait_for(lambda ls: ls.count("WATCHDOG=1") >= 2, proc, "two WATCHDOG=1 pings")
        proc.send_signal(signal.SIGTERM)
        notify.wait_for(lambda ls: "STOPPING=1" in ls, proc, "STOPPING=1")
        assert proc.wait(TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        notify.close()
    with open(log_path, errors="replace") as f:
        log_text = f.read()
    assert "stage 1 on" in log_text  # the engine was loaded before READY


SERIES = ["edge_agent_tasks_in_total", "edge_agent_tasks_out_total",
          "edge_agent_tasks_exited_total", "edge_agent_queue_length",
          "edge_agent_service_time_seconds", "edge_agent_capacity_flops",
          "edge_agent_routing_probability", "edge_agent_exit_threshold",
          "edge_agent_dropped_frames_total", "edge_agent_neighbour_alive",
          "edge_agent_power_mode"]


def _scrape(port):
    try:
        return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    except OSError:
        return ""


def _value(text, name, **labels):
    for line in text.splitlines():
        m = re.match(r"^%s\{([^}]*)\} (\S+)$" % re.escape(name), line)
        if m and all('%s="%s"' % kv in m.group(1) for kv in labels.items()):
            return float(m.group(2))
    return None


def test_metrics_endpoint_serves_the_listed_series_while_tasks_flow(bundle, tmp_path):
    from engines.bundle import load_bundle

    stages = load_bundle(bundle).num_stages
    nodes = dict([("s1", 0)] + [("w%d" % h, h) for h in range(1, stages + 1)])
    cluster = Cluster(str(tmp_path), bundle, nodes, arrival_rate_tasks_s=20.0)
    port = free_ports(1)[0]
    try:
        for node in sorted(nodes, key=nodes.get, reverse=True)[:-2]:
            cluster.start(node)
        cluster.start("w1", metrics_port=port)
        cluster.start("s1")
        text = {}

        def served():
            text["t"] = t = _scrape(port)
            # gauges (routing, liveness) are refreshed on the heartbeat, counters per task (a
            # task is counted in on arrival, its service time once served: a loaded machine
            # shows the first before the second): wait until each has been written
            return ((_value(t, "edge_agent_tasks_in_total", node="w1", stage="1") or 0) >= 5
                    and (_value(t, "edge_agent_service_time_seconds_count", node="w1") or 0) >= 5
                    and _value(t, "edge_agent_routing_probability", node="w1", dst="w2")
                    is not None
                    and _value(t, "edge_agent_neighbour_alive", node="w1", peer="s1") == 1.0)

        cluster.wait_for(served, TIMEOUT_S, "tasks counted at w1's metrics endpoint")
        t = text["t"]
        for name in SERIES:
            assert "# TYPE %s" % name.replace("_total", "") in t, name
        assert _value(t, "edge_agent_service_time_seconds_count", node="w1") >= 5
        assert _value(t, "edge_agent_neighbour_alive", node="w1", peer="s1") == 1.0
        assert _value(t, "edge_agent_routing_probability", node="w1", dst="w2") == 1.0
        assert _value(t, "edge_agent_capacity_flops", node="w1") > 0
        assert _value(t, "edge_agent_queue_length", node="w1", queue="input") is not None
        assert 0 < _value(t, "edge_agent_exit_threshold", node="w1", stage="1") <= 1
        modes = [ln for ln in t.splitlines() if ln.startswith("edge_agent_power_mode{")]
        assert len(modes) == 1 and modes[0].endswith(" 1.0"), modes
        assert (_value(t, "edge_agent_tasks_out_total", node="w1", stage="1") or 0) + (
            _value(t, "edge_agent_tasks_exited_total", node="w1", stage="1") or 0) >= 1
    finally:
        cluster.stop_all()


def test_a_warning_logged_while_the_agent_starts_is_its_newest_warning_on_the_metrics(
        bundle, tmp_path):
    """Rule: ``status`` shows each node's newest warning, and that includes one logged while
    the node was being built, before its metrics served (here: a calibration profile without
    an entry for this engine, so the worker times its engine instead). The node is built in
    this process (its metrics endpoint is real; its sockets are not bound yet)."""
    import json

    from agent.fleet.status import parse_metrics, summarise  # what `status` reads
    from agent.node.build import build

    profile = tmp_path / "calibration.json"
    profile.write_text(json.dumps({"format": "edge-agent-calibration-profile", "version": 1,
                                   "entries": [], "unavailable": []}))
    cluster = Cluster(str(tmp_path), bundle, {"s1": 0, "w1": 1, "w2": 2})
    port = free_ports(1)[0]
    cfg = cluster.config("w1", metrics_port=port, capacity_profile=str(profile))
    os.makedirs(cfg.state_dir, exist_ok=True)
    built = build(cfg)
    try:
        newest = summarise(parse_metrics(_scrape(port)))["last_warning"]
    finally:
        built.close()
    assert newest["level"] == "WARNING", newest
    assert newest["message"].startswith("no calibration entry for stage 1 in mode "), newest
