"""The testbed's fleet mode checks every source's endpoint before it sends a task: a source
that cannot be reached ends the run at once with one line naming it (exit 2), as ``submit``
does, instead of a whole rate of tasks waited out and counted lost."""

from __future__ import annotations

import json
import os
import time

import pytest
import zmq

from agent.cli import main
from agent.errors import UsageError
from agent.testbed.fleet import check_sources
from agent.testbed.ports import free_ports
from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _fleet_topology(tmp_path, bundle, endpoint: str) -> str:
    topo_path, _ = write_topology(tmp_path, bundle)
    obj = json.loads(open(topo_path).read())
    obj["fleet"] = {"policy": "cf", "clients": {"cam": endpoint}, "result_timeout_s": 70}
    path = str(tmp_path / "fleet.json")
    with open(path, "w") as f:
        json.dump(obj, f)
    return path


def test_a_source_host_that_does_not_resolve_stops_the_run_before_any_rate(
        tmp_path, bundle, capsys):
    """Rule: a fleet source at a host that does not resolve: exit 2, one error line naming
    fleet.clients.cam, its endpoint and the cause; no rate is driven (no records, and well
    before the 70 s result timeout one lost task would take)."""
    endpoint = "tcp://no-such-cam.invalid:5560"
    topo = _fleet_topology(tmp_path, bundle, endpoint)
    t0 = time.monotonic()
    status = main(["testbed", "--topology", topo, "--policies", "cf", "--rates", "3",
                   "--duration", "4", "--out", str(tmp_path / "out"), "--no-plots"])
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert lines == ["edge-agent testbed: error: fleet.clients.cam: %s: the host "
                     "no-such-cam.invalid does not resolve; no task sent" % endpoint], err
    assert took < 60, took
    for _, _, files in os.walk(str(tmp_path / "out")):
        assert "records.jsonl" not in files


def test_check_sources_names_a_closed_port_and_passes_a_listening_source():
    """Rule: an endpoint where nothing listens is "nothing listens there" (named with its
    source); one where a ZeroMQ socket listens passes."""
    up, down = free_ports(2)
    ctx = zmq.Context()
    src = ctx.socket(zmq.ROUTER)
    src.setsockopt(zmq.LINGER, 0)
    src.bind("tcp://127.0.0.1:%d" % up)
    try:
        check_sources({"cam1": "tcp://127.0.0.1:%d" % up}, wait_s=10.0)
        with pytest.raises(UsageError) as exc:
            check_sources({"cam1": "tcp://127.0.0.1:%d" % up,
                           "cam2": "tcp://127.0.0.1:%d" % down}, wait_s=1.0)
        assert str(exc.value).startswith("fleet.clients.cam2: tcp://127.0.0.1:%d: nothing "
                                         "listens there" % down), exc.value
    finally:
        src.close()
        ctx.term()
