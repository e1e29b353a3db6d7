"""What is settled before a testbed or a calibration starts measuring: a fleet's sources are
reached before a run folder is made; ``--mdi-mode`` gives the nodes room for MDI-Exit's queue
rules; calibrate's lock files, made by root in another user's folder, are that user's."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile

import pytest

from agent.cli import main
from agent.commands.testbed import with_mdi_mode
from agent.policies.mdi_exit import rules as mx
from agent.policies.mdi_exit.agent import queue_room, queue_room_problem
from agent.testbed.local import node_configs
from agent.testbed.ports import free_ports
from agent.testbed.runtopo import topology_copy
from agent.testbed.topology import load_topology, parse_topology
from engines.demo import DEMO_BUNDLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_a_fleet_source_that_cannot_be_reached_leaves_no_run_folder(tmp_path, capsys):
    """Rule: a fleet-mode testbed whose source endpoint has nothing listening ends with one
    line naming ``fleet.clients.<id>`` and the endpoint, before it makes a run folder (no
    ``--out`` folder, no ``latest`` link)."""
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    topo = tmp_path / "fleet.json"
    topo.write_text(json.dumps({
        "sources": [{"id": "cam", "share": 1.0}],
        "workers": [{"id": "w1", "stage": 1, "last_stage": 4}],
        "links": [{"from": "cam", "to": "w1"}],
        "fleet": {"policy": "cf", "clients": {"cam": endpoint}}}))
    out = tmp_path / "out"
    status = main(["testbed", "--topology", str(topo), "--rates", "1", "--duration", "1",
                   "--out", str(out), "--no-plots"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "fleet.clients.cam: %s: nothing listens there" % endpoint in err, err
    assert not out.exists() or os.listdir(str(out)) == [], os.listdir(str(out))


def test_mdi_mode_gives_every_node_the_queue_room_mdi_exit_needs(tmp_path):
    """Rule: ``--mdi-mode`` on a topology whose ``agent`` does not set max_queue_tasks (the
    default topology: 32) raises it to ``queue_room`` (80 with the paper's T_Q2 = 30, T_O =
    50), so no node's bound blocks Alg. 4 (the adapt runs) or Alg. 1; the run folder's copy
    of the topology gives the same again (``report``); no mode leaves the topology as it is."""
    topo = load_topology("default")
    assert "max_queue_tasks" not in topo.agent
    assert with_mdi_mode(topo, None) == topo
    for mode in ("adapt", "admission", "fixed"):
        tb = with_mdi_mode(topo, mode)
        cfgs = node_configs(tb, DEMO_BUNDLE_DIR, "mdi-exit", 10.0, 1.0, str(tmp_path / mode))
        for cfg in cfgs.values():
            params = mx.params_from_knobs(cfg.policy_knobs)
            assert cfg.max_queue_tasks == queue_room(params) == 80, (mode, cfg.node_id)
            assert queue_room_problem(params, cfg.max_queue_tasks, cfg.role,
                                      cfg.last_stage > cfg.stage) == ""
        again = with_mdi_mode(parse_topology(topology_copy(tb), str(tmp_path), strict=False),
                              mode)
        assert again.agent["max_queue_tasks"] == 80


def test_mdi_mode_keeps_a_max_queue_tasks_the_topology_sets(tmp_path):
    """Rule: a topology that sets ``agent.max_queue_tasks`` keeps it under ``--mdi-mode``,
    even one too small for Alg. 4 (the node then warns, as it would without the mode)."""
    obj = dict(load_topology("default").document)
    obj["agent"] = dict(obj.get("agent") or {}, max_queue_tasks=40)
    topo = with_mdi_mode(parse_topology(obj, str(tmp_path)), "adapt")
    assert topo.agent["max_queue_tasks"] == 40


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to calibrate as root for nobody")
def test_a_root_calibrate_gives_its_lock_files_to_the_folders_owner():
    """Rule: ``calibrate`` run as root in a state directory another user owns leaves its lock
    files (``calibration.lock``, ``calibration.json.lock``) that user's, as the profile is, so
    that user's own calibrate can open them for writing next time."""
    nobody = pwd.getpwnam("nobody")
    state = tempfile.mkdtemp(prefix="edge-agent-test-")
    try:
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        done = subprocess.run(
            [sys.executable, "-m", "agent", "calibrate", "--bundle", DEMO_BUNDLE_DIR,
             "--stages", "1", "--seconds", "0.05", "--warmup", "0.02", "--state-dir", state],
            cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:]
        for name in ("calibration.json", "calibration.lock", "calibration.json.lock"):
            st = os.stat(os.path.join(state, name))
            assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), name
    finally:
        shutil.rmtree(state, ignore_errors=True)
