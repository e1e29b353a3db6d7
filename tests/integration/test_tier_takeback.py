"""A tier's escalation still in the outbox when the higher tier dies is answered at its own tier
at once (real MLCI agents on the demo bundle, loopback, emulated devices and links; the cloud
SIGKILLed with escalations sent and not ACKed)."""

import json
import os
import time

from agent.testbed.local import node_configs, wait_records
from agent.testbed.procs import LocalAgents
from agent.testbed.report import read_records
from agent.testbed.topology import TOPOLOGY_DIR, load_topology
from engines.demo import DEMO_BUNDLE_DIR

LEVEL_OF = {"end": 0, "edge": 1, "cloud": 2}
# edge -> cloud at 500 B/s: an escalation (the 3136-byte input) takes over 6 s on the link, so
# one the edge has sent is still in its custody, unACKed, long after the edge's stats show it
SLOW_CLOUD_LINK_B_S = 500.0


def _topology(tmp_path):
    with open(os.path.join(TOPOLOGY_DIR, "mlci.json")) as f:
        obj = json.load(f)
    for link in obj["links"]:
        if (link["from"], link["to"]) == ("edge", "cloud"):
            link["rate_bytes_s"] = SLOW_CLOUD_LINK_B_S
    path = tmp_path / "mlci-slow-cloud.json"
    path.write_text(json.dumps(obj))
    return load_topology(str(path))


def _counters(path):
    try:
        with open(path) as f:
            return json.load(f)["counters"]
    except (OSError, ValueError, KeyError):  # not written yet, or being replaced
        return {}


def test_escalations_in_flight_when_the_cloud_is_killed_are_answered_at_the_edge(tmp_path):
    """SIGKILL the cloud while the edge's escalations to it are sent and not ACKed: the edge
    takes each back and answers it with its own level's result at once (``taken_back``), so no
    task waits for its source's re-issue (every record completed at its first attempt, none
    dropped at the edge for its deadline) and every task has exactly one record."""
    topo = _topology(tmp_path)
    run_dir = str(tmp_path / "run")
    cfgs = node_configs(topo, DEMO_BUNDLE_DIR, "mlci", 6.0, 8.0, run_dir, seed=1)
    records_path = os.path.join(cfgs["user"].state_dir, "records.jsonl")
    edge_stats = os.path.join(cfgs["edge"].state_dir, "stats.json")
    with LocalAgents(run_dir) as agents:
        agents.write(cfgs)
        agents.start(["end", "edge", "cloud"])
        agents.start(["user"])
        deadline = time.monotonic() + 120
        # two escalations sent: the second waits behind the first on the 6-s link
        while time.monotonic() < deadline and _counters(edge_stats).get("sent_to_cloud", 0) < 2:
            time.sleep(0.05)
        assert _counters(edge_stats).get("sent_to_cloud", 0) >= 2, "the edge escalated nothing"
        agents.kill("cloud")
        assert wait_records({"user": records_path}, {"user": cfgs["user"].max_tasks}, 180,
                            agents, lambda el, frac: None)
        agents.stop(["user"])
        # the edge's next stats after the last answer (written every status interval)
        time.sleep(cfgs["edge"].status_interval_s + 0.5)
        agents.stop(["end", "edge"])
        counters = _counters(edge_stats)
    records = read_records(records_path)
    assert len(records) == cfgs["user"].max_tasks
    assert len({r["id"] for r in records}) == len(records)  # one record per task
    assert all(r["status"] == "completed" for r in records), [
        r for r in records if r["status"] != "completed"]
    assert counters.get("taken_back", 0) >= 1, counters
    assert counters.get("drop_deadline", 0) == 0, counters
    reissued = [(r["id"], r["attempts"], round(r["delay_s"], 2)) for r in records
                if r["attempts"] > 1]
    assert not reissued, reissued  # none waited result_timeout_s for its re-issue
    assert all(r["level"] == LEVEL_OF[r["worker"]] for r in records)
