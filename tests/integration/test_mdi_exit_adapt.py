"""MDI-Exit's threshold adaptation (Alg. 4) needs room above T_Q2 in real agents: the testbed's
mdi-* presets give every node ``max_queue_tasks`` = 80, and a topology that holds its nodes to
the default 32 gets one WARNING per worker at start, in that worker's own log, naming the bound,
T_Q2, T_O and the bound to set. Real agent processes, demo bundle, loopback."""

import json
import os

from agent.cli import main
from agent.testbed.presets import TOPOLOGY_DIR

WARNING = "max_queue_tasks = 32 is too small for mdi-exit"


def _preset(path, **agent):
    """The shipped mdi-2-node preset written to ``path``, with ``agent`` over its agent block
    and a 1 s warm-up: the preset's 5 s warm-up only delays when delays are measured, which
    this test does not read (the warning is logged at start, the counts cover every task)."""
    with open(os.path.join(TOPOLOGY_DIR, "mdi-2-node.json"), encoding="utf-8") as f:
        topo = json.load(f)
    topo["agent"].update(agent)
    topo["warmup_s"] = 1.0
    path.write_text(json.dumps(topo))
    return str(path)


def _run(topology, out, result):
    return main(["testbed", "--topology", topology, "--mdi-mode", "adapt", "--policies",
                 "mdi-exit", "--rates", "2", "--duration", "1", "--out", str(out), "--json",
                 str(result), "--no-plots"])


def test_adapt_nodes_held_to_32_tasks_warn_once_at_start_and_the_preset_does_not(tmp_path,
                                                                               capsys):
    """mdi-2-node with ``agent.max_queue_tasks`` = 32, --mdi-mode adapt: each worker's log has
    the one WARNING (Alg. 4's T_Q2 = 30, Alg. 1's T_O = 50, set at least 80), the source's log
    none, and every task is still served; the shipped preset's run logs no such line and its
    nodes run with 80."""
    path = _preset(tmp_path / "tight-topology.json", max_queue_tasks=32)
    assert _run(path, tmp_path / "tight", tmp_path / "tight.json.out") == 0, \
        capsys.readouterr().out
    run = json.loads((tmp_path / "tight.json.out").read_text())["runs"][0]
    assert run["lost"] == 0 and run["completed"] + run["rejected"] == run["created"] > 0
    logs = tmp_path / "tight" / "latest" / "mdi-exit"
    for node in ("n1", "n2"):
        lines = [line for line in (logs / (node + ".log")).read_text().splitlines()
                 if WARNING in line]
        assert len(lines) == 1, lines
        assert " WARNING " in lines[0] and "queue_high = 30" in lines[0]
        assert "output_queue_limit = 50" in lines[0] and "at least 80" in lines[0]
    assert not any(WARNING in (logs / name).read_text() for name in os.listdir(logs)
                   if name.startswith("cam") and name.endswith(".log"))

    assert _run(_preset(tmp_path / "preset-topology.json"), tmp_path / "preset",
                tmp_path / "preset.json.out") == 0
    logs = tmp_path / "preset" / "latest" / "mdi-exit"
    for node in ("n1", "n2"):
        assert "too small for mdi-exit" not in (logs / (node + ".log")).read_text()
        assert "max_queue_tasks = 80" in (logs / (node + ".toml")).read_text()
