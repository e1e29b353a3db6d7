"""A fleet's sources are checked once per testbed run: ``edge-agent testbed`` checks them (each
reached, the replay inputs under its ``max_message_bytes``) before it makes a run folder and
tells ``run_fleet`` so (``TestbedSettings.sources_checked``); ``run_fleet`` called without
that word checks them itself. Real sockets on loopback, nothing mocked."""

from __future__ import annotations

import json
import os

import pytest

from agent.cli import main
from agent.errors import UsageError
from agent.testbed.fleet import run_fleet
from agent.testbed import local
from agent.testbed.ports import free_ports
from agent.testbed.topology import load_topology
from engines.bundle import load_bundle
from engines.demo import DEMO_BUNDLE_DIR


def _fleet_topology(tmp_path, agent=None):
    """(topology file, source endpoint) of a one-source fleet whose endpoint nothing listens
    on; ``agent``: the topology's agent table."""
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({
        "agent": agent or {}, "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1, "last_stage": 4}],
        "links": [{"from": "cam", "to": "w1"}],
        "fleet": {"policy": "cf", "clients": {"cam": endpoint}}}), encoding="utf-8")
    return str(path), endpoint


def test_run_fleet_checks_the_sources_when_its_caller_did_not(tmp_path):
    """Rule: run_fleet given plain TestbedSettings (its caller checked nothing) still refuses a
    source nothing listens on, in one line naming it, before any rate."""
    path, endpoint = _fleet_topology(tmp_path)
    settings = local.TestbedSettings(duration_s=1.0, out_dir=str(tmp_path / "out"))
    with pytest.raises(UsageError) as got:
        run_fleet(load_topology(path), load_bundle(DEMO_BUNDLE_DIR), "cf", [], settings)
    assert str(got.value).startswith("fleet.clients.cam: %s: nothing listens there" % endpoint)
    assert str(got.value).endswith("; no task sent") and "\n" not in str(got.value), got.value


def test_run_fleet_does_not_check_again_sources_its_caller_checked(tmp_path):
    """Rule: run_fleet given TestbedSettings(sources_checked=True) makes no connection check of
    its own: with nothing listening and no rate to drive it returns no result, not an error."""
    path, _ = _fleet_topology(tmp_path)
    settings = local.TestbedSettings(duration_s=1.0, out_dir=str(tmp_path / "out"),
                                     sources_checked=True)
    assert run_fleet(load_topology(path), load_bundle(DEMO_BUNDLE_DIR), "cf", [],
                     settings) == []


def test_the_testbed_refuses_a_replay_input_above_a_sources_limit_before_its_run_folder(
        tmp_path, capsys):
    """Rule: edge-agent testbed on a fleet whose replay inputs are above a source's
    max_message_bytes (the topology's agent.max_message_bytes) says so in one line naming the
    source and the limit before it makes a run folder (no --out folder, no latest link), as it
    does for a source it cannot reach."""
    path, _ = _fleet_topology(tmp_path, {"max_message_bytes": 1024})
    out = tmp_path / "out"
    status = main(["testbed", "--topology", path, "--rates", "1", "--duration", "1",
                   "--out", str(out), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2, err
    assert len(err) == 1 and err[0].startswith(
        "edge-agent testbed: error: fleet.replay: fleet.clients.cam: "), err
    assert "max_message_bytes 1024;" in err[0] and err[0].endswith("no task sent"), err
    assert not out.exists() or os.listdir(str(out)) == [], os.listdir(str(out))
