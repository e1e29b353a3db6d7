"""The testbed: start agents as local processes, push load, collect records, compare policies.

For each (policy, total arrival rate) the testbed writes one node config per agent of the
topology (``dump_config``), starts every worker as ``python -m agent run --config FILE``, waits
for their READY=1 (sd_notify), starts the sources with ``max_tasks`` set so that each creates
``share * rate * (warmup + duration)`` tasks on average, waits until every task a source created
has a record in its ``records.jsonl``, stops all agents with SIGTERM and summarises the records.
Nothing is simulated: the real engines run, tasks cross real ZeroMQ sockets on loopback; only
slower devices and links are emulated when the topology says so (``emulate_capacity_flops``,
link ``rate_bytes_s``), and every report says so.

Delay and accuracy are taken over the tasks created after the warm-up (the first configuration
phase); created/completed/lost count every task of the run. The model column is DTO-EE's eq. 8
(``agent.policies.model.mean_response_time``) evaluated for the routing and exit ratios the run
actually used, read from the records' paths.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from agent.config import NodeConfig, dump_config, parse_config
from agent.errors import UsageError
from agent.testbed_procs import AgentProcess, NotifyListener, free_ports, wait_ready
from agent.testbed_report import RunResult, read_records, summarise_records
from agent.testbed_topology import StageInfo, Topology, scenario_object

# Rate of a link the topology does not emulate when emulation is on elsewhere: loopback speed.
FAST_LINK_BYTES_S = 1e9


@dataclass(frozen=True)
class TestbedSettings:
    """How the testbed runs each (policy, rate) pair."""

    duration_s: float  # measured load per run, after the warm-up
    out_dir: str  # configs, logs, records, results and plots go here
    ready_timeout_s: float = 90.0  # workers must report READY=1 by then
    drain_timeout_s: float = 90.0  # after the load: every task must have a record by then
    python: str = ""  # interpreter for the agents; "" = this one


def bundle_stages(bundle) -> List[StageInfo]:
    """Stage FLOP, input bytes and exit flags of an ``engines.bundle.Bundle``."""
    return [StageInfo(float(s.flops), float(s.input_bytes), bool(s.has_exit))
            for s in bundle.stages]


def default_remaining(topo: Topology, bundle) -> List[float]:
    """I_h per stage for the topology's initial thresholds (0.8 where none is given)."""
    from engines.exit_profile import exit_stats, load_exit_profile

    h = len(bundle.stages)
    if not bundle.exit_profile_path:
        return [1.0] * h
    profile = load_exit_profile(bundle.exit_profile_path)
    th = {s: topo.thresholds.get(s, 0.8) for s in profile.early_exit_stages}
    return [float(x) for x in exit_stats(profile, th).remaining]


def _link_rate(topo: Topology, a: str, b: str) -> Optional[float]:
    """Emulated rate of the link between a and b, either direction; None if not emulated."""
    for l in topo.links:
        if {l.src, l.dst} == {a, b}:
            return l.rate_bytes_s
    return None


