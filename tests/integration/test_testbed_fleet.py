"""The testbed driving a fleet it did not start: load pushed into running sources' client
sockets, every answer timed on the testbed's side. The "fleet" here is real agent processes on
loopback (sources in client mode), started by the test as an operator would."""

import dataclasses
import json
import os

from agent.cli import main
from agent.testbed.local import node_configs
from agent.testbed.procs import LocalAgents, free_ports
from agent.testbed.topology import parse_topology
from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology


def test_fleet_mode_drives_running_sources_and_loses_nothing(tmp_path, capsys):
    """With a "fleet" object the testbed starts no agent: it sends every task to the running
    sources' client endpoints and gets every answer back (0 lost, all tasks accounted for)."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo_path, _ = write_topology(tmp_path, bundle)
    obj = json.loads(open(topo_path).read())
    topo = parse_topology(obj, str(tmp_path))
    port = free_ports(1)[0]
    client = "tcp://127.0.0.1:%d" % port
    cfgs = node_configs(topo, bundle, "dtoee", 1.0, 1.0, str(tmp_path / "fleet"))
    cfgs["cam"] = dataclasses.replace(cfgs["cam"], arrival="client", client_bind=client,
                                      max_tasks=0)
    obj["fleet"] = {"policy": "dtoee", "clients": {"cam": client},
                    "replay": os.path.join(os.path.dirname(bundle), "replay.npz"),
                    "result_timeout_s": 30}
    fleet_topo = tmp_path / "fleet.json"
    fleet_topo.write_text(json.dumps(obj))
    result = tmp_path / "result.json"
    with LocalAgents(str(tmp_path / "fleet")) as agents:
        agents.write(cfgs)
        agents.start(list(cfgs))
        rc = main(["testbed", "--topology", str(fleet_topo), "--policies", "dtoee",
                   "--rates", "15", "--duration", "2", "--out", str(tmp_path / "out"),
                   "--json", str(result), "--no-plots"])
        captured = capsys.readouterr()
        assert rc == 0, captured.err[-2000:]
    run = json.loads(result.read_text())["runs"][0]
    assert run["created"] > 0 and run["lost"] == 0 and run["completed"] == run["created"]
    assert run["mean_delay_s"] > 0
    with open(os.path.join(cfgs["cam"].state_dir, "records.jsonl")) as f:
        source_records = [json.loads(line) for line in f if line.strip()]
    assert len(source_records) == run["created"]
    assert {r["status"] for r in source_records} == {"completed"}


def test_fleet_mode_refuses_a_policy_the_fleet_does_not_run(tmp_path, capsys):
    """Comparing another policy needs the fleet restarted with it: a one-line usage error."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo_path, _ = write_topology(tmp_path, bundle)
    obj = json.loads(open(topo_path).read())
    obj["fleet"] = {"policy": "dtoee", "clients": {"cam": "tcp://127.0.0.1:1"},
                    "replay": os.path.join(os.path.dirname(bundle), "replay.npz")}
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(obj))
    rc = main(["testbed", "--topology", str(path), "--policies", "cf", "--rates", "5",
               "--out", str(tmp_path / "out"), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and "the fleet runs 'dtoee'" in err and len(err.strip().splitlines()) == 1
