"""An MDI-Exit preset through the testbed: real agent processes, demo bundle, loopback."""

import json

from agent.cli import main


def test_mdi_two_node_preset_with_admission_control_loses_nothing(tmp_path, capsys):
    """``testbed --topology mdi-2-node --mdi-mode admission``: both nodes hold every stage, the
    camera keeps its rate and Alg. 3 admits at most one arrival per mu; every admitted task
    completes (0 lost), the others are recorded as rejected, each created task has one record."""
    out = tmp_path / "out"
    result = tmp_path / "result.json"
    rc = main(["testbed", "--topology", "mdi-2-node", "--mdi-mode", "admission",
               "--policies", "mdi-exit", "--rates", "4", "--duration", "2", "--out", str(out),
               "--json", str(result), "--no-plots"])
    text = capsys.readouterr().out
    assert rc == 0, text
    run = json.loads(result.read_text())["runs"][0]
    assert run["policy"] == "mdi-exit" and run["created"] > 0
    assert run["completed"] + run["rejected"] == run["created"] and run["lost"] == 0
    assert run["completed"] > 0
    records = (out / "latest" / "mdi-exit" / "rate-4" / "cam" / "records.jsonl").read_text().splitlines()
    assert len(records) == run["created"]
    status = [json.loads(line)["status"] for line in records]
    assert status.count("completed") == run["completed"]
    assert status.count("rejected") == run["rejected"]
    stats = json.loads((out / "latest" / "mdi-exit" / "n1" / "stats.json").read_text())
    assert stats["policy"] == "mdi-exit"