def node_configs(topo: Topology, bundle_path: str, policy: str, total_rate: float,
                 load_s: float, run_dir: str, seed: int = 0) -> Dict[str, NodeConfig]:
    """One validated ``NodeConfig`` per agent of a local run on loopback."""
    ids = topo.node_ids()
    ports = free_ports(2 * len(ids))
    ctrl = {n: "tcp://127.0.0.1:%d" % ports[2 * i] for i, n in enumerate(ids)}
    data = {n: "tcp://127.0.0.1:%d" % ports[2 * i + 1] for i, n in enumerate(ids)}
    emulate_links = any(l.rate_bytes_s is not None for l in topo.links)
    knobs = topo.knobs.get(policy, {}) if isinstance(topo.knobs.get(policy), dict) else {}
    h = topo.num_stages
    thresholds = [topo.thresholds.get(s, 0.8) for s in range(1, h + 1)] if topo.thresholds \
        else []

    def peer(me: str, other: str) -> dict:
        rate = _link_rate(topo, me, other)
        return {"id": other, "stage": topo.stage_of(other), "control_address": ctrl[other],
                "data_address": data[other],
                "link_rate_bytes_s": float(rate if rate is not None else FAST_LINK_BYTES_S)}

    out: Dict[str, NodeConfig] = {}
    for n in ids:
        st = topo.stage_of(n)
        neigh = [l.dst for l in topo.successors(n)] + [l.src for l in topo.predecessors(n)]
        if st > 0:  # results go straight back to every source
            neigh += [s.id for s in topo.sources if s.id not in neigh]
        obj = dict(topo.agent)
        obj.update({
            "node_id": n, "role": "worker" if st else "source", "stage": st,
            "bundle": bundle_path, "state_dir": os.path.join(run_dir, n),
            "control_bind": ctrl[n], "data_bind": data[n],
            "peers": [peer(n, o) for o in neigh], "policy": policy, "policy_knobs": knobs,
            "tradeoff": topo.tradeoff, "slot_length_s": topo.slot_s, "backend": topo.backend,
            "emulate_links": emulate_links, "records_flush_interval_s": 0.2,
        })
        if thresholds:
            obj["thresholds"] = thresholds
        if st == 0:
            share = [s.share for s in topo.sources if s.id == n][0]
            obj.update({"arrival": "poisson", "arrival_rate_tasks_s": share * total_rate,
                        "max_tasks": max(1, int(round(share * total_rate * load_s))),
                        "seed": seed * 1000 + ids.index(n) + 1})
        else:
            w = [w for w in topo.workers if w.id == n][0]
            if w.emulate_capacity_flops is not None:
                obj["emulate_capacity_flops"] = w.emulate_capacity_flops
        out[n] = parse_config(obj, run_dir, where="testbed node %s" % n)
    return out


def _count_records(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip().endswith(b"}"))
    except FileNotFoundError:
        return 0


def empirical_routing(topo: Topology, link_counts: Mapping[Tuple[str, str], int]
                      ) -> Dict[str, Dict[str, float]]:
    """p_ij from the tasks counted on each link; a node that sent nothing gets uniform rows."""
    out: Dict[str, Dict[str, float]] = {}
    for n in topo.node_ids():
        succ = [l.dst for l in topo.successors(n)]
        if not succ:
            continue
        counts = [link_counts.get((n, s), 0) for s in succ]
        total = float(sum(counts))
        out[n] = {s: (c / total if total else 1.0 / len(succ)) for s, c in zip(succ, counts)}
    return out


def empirical_remaining(stages: Sequence[StageInfo], exit_counts: Mapping[int, int],
                        fallback: Sequence[float]) -> List[float]:
    """I_h from the number of tasks that left at each stage (fallback where none arrived)."""
    entering = float(sum(exit_counts.values()))
    rem = []
    for h, st in enumerate(stages, start=1):
        left = float(exit_counts.get(h, 0))
        if not st.has_exit:
            rem.append(1.0)
        elif entering > 0:
            rem.append((entering - left) / entering)
        else:
            rem.append(float(fallback[h - 1]))
        entering -= left
    return rem


def model_delay(topo: Topology, stages: Sequence[StageInfo], total_rate: float,
                result: RunResult, fallback_remaining: Sequence[float]) -> Optional[float]:
    """Eq. 8 for the routing and exit ratios the run used; None without paths or capacities."""
    from agent.policies.model import mean_response_time
    from agent.scenario import parse_scenario

    if not result.link_counts or not topo.capacities_emulated:
        return None
    if any(w.emulate_capacity_flops is None for w in topo.workers):
        return None
    rem = empirical_remaining(stages, result.exit_counts, fallback_remaining)
    scenario = parse_scenario(scenario_object(topo, stages, total_rate, rem))
    t = mean_response_time(scenario, empirical_routing(topo, result.link_counts))
    return t if math.isfinite(t) else None


