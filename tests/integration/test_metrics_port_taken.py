"""A worker whose metrics_port another process holds, with real ``python -m agent`` processes
on loopback: ``run`` exits 78 on it before it loads or times any engine, and ``doctor
--config`` FAILs it, unless the node's own running agent serves there (a WARN then)."""

from __future__ import annotations


import pytest

from agent.errors import EXIT_CONFIG
from agent.fleet.status import read_node
from agent.ops.doctor import FAIL, WARN
from agent.ops.doctor_node import check_node
from agent.ops.metrics_server import url
from agent.testbed.ports import free_ports

from .agent_cluster import build_two_stage_bundle
from .taken_port import agent_cli, refused_before_loading, taken, timed_worker

TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def test_run_with_a_taken_metrics_port_exits_78_before_any_engine_is_loaded_or_timed(
        bundle, tmp_path):
    """Rule: a worker's ``run`` whose metrics_port a plain socket listens on exits 78 with
    the one line ``metrics_host/metrics_port: cannot serve metrics on URL: Address already in
    use (...)`` before the slow steps: no engine was loaded (no providers line), none timed
    (no capacity line) and engines.json was not written (it was, and they were, before)."""
    port = free_ports(1)[0]
    _, cfg, path = timed_worker(tmp_path, bundle, metrics_port=port)
    with taken(port):
        done = agent_cli("run", "--config", path)
    errors = refused_before_loading(done, cfg)
    assert errors[0].endswith(
        "metrics_host/metrics_port: cannot serve metrics on http://127.0.0.1:%d/metrics: Address "
        "already in use (fix the address, free the port or set metrics_port = 0)" % port)


def test_doctor_config_fails_a_taken_metrics_port(bundle, tmp_path):
    """Rule: ``doctor --config`` of a node whose metrics_port another process listens on
    prints ``FAIL node metrics`` with run's line and a fix naming the port, and exits 1; with
    the port free it prints no such line."""
    port = free_ports(1)[0]
    _, _, path = timed_worker(tmp_path, bundle, metrics_port=port)
    with taken(port):
        done = agent_cli("doctor", "--config", path)
    lines = done.stdout.splitlines()
    (i,) = [n for n, x in enumerate(lines) if x.startswith("FAIL node metrics: ")]
    assert "http://127.0.0.1:%d/metrics: Address already in use" % port in lines[i], lines[i]
    assert lines[i + 1].lstrip().startswith("fix: stop the process that listens on port %d"
                                            % port), lines[i + 1]
    assert done.returncode == 1, done.stdout[-3000:]
    checks, _ = check_node(path)
    assert [x.name for x in checks if x.name == "node metrics"] == []


def test_doctor_config_warns_where_this_nodes_running_agent_serves_the_metrics_port(
        bundle, tmp_path):
    """Rule: while the node's own agent runs, its metrics_port taken by that agent is a WARN
    naming its pid (as the "node state lock" line), not a FAIL; a second ``run`` is refused
    on the state_dir lock, before the metrics port."""
    port = free_ports(1)[0]
    c, cfg, path = timed_worker(tmp_path, bundle, metrics_port=port)
    try:
        c.procs["w1"] = c.agents.launch(["w1"])[0]
        c.wait_for(lambda: read_node(url("127.0.0.1", port)).get("alive", False), TIMEOUT_S,
                   "w1's metrics endpoint to answer")
        pid = c.procs["w1"].pid
        checks, _ = check_node(path)
        (metrics,) = [x for x in checks if x.name == "node metrics"]
        assert metrics.status == WARN and "pid %d" % pid in metrics.detail, metrics
        assert FAIL not in {x.status for x in checks}, [x.line() for x in checks]
        again = agent_cli("run", "--config", path)
        errors = [x for x in again.stderr.splitlines() if "error:" in x]
        assert again.returncode == EXIT_CONFIG and len(errors) == 1, again.stderr[-3000:]
        assert "state_dir: %s is in use by another agent (pid %d" % (cfg.state_dir, pid) \
            in errors[0], errors[0]
    finally:
        c.stop_all()
