"""The testbed driving a fleet it did not start: load pushed into running sources' client
sockets, every answer timed on the testbed's side. The "fleet" here is real agent processes on
loopback (sources in client mode), started by the test as an operator would."""

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import zmq

from agent.cli import main
from agent.testbed.local import node_configs
from agent.testbed.ports import free_ports
from agent.testbed.procs import AgentProcess, LocalAgents, NotifyListener, wait_ready
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


def _fleet_topology(tmp_path, bundle, policy, **fleet):
    obj = json.loads(open(write_topology(tmp_path, bundle)[0]).read())
    obj["fleet"] = dict({"policy": policy, "clients": {"cam": "tcp://127.0.0.1:1"},
                         "replay": os.path.join(os.path.dirname(bundle), "replay.npz")}, **fleet)
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(obj))
    return str(path)


@pytest.mark.parametrize("policies", ["cf", "dtoee,cf"])
def test_fleet_mode_refuses_another_policy_before_it_prints_or_makes_anything(
        tmp_path, capsys, policies):
    """A --policies naming a policy the fleet does not run is refused before anything else: one
    line on stderr, nothing on stdout, no run folder and no DIR/latest (a later `report DIR`
    is not sent to an empty run)."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    path = _fleet_topology(tmp_path, bundle, "dtoee")
    rc = main(["testbed", "--topology", path, "--policies", policies, "--rates", "5",
               "--out", str(tmp_path / "out"), "--no-plots"])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2 and captured.out == "" and len(err) == 1
    assert err[0] == ("edge-agent testbed: error: --policies: the fleet runs 'dtoee'; restart "
                      "it with another policy to compare (got 'cf')")
    assert not os.path.lexists(str(tmp_path / "out"))


def test_fleet_emulated_must_be_true_or_false(tmp_path, capsys):
    """fleet.emulated (whether the agents emulate the topology's capacities and link rates) is
    a boolean; anything else is one line naming the field."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    path = _fleet_topology(tmp_path, bundle, "dtoee", emulated="no")
    rc = main(["testbed", "--topology", path, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "fleet.emulated: must be true" in err[0]
    assert not os.path.lexists(str(tmp_path / "out"))


def test_fleet_mode_lost_tasks_point_at_the_devices_logs(tmp_path, capsys):
    """Tasks a fleet never answers are LOST with a pointer to the agents' logs on the devices
    (journalctl -u edge-agent@NODE), not to agent logs the run folder does not hold. (The
    endpoint takes the connection and answers nothing: one where nothing listens stops the
    run before its first rate.)"""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    endpoint = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    path = _fleet_topology(tmp_path, bundle, "dtoee", result_timeout_s=0.3,
                           clients={"cam": endpoint})
    ctx = zmq.Context()
    silent = ctx.socket(zmq.ROUTER)
    silent.setsockopt(zmq.LINGER, 0)
    silent.bind(endpoint)
    try:
        rc = main(["testbed", "--topology", path, "--policies", "dtoee", "--rates", "10",
                   "--duration", "0.5", "--out", str(tmp_path / "out"), "--no-plots"])
    finally:
        silent.close()
        ctx.term()
    err = capsys.readouterr().err
    lost = [line for line in err.splitlines() if line.startswith("LOST ")]
    assert rc == 1 and len(lost) == 1, err[-2000:]
    assert "journalctl -u edge-agent@NODE" in lost[0] and "cam" in lost[0]
    assert "agent logs under" not in lost[0]
    run = os.path.realpath(str(tmp_path / "out" / "latest"))
    assert not any(name.endswith(".log") for _, _, files in os.walk(run) for name in files)


def test_a_fleet_rendered_without_emulation_is_driven_by_the_suggested_command(tmp_path, capsys):
    """`fleet render` (no --emulate) of a loopback fleet, the agents started from the rendered
    configs over CURVE: the `testbed` command the render suggests runs as printed; the run
    drives only the fleet's policy, does not claim emulation, and says that its % rates come
    from the topology's nominal capacities; without --policies it runs the fleet's policy."""
    tiny = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo_path, _ = write_topology(tmp_path, tiny)
    nodes = ["cam", "fast", "slow", "w2"]
    ports = free_ports(4 * len(nodes))
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("".join("%s 127.0.0.1 control=%d data=%d client=%d metrics=%d\n"
                             % ((n,) + tuple(ports[4 * i:4 * i + 4]))
                             for i, n in enumerate(nodes)))
    root, out = tmp_path / "root", tmp_path / "fleet-out"
    assert main(["fleet", "render", "--topology", topo_path, "--inventory", str(hosts), "--out",
                 str(out), "--root", str(root), "--bundle", tiny, "--policy", "cf"]) == 0
    printed = capsys.readouterr().out
    assert "emulation off" in printed
    suggested = [line.split(": ", 1)[1] for line in printed.splitlines()
                 if line.startswith("drive load from here: ")]
    assert len(suggested) == 1 and suggested[0].startswith("edge-agent testbed ")
    for n in nodes:  # each device's /etc/edge-agent, all under one root here
        shutil.copytree(str(out / "devices" / n / "etc" / "edge-agent"),
                        str(root / "etc" / "edge-agent"), dirs_exist_ok=True)
    calibrate = subprocess.run(  # what edge-agent-calibrate.service runs on a worker
        [sys.executable, "-m", "agent", "calibrate", "--bundle", tiny, "--seconds", "0.2",
         "--warmup", "0.1", "--state-dir", str(root / "var" / "lib" / "edge-agent")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert calibrate.returncode == 0, calibrate.stderr[-2000:]
    os.makedirs(str(tmp_path / "logs"))
    listener, procs = NotifyListener(), []
    try:
        for n in nodes:
            procs.append(AgentProcess(n, str(root / "etc" / "edge-agent" / (n + ".toml")),
                                      str(tmp_path / "logs" / (n + ".log")), listener.path))
        wait_ready(procs, listener, 120.0)
        argv = shlex.split(suggested[0])[1:]
        rc = main(argv + ["--duration", "1", "--out", str(tmp_path / "runs"), "--no-plots"])
        first = capsys.readouterr()
        rc2 = main(["testbed", "--topology", str(out / "testbed.json"), "--rates", "20",
                    "--duration", "1", "--out", str(tmp_path / "runs2"), "--no-plots"])
        second = capsys.readouterr()
    finally:
        for p in procs:
            p.stop()
        listener.close()
    assert rc == 0, first.out + first.err[-2000:]
    assert "workers emulated" not in first.out and "links emulated" not in first.out
    assert "emulated: nothing: the fleet's devices run at their own capacities" in first.out
    assert "from the topology's nominal capacities" in first.out
    results = json.loads((tmp_path / "runs" / "latest" / "results.json").read_text())
    assert [r["policy"] for r in results["runs"]] == ["cf"] * 3
    assert not any(r["capacities_emulated"] for r in results["runs"])
    assert all(r["lost"] == 0 and r["created"] > 0 for r in results["runs"])
    assert rc2 == 0, second.out + second.err[-2000:]
    again = json.loads((tmp_path / "runs2" / "latest" / "results.json").read_text())
    assert [(r["policy"], r["rate"]) for r in again["runs"]] == [("cf", 20.0)]
