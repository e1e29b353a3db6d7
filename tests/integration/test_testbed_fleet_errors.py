"""The testbed driving a running fleet with inputs its source refuses (NaN images): the source
answers them `error` / `bad_input`, and the testbed and `report` both count them as errors,
not as lost, with what the source said. The fleet is real agent processes on loopback."""

import dataclasses
import json
import os

import numpy as np

from agent.cli import main
from agent.testbed.local import node_configs
from agent.testbed.ports import free_ports
from agent.testbed.procs import LocalAgents
from agent.testbed.topology import parse_topology
from tests.integration.agent_cluster import build_two_stage_bundle
from tests.integration.test_testbed import write_topology


def test_refused_inputs_are_errors_with_the_sources_words_in_the_testbed_and_report(
        tmp_path, capsys):
    """A replay set whose every other image holds NaN: those tasks are answered error by the
    source and recorded so (reason bad_input and the source's detail); the testbed's table
    and results.json count them under `error`, lost stays 0, created = completed + lost +
    rejected + error; `report` on the run reads every line as a task record and gives the same
    counts, with a line saying what the source said."""
    bundle = build_two_stage_bundle(str(tmp_path / "tiny"))
    topo_path, _ = write_topology(tmp_path, bundle)
    obj = json.loads(open(topo_path).read())
    topo = parse_topology(obj, str(tmp_path))
    with np.load(os.path.join(os.path.dirname(bundle), "replay.npz")) as z:
        x, y = np.array(z["x"]), np.array(z["y"])
    x[::2] = np.nan
    replay = str(tmp_path / "nan.npz")
    np.savez(replay, x=x, y=y)
    client = "tcp://127.0.0.1:%d" % free_ports(1)[0]
    cfgs = node_configs(topo, bundle, "dtoee", 1.0, 1.0, str(tmp_path / "fleet"))
    cfgs["cam"] = dataclasses.replace(cfgs["cam"], arrival="client", client_bind=client,
                                      max_tasks=0)
    obj["fleet"] = {"policy": "dtoee", "clients": {"cam": client}, "replay": replay,
                    "result_timeout_s": 30}
    fleet_topo = tmp_path / "fleet.json"
    fleet_topo.write_text(json.dumps(obj))
    with LocalAgents(str(tmp_path / "fleet")) as agents:
        agents.write(cfgs)
        agents.start(list(cfgs))
        status = main(["testbed", "--topology", str(fleet_topo), "--rates", "15",
                       "--duration", "1", "--out", str(tmp_path / "out"), "--no-plots"])
        tested = capsys.readouterr()
    run_dir = os.path.realpath(str(tmp_path / "out" / "latest"))
    run = json.loads(open(os.path.join(run_dir, "results.json")).read())["runs"][0]
    assert run["error"] > 0 and run["completed"] > 0 and run["lost"] == 0, tested.err[-2000:]
    assert run["created"] == run["completed"] + run["lost"] + run["rejected"] + run["error"]
    said = "bad_input: input holds NaN"
    assert [k for k in run["error_reasons"] if k.startswith(said)] and \
        sum(run["error_reasons"].values()) == run["error"]
    assert "LOST" not in tested.err
    # the testbed says what the source said, as report does, and the run is no success
    assert status == 1 and [line for line in tested.err.splitlines() if line.startswith(
        "ERROR ") and ("answered error by the sources: " + said) in line], tested.err[-2000:]
    head = [line.split() for line in tested.out.splitlines() if line.startswith("policy ")]
    assert head and "error" in head[0], tested.out
    with open(os.path.join(run_dir, "dtoee", "rate-15", "cam", "records.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    errors = [r for r in recs if r["status"] == "error"]
    assert len(errors) == run["error"]
    assert all(r["reason"] == "bad_input" and r["detail"].startswith("input holds NaN")
               and r["correct"] is None for r in errors)

    assert main(["report", run_dir]) == 0
    reported = capsys.readouterr()
    assert "not task records" not in reported.err and reported.err == ""
    lines = reported.out.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith("policy ")][0]
    row = dict(zip(lines[at].split(), lines[at + 2].split()))
    assert [int(row[k]) for k in ("created", "completed", "lost", "error")] == [
        run["created"], run["completed"], run["lost"], run["error"]]
    ends = [line for line in lines if line.startswith("ERROR ")]
    assert len(ends) == 1 and ("answered error by the sources: " + said) in ends[0]
