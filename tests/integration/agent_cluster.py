"""Helpers for agent integration tests: a tiny real bundle, node configs, agent processes.

Agents run as real ``python -m agent run`` processes on loopback with real ZeroMQ sockets and
real onnxruntime engines (the 2-stage cut of the tiny multi-exit model from ``engines.tiny_model``).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import tempfile
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from agent.config.node import NodeConfig, Peer
from agent.testbed.local import read_stats
from agent.testbed.ports import free_ports
from agent.testbed.procs import AGENT_LAUNCHER, AgentProcess, LocalAgents

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_BUILT: List[str] = []  # the folder of this process's first build, copied for later calls
_BUILT_FILES = ("tiny.onnx", "bundle", "replay.npz")


def build_two_stage_bundle(directory: str) -> str:
    """Bundle of the tiny multi-exit model cut in 2 stages (stage 1 has an exit head), plus a
    replay set next to it; returns the bundle dir. The build is deterministic (fixed seeds,
    byte-identical files), so a process builds it once and copies those files into each later
    ``directory``: every caller still gets files of its own to read or damage."""
    if not _BUILT:
        cache = tempfile.mkdtemp(prefix="two-stage-bundle-")
        atexit.register(shutil.rmtree, cache, True)
        _build_two_stage_bundle(cache)
        _BUILT.append(cache)
    os.makedirs(directory, exist_ok=True)
    for name in _BUILT_FILES:
        src, dst = os.path.join(_BUILT[0], name), os.path.join(directory, name)
        if os.path.isdir(src):
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copyfile(src, dst)
    return os.path.join(directory, "bundle")


def _build_two_stage_bundle(directory: str) -> str:
    """The build itself, into ``directory``; returns the bundle dir."""
    import onnx

    from engines.build import build_bundle
    from engines.tiny_model import FINAL, make_tiny_multi_exit

    os.makedirs(directory, exist_ok=True)
    model_path = os.path.join(directory, "tiny.onnx")
    onnx.save(make_tiny_multi_exit(seed=1), model_path)
    out = os.path.join(directory, "bundle")
    # One cut after the second conv: stage 1 carries exit head e1, stage 2 the final head.
    build_bundle(model_path, ["c2"], {1: "e1"}, out, final_output=FINAL)
    rng = np.random.default_rng(0)
    np.savez(os.path.join(directory, "replay.npz"),
             x=rng.normal(size=(64, 1, 8, 8)).astype(np.float32),
             y=rng.integers(0, 3, size=64).astype(np.int64))
    return out


def completed(records: List[dict]) -> int:
    """How many of the task ``records`` (a source's final lines) completed."""
    return sum(r["status"] == "completed" for r in records)


def stage_flops(bundle: str, stage: int) -> float:
    """alpha of ``stage`` in ``bundle`` (to set emulated capacities in service times)."""
    from engines.bundle import load_bundle

    return float(load_bundle(bundle).stage(stage).flops)


class Cluster:
    """Node configs for a topology {node id: stage} (stage 0 = source), and their processes.

    The processes are ``agent.testbed.procs`` agents: ``start`` launches one without waiting
    for it (tests start a cluster in any order and wait for what they check), ``procs`` keeps
    the last process of every node for its exit status.
    """

    launcher = AGENT_LAUNCHER  # python <launcher> run --config F; a subclass may register plug-ins

    def __init__(self, root: str, bundle: str, stages: Dict[str, int], **common):
        self.root = root
        self.bundle = bundle
        self.stages = dict(stages)
        ports = free_ports(2 * len(stages))
        self.ports = {n: (ports[2 * i], ports[2 * i + 1]) for i, n in enumerate(stages)}
        self.common = common
        self.agents = LocalAgents(root, fresh=False, launcher=self.launcher)
        self.procs: Dict[str, AgentProcess] = {}

    @property
    def logs(self) -> Dict[str, str]:
        """Each started node's log file."""
        return {n: p.log_path for n, p in self.procs.items()}

    def peer(self, node: str) -> Peer:
        c, d = self.ports[node]
        return Peer(id=node, stage=self.stages[node], control_address="tcp://127.0.0.1:%d" % c,
                    data_address="tcp://127.0.0.1:%d" % d, link_rate_bytes_s=1e7)

    def config(self, node: str, **over) -> NodeConfig:
        h = self.stages[node]
        peers = [self.peer(n) for n, s in self.stages.items()
                 if n != node and (s in (h - 1, h + 1) or (s == 0 and h > 0))]
        c, d = self.ports[node]
        kw = dict(node_id=node, role="source" if h == 0 else "worker", stage=h,
                  bundle=self.bundle, state_dir=os.path.join(self.root, node),
                  control_bind="tcp://127.0.0.1:%d" % c, data_bind="tcp://127.0.0.1:%d" % d,
                  peers=tuple(peers), heartbeat_interval_s=0.2, neighbour_timeout_rounds=5,
                  ack_timeout_s=1.0, result_timeout_s=6.0, warmup_runs=1, timing_runs=3,
                  status_interval_s=0.5, replay_path=os.path.join(os.path.dirname(self.bundle),
                                                                   "replay.npz"),
                  online_capacity=False, drain_timeout_s=20.0)
        kw.update(self.common)
        kw.update(over)
        return NodeConfig(**kw)

    def start(self, node: str, **over) -> None:
        """Write ``node``'s config (with ``over`` on top) and launch it."""
        cfg = self.config(node, **over)
        os.makedirs(cfg.state_dir, exist_ok=True)
        self.agents.write({node: cfg})
        self.procs[node] = self.agents.launch([node])[0]

    def stats(self, node: str) -> Optional[dict]:
        """``node``'s stats.json (None before its first write)."""
        return read_stats(os.path.join(self.root, node, "stats.json"))

    def records(self, node: str) -> List[dict]:
        """``node``'s records: its rotated files (records.jsonl.N .. .1), then records.jsonl,
        without a last line still being written (no newline yet: it is read whole next time)."""
        path = os.path.join(self.root, node, "records.jsonl")
        n = 1
        while os.path.exists("%s.%d" % (path, n)):
            n += 1
        out: List[dict] = []
        for p in ["%s.%d" % (path, i) for i in range(n - 1, 0, -1)] + [path]:
            if os.path.exists(p):
                with open(p) as f:
                    out += [json.loads(line) for line in f
                            if line.endswith("\n") and line.strip()]
        return out

    def counters(self, node: str) -> dict:
        """``node``'s counters from its stats file ({} before the first write)."""
        return (self.stats(node) or {}).get("counters", {})

    def made_since(self, node: str, since: float) -> List[dict]:
        """``node``'s records of tasks made at or after wall time ``since`` ([] while a line
        is being written)."""
        try:
            return [r for r in self.records(node) if r.get("created_wall", 0) >= since]
        except ValueError:
            return []

    def wait_for(self, cond: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``cond`` until true; fail with the agents' log tails otherwise."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return
            for n, p in self.procs.items():
                if p.poll() is not None and p.returncode not in (0, -signal.SIGKILL):
                    raise AssertionError("agent %s exited with %s:\n%s" % (n, p.returncode, self.tail(n)))
            time.sleep(0.1)
        raise AssertionError("timed out waiting for %s\n%s" % (
            what, "\n".join("--- %s\n%s" % (n, self.tail(n)) for n in self.procs)))

    def alive_at(self, node: str, peers: List[str]) -> bool:
        s = self.stats(node)
        return bool(s) and all(p in s["alive"] for p in peers)

    def tasks(self, node: str) -> dict:
        """The source's task counts from its stats file ({} before the first write)."""
        return (self.stats(node) or {}).get("tasks", {})

    def finished(self, node: str, n: int) -> bool:
        """True once the source has created ``n`` tasks and none is pending."""
        t = self.tasks(node)
        return t.get("created", 0) >= n and t.get("pending", 1) == 0

    def tail(self, node: str, n: int = 25) -> str:
        """The last ``n`` lines of ``node``'s log."""
        return "".join(line + "\n" for line in self.procs[node].log_lines(n, 1 << 20))

    def kill(self, node: str) -> None:
        """SIGKILL ``node`` and wait for it."""
        self.agents.kill(node)

    def stop_all(self) -> None:
        """SIGTERM the sources first (they drain their tasks in flight while the workers still
        serve), then the workers; SIGKILL whatever is still running after 60 s."""
        self.agents.stop([n for n in self.procs if self.stages[n] == 0], timeout_s=60.0)
        self.agents.stop([n for n in self.procs if self.stages[n] != 0], timeout_s=60.0)
        self.agents.close()
