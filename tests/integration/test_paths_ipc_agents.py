"""A relative ``ipc://`` endpoint in a node config is the socket beside the config file, as
every other relative path in it is: agents started from different working folders (systemd
starts them in /) bind and reach the same sockets, and no task is lost.

Three real agents (a source and two workers of the tiny 2-stage bundle) whose configs, each
in a folder of its own under one folder with a space in its name, give every bind and peer
address as ``ipc://../NAME.sock``; the workers are started in their config's folder, the
source in an empty folder elsewhere (as systemd starts it in /).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from agent.config.node import dump_config
from tests.integration.agent_cluster import REPO, Cluster, build_two_stage_bundle

TASKS = 6


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_two_stage_bundle(str(tmp_path_factory.mktemp("tiny")))


def _relative_ipc(text: str, cluster: Cluster) -> str:
    """``text`` (a dumped config) with every node's tcp endpoints as relative ipc paths."""
    for node, (c, d) in cluster.ports.items():
        text = text.replace('"tcp://127.0.0.1:%d"' % c, '"ipc://%s-c.sock"' % node)
        text = text.replace('"tcp://127.0.0.1:%d"' % d, '"ipc://%s-d.sock"' % node)
    assert "tcp://" not in text
    return re.sub(r'(?m)^state_dir = .*$', lambda m: 'state_dir = "state"', text, count=1)


def _records(path: str):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):  # not written yet, or a line being written
        return None


def test_agents_started_from_other_folders_meet_on_the_configs_relative_ipc_sockets(
        bundle, tmp_path):
    """Rule: ``ipc://../NAME.sock`` is taken from the config file's folder: the source started
    elsewhere and the workers started in their config's folder exchange every task (all
    completed), the sockets are the files there and none is made where the source started."""
    folder = tmp_path / "node cfg"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    stages = {"s1": 0, "w1": 1, "w2": 2}
    cluster = Cluster(str(folder), bundle, stages)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    procs, sockets = {}, []
    try:
        for node in ("w1", "w2", "s1"):
            over = dict(arrival_rate_tasks_s=10.0, max_tasks=TASKS) if node == "s1" else {}
            sub = folder / node  # each config in a folder of its own: the sockets are in ..
            sub.mkdir(parents=True)
            text = _relative_ipc(dump_config(cluster.config(node, **over)), cluster)
            (sub / "node.toml").write_text(text.replace('"ipc://', '"ipc://../'), "utf-8")
            with open(str(sub / "log"), "wb") as log:
                procs[node] = subprocess.Popen(
                    [sys.executable, "-m", "agent", "run", "--config", str(sub / "node.toml"),
                     "--parent-pid", str(os.getpid())],
                    cwd=str(elsewhere if node == "s1" else sub), env=env,
                    stdout=subprocess.DEVNULL, stderr=log)
        records = str(folder / "s1" / "state" / "records.jsonl")
        end = time.monotonic() + 180
        while time.monotonic() < end and len(_records(records) or []) < TASKS:
            assert all(p.poll() is None for p in procs.values()), {
                n: (folder / n / "log").read_text() for n in procs}
            time.sleep(0.2)
        recs = _records(records) or []
        sockets = sorted(p.name for p in folder.iterdir() if p.is_socket())
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            p.wait(60)
    assert len(recs) == TASKS, (folder / "s1" / "log").read_text()
    assert all(r["status"] == "completed" for r in recs), [r["status"] for r in recs]
    assert sockets == sorted("%s-%s.sock" % (n, k) for n in stages for k in "cd")
    assert os.listdir(str(elsewhere)) == []