def run_local(topo: Topology, bundle, policy: str, total_rate: float,
              settings: TestbedSettings, seed: int = 0,
              tick: Optional[Callable[[str, float], None]] = None) -> RunResult:
    """Run one (policy, rate) pair on local processes and summarise its records.

    ``tick(phase, fraction)`` is called while waiting, for the progress bar.
    """
    stages = bundle_stages(bundle)
    run_dir = os.path.join(settings.out_dir, "%s-%g" % (policy, total_rate))
    os.makedirs(run_dir, exist_ok=True)
    load_s = topo.warmup_s + settings.duration_s
    cfgs = node_configs(topo, bundle.path, policy, total_rate, load_s, run_dir, seed)
    paths = {}
    for n, cfg in cfgs.items():
        paths[n] = os.path.join(run_dir, n + ".toml")
        with open(paths[n], "w", encoding="utf-8") as f:
            f.write(dump_config(cfg))
    listener = NotifyListener()
    procs: Dict[str, AgentProcess] = {}
    tick = tick or (lambda phase, frac: None)
    try:
        def start(ids: Sequence[str]) -> List[AgentProcess]:
            started = []
            for n in ids:
                procs[n] = AgentProcess(n, paths[n], os.path.join(run_dir, n + ".log"),
                                        listener.path, settings.python or _python())
                started.append(procs[n])
            return started

        workers = start([w.id for w in topo.workers])
        wait_ready(workers, listener, settings.ready_timeout_s,
                   on_tick=lambda: tick("starting agents", 0.0))
        sources = start([s.id for s in topo.sources])
        wait_ready(sources, listener, settings.ready_timeout_s,
                   on_tick=lambda: tick("starting sources", 0.0))
        expected = {s.id: cfgs[s.id].max_tasks for s in topo.sources}
        records = {s.id: os.path.join(cfgs[s.id].state_dir, "records.jsonl")
                   for s in topo.sources}
        t0 = time.monotonic()
        deadline = t0 + load_s * 3 + settings.drain_timeout_s
        total = float(sum(expected.values()))
        while True:
            done = sum(min(_count_records(records[s]), expected[s]) for s in expected)
            if done >= total:
                break
            for n, p in procs.items():
                if p.poll() is not None:
                    raise UsageError("agent %s exited with status %s during the run (log %s: %s)"
                                     % (n, p.poll(), p.log_path, p.log_tail()))
            if time.monotonic() > deadline:
                break  # summarised below: tasks without a record count as lost
            tick("load" if time.monotonic() - t0 < load_s else "draining", done / total)
            time.sleep(0.1)
    finally:
        for p in procs.values():
            p.stop()
        listener.close()
    recs: List[dict] = []
    warm: List[dict] = []
    for s in topo.sources:
        rs = read_records(records[s.id])
        t_first = min((_created(r) for r in rs if _created(r) is not None), default=None)
        for r in rs:
            c = _created(r)
            (warm if t_first is not None and c is not None and c - t_first < topo.warmup_s
             else recs).append(r)
    everything = summarise_records(recs + warm, policy, total_rate, topo.capacities_emulated,
                                   duration_s=load_s,
                                   expected_created=sum(expected.values()))
    measured = summarise_records(recs, policy, total_rate, topo.capacities_emulated,
                                 duration_s=settings.duration_s)
    # counts over the whole run, delay/accuracy/routing over the measured window
    measured.created, measured.completed, measured.lost = (
        everything.created, everything.completed, everything.lost)
    measured.resent = everything.resent
    measured.model_delay_s = model_delay(topo, stages, total_rate, measured,
                                         default_remaining(topo, bundle))
    return measured


def _created(rec: Mapping) -> Optional[float]:
    for key in ("created_mono", "created_wall", "created"):
        v = rec.get(key)
        if isinstance(v, (int, float)):
            return float(v)
    return None


def _python() -> str:
    import sys

    return sys.executable
