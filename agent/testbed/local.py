"""The testbed: start agents as local processes, push load, collect records, compare policies.

For each policy the testbed writes one node config per agent of the topology (``dump_config``),
starts every worker as ``python -m agent run --config FILE`` and waits for their READY=1
(sd_notify). For each rate it then starts the sources, with ``max_tasks`` set so that each
creates ``share * rate * (warmup + duration)`` tasks on average, waits until every task a
source created has a record in its ``records.jsonl``, stops the sources with SIGTERM and
summarises their records; the workers serve all rates of the policy. Nothing is simulated: the
real engines run, tasks cross real ZeroMQ sockets on loopback; only slower devices and links are
emulated when the topology says so (``emulate_capacity_flops``, link ``rate_bytes_s``), and
every report says so. With ``settings.network`` (``--network netns``) each agent runs in its
device's namespace and the kernel shapes the links; a topology's ``faults`` are injected into
every rate's load (``agent.testbed.inject``).

Delay and accuracy are taken over the tasks created after the warm-up (the first configuration
phase); created/completed/lost count every task of the run. The model column is DTO-EE's eq. 8
(``agent.policies.model.mean_response_time``, its default link model: each link a shared
server of its rate, wire overhead counted) evaluated for the routing and exit ratios the run
actually used: the split of tasks over each node's successors (its send counters in
``stats.json``) and the fraction of tasks leaving at each exit (the records). Next to it, the
simulator (``agent.sim``) on the same routing with FIFO workers and serialised links, the
queueing the agents really have.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from agent.config.node import ConfigError, NodeConfig, parse_config
from agent.errors import first_line
from agent.ops.atomic import write_atomic
from agent.ops.state import RECORDS_FILE, STATS_FILE
from agent.testbed.columns import (empirical_remaining, fifo_sim_delay, link_utilisation,
                                   measured_link_rates, model_delay, routing_used,
                                   sending_s, stats_delta)
from agent.testbed.counters import read_stats, with_ended
from agent.testbed.created import created_so_far
from agent.testbed.cutshort import cut_short
from agent.testbed.deaths import AgentDied, NetworkBroke
from agent.testbed.exits import default_remaining
from agent.testbed.faultlog import record_fault_phases
from agent.testbed.inject import FaultRunner
from agent.testbed.phasecheck import PhaseTally
from agent.testbed.ports import free_ports
from agent.testbed.procs import LocalAgents
from agent.testbed.rundir import rate_label
from agent.testbed.nodeparts import node_config_error
from agent.testbed.asrun import applied_links, senders_pace, told_rate
from agent.testbed.report import (RunResult, _created, read_records, served_rate,
                                   summarise_records, warmup_end)
from agent.testbed.topology import Topology
from agent.testbed.topology_bundle import StageInfo
from agent.policies.fixed import node_knobs
from agent.policies.mdi_exit.rules import params_from_knobs as mdi_params
from agent.policies.thresholds import DEFAULT_THRESHOLD

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
    # agent.testbed.netns.Network the agents run in (None: loopback, links paced by senders)
    network: Optional[object] = None
    # a fleet's sources were checked just before the run (``agent.testbed.fleet.fleet_inputs``)
    sources_checked: bool = False


def bundle_stages(bundle) -> List[StageInfo]:
    """Stage FLOP, input bytes and exit flags of an ``engines.bundle.Bundle``."""
    return [StageInfo(float(s.flops), float(s.input_bytes), bool(s.has_exit))
            for s in bundle.stages]


def _link_rate(topo: Topology, a: str, b: str) -> Optional[float]:
    """Rate the agents are given for the link between a and b, either direction (its
    ``config_rate_bytes_s`` when set); None if not emulated."""
    for l in topo.links:
        if {l.src, l.dst} == {a, b}:
            return told_rate(l)
    return None


def node_configs(topo: Topology, bundle_path: str, policy: str, total_rate: float,
                 load_s: float, run_dir: str, seed: int = 0,
                 ports: Optional[Sequence[int]] = None, network=None) -> Dict[str, NodeConfig]:
    """One validated ``NodeConfig`` per agent of a local run (loopback, or each agent at its
    device's address on a netns ``network``, where the kernel shapes the links instead of the
    senders pacing them).

    Every agent keeps its state in ``run_dir/<id>``. ``ports`` (two per node, in ``node_ids``
    order) keeps the endpoints of an earlier call, so restarted sources are where the workers
    expect them.
    """
    ids = topo.node_ids()
    ports = list(ports) if ports is not None else free_ports(2 * len(ids))
    addr = {n: network.plan.address_of(n) if network is not None else "127.0.0.1" for n in ids}
    ctrl = {n: "tcp://%s:%d" % (addr[n], ports[2 * i]) for i, n in enumerate(ids)}
    data = {n: "tcp://%s:%d" % (addr[n], ports[2 * i + 1]) for i, n in enumerate(ids)}
    objs = node_objects(topo, bundle_path, policy, total_rate, load_s, run_dir, ctrl, data, seed,
                        paced=network is None)
    cfgs = {}
    for n, obj in objs.items():
        try:
            cfgs[n] = parse_config(obj, run_dir, where="testbed node %s" % n)
        except ConfigError as exc:  # a value of the topology's: said where its file has it
            raise node_config_error(topo, exc, "testbed node %s" % n, obj, policy) from None
    return cfgs


def node_objects(topo: Topology, bundle_path: str, policy: str, total_rate: float,
                 load_s: float, run_dir: str, ctrl: Mapping[str, str], data: Mapping[str, str],
                 seed: int = 0, paced: bool = True) -> Dict[str, dict]:
    """The node-config objects (before ``parse_config``) of every agent of a topology.

    ``ctrl`` and ``data`` give each node's control and data endpoint (bound there, and where
    its peers reach it); ``paced`` False leaves link emulation to the kernel. The one place a
    topology turns into node configs: the testbed parses them as they are, ``edge-agent fleet render`` (``agent.fleet.render``) adds what a
    deployed device needs (binds on every interface, keys, paths) before parsing them.
    """
    ids = topo.node_ids()
    emulate_links = paced and senders_pace(topo)
    knobs = topo.knobs.get(policy, {}) if isinstance(topo.knobs.get(policy), dict) else {}
    h = topo.num_stages
    thresholds = [topo.thresholds.get(s, DEFAULT_THRESHOLD) for s in range(1, h + 1)] if topo.thresholds \
        else []

    def peer(me: str, other: str) -> dict:
        rate = _link_rate(topo, me, other)
        obj = {"id": other, "stage": topo.stage_of(other), "control_address": ctrl[other],
               "data_address": data[other],
               "link_rate_bytes_s": float(rate if rate is not None else FAST_LINK_BYTES_S)}
        if topo.last_stage_of(other) > topo.stage_of(other):
            obj["last_stage"] = topo.last_stage_of(other)
        return obj

    out: Dict[str, dict] = {}
    for n in ids:
        st = topo.stage_of(n)
        neigh = [l.dst for l in topo.successors(n)] + [l.src for l in topo.predecessors(n)]
        if st > 0:  # results go straight back to every source
            neigh += [s.id for s in topo.sources if s.id not in neigh]
            # workers of one stage hear each other (DTO-EE's threshold step is agreed among them)
            neigh += [w.id for w in topo.workers if w.stage == st and w.id != n]
        elif policy == "dtoee" and knobs.get("step") == "joint":
            # so do the sources when they route jointly (DTO-EE's stage reports)
            neigh += [s.id for s in topo.sources if s.id != n]
        neigh = list(dict.fromkeys(neigh))  # a mesh neighbour is successor and predecessor
        obj = dict(topo.agent)
        obj.update({
            "node_id": n, "role": "worker" if st else "source", "stage": st,
            "bundle": bundle_path,
            "state_dir": os.path.join(run_dir, n),
            "control_bind": ctrl[n], "data_bind": data[n],
            "peers": [peer(n, o) for o in neigh], "policy": policy,
            "policy_knobs": node_knobs(policy, knobs, n),  # fixed: this node's own row
            "tradeoff": topo.tradeoff, "slot_length_s": topo.slot_s, "backend": topo.backend,
            "emulate_links": emulate_links, "records_flush_interval_s": 0.2, "records_max_bytes": 0,
        })
        if thresholds:
            obj["thresholds"] = thresholds
        if st == 0:
            share = [s.share for s in topo.sources if s.id == n][0]
            obj.update({"arrival": "poisson", "arrival_rate_tasks_s": share * total_rate,
                        "max_tasks": max(1, int(round(share * total_rate * load_s))),
                        "seed": seed * 1000 + ids.index(n) + 1})
        else:  # the run's seed: --seed changes the workers' routing draws too
            obj["seed"] = seed
            w = [w for w in topo.workers if w.id == n][0]
            if w.emulate_capacity_flops is not None:
                obj["emulate_capacity_flops"] = w.emulate_capacity_flops
            if w.stages[1] > w.stage:
                obj["last_stage"] = w.stages[1]
            if w.terminal:
                obj["terminal"] = True
        out[n] = obj
    return out


def wait_records(records: Mapping[str, str], expected: Mapping[str, int], timeout_s: float,
                 agents: LocalAgents, tick: Callable[[float, float], None]) -> bool:
    """Wait until each source's records file holds ``expected`` tasks; False at the timeout.

    Sources record a task once its fate is known (completed, or lost after its re-issues), so
    a full file means no task is still in flight.
    """
    t0 = time.monotonic()
    total = float(sum(expected.values())) or 1.0
    while True:
        done = sum(min(_count_records(records[s]), expected[s]) for s in expected)
        if done >= total:
            return True
        agents.check_alive()
        elapsed = time.monotonic() - t0
        if elapsed > timeout_s:
            return False  # summarised anyway: tasks without a record count as lost
        tick(elapsed, done / total)
        time.sleep(0.1)


def _count_records(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip().endswith(b"}"))
    except FileNotFoundError:
        return 0


def run_local(topo: Topology, bundle, policy: str, rates: Sequence[float],
              settings: TestbedSettings, seed: int = 0,
              tick: Optional[Callable[[int, str, float], None]] = None,
              on_result: Optional[Callable[[RunResult], None]] = None) -> List[RunResult]:
    """Run one policy at every rate on local processes; one ``RunResult`` per rate.

    The workers start once per policy and keep running (and learning) across the rates, as a
    fleet does when its load changes; the sources restart for every rate, on the same
    endpoints, with that rate and a fresh records file. ``tick(rate_index, phase, fraction)``
    is called while waiting, for the progress bar; ``on_result(result)`` after each rate (its
    records and ``run.json`` are on disk by then, see ``write_run_file``).
    """
    stages = bundle_stages(bundle)
    run_dir = os.path.join(settings.out_dir, policy)
    load_s = topo.warmup_s + settings.duration_s
    tick = tick or (lambda i, phase, frac: None)
    ports = free_ports(2 * len(topo.node_ids()))
    results: List[RunResult] = []
    after: Dict[str, Optional[dict]] = {}
    tally = PhaseTally()  # DTO-EE's configuration phases, rate by rate
    net = settings.network
    shown = applied_links(topo, net.plan if net is not None else None)  # its links as run
    with LocalAgents(run_dir, settings.python, wrap=net.wrap if net is not None else None) \
            as agents:
        faults = FaultRunner(topo.faults, agents, net)
        cfgs = node_configs(topo, bundle.path, policy, rates[0], load_s, run_dir, seed, ports,
                            net)
        agents.write({w.id: cfgs[w.id] for w in topo.workers})
        settle = max(cfgs[w.id].status_interval_s for w in topo.workers) + 0.1
        agents.start([w.id for w in topo.workers], settings.ready_timeout_s,
                      on_tick=lambda: tick(0, "starting workers", 0.0))
        for i, rate in enumerate(rates):
            cfgs = node_configs(topo, bundle.path, policy, rate, load_s, run_dir,
                                seed * 100 + i, ports, net)
            # the workers' counters after the previous rate (idle since) are this one's start
            before = after if i else {}
            names = {s.id: "%s-%s" % (s.id, rate_label(rate)) for s in topo.sources}
            agents.write({names[s.id]: cfgs[s.id] for s in topo.sources})
            agents.start([names[s.id] for s in topo.sources], settings.ready_timeout_s,
                         on_tick=lambda i=i: tick(i, "starting sources", 0.0))
            expected = {s.id: cfgs[s.id].max_tasks for s in topo.sources}
            records = {s.id: os.path.join(cfgs[s.id].state_dir, RECORDS_FILE)
                       for s in topo.sources}
            faults.start()
            try:
                wait_records(records, expected, load_s * 3 + settings.drain_timeout_s, agents,
                             lambda el, frac, i=i: (faults.poll(), _check_network(net), tick(
                                 i, "load" if el < load_s else "draining", frac)))
            except BaseException as exc:  # Ctrl-C or an agent's death: keep what ran so far
                cut_short(agents, faults, [names[s.id] for s in topo.sources],
                          lambda exc=exc: partial_result(shown, bundle, stages, policy, rate,
                                                         records, expected, settings.duration_s,
                                                         load_s, exc),
                          on_result)
                raise
            faults.finish(agents_ready_s=settings.ready_timeout_s)
            agents.stop([names[s.id] for s in topo.sources])
            try:
                after = _worker_stats(topo, cfgs, agents, settle, faults.ended)
            except AgentDied as exc:  # a worker gone once the load was over: still kept
                cut_short(agents, faults, (), lambda exc=exc: partial_result(
                    shown, bundle, stages, policy, rate, records, expected,
                    settings.duration_s, load_s, exc), on_result)
                raise
            # this rate's records and final source stats move aside; the sources' saved policy
            # state stays, so the next rate's sources resume from it as a restarted device does
            records = _archive(cfgs, [s.id for s in topo.sources],
                               os.path.join(run_dir, rate_label(rate)))
            stats = {s.id: read_stats(os.path.join(os.path.dirname(records[s.id]), STATS_FILE))
                     for s in topo.sources}
            stats.update(stats_delta(before, after))
            write_run_file(os.path.join(run_dir, rate_label(rate)), "local", policy, rate,
                           records, expected, stats, settings.duration_s, load_s)
            results.append(summarise_rate(shown, bundle, stages, policy, rate, records, expected,
                                      stats, settings.duration_s, load_s))
            record_fault_phases(results[-1], faults, records, topo.warmup_s,
                                os.path.join(run_dir, rate_label(rate)))
            tally.record(results[-1], cfgs, os.path.join(run_dir, rate_label(rate)))
            if on_result is not None:
                on_result(results[-1])
    return results


def _check_network(net) -> None:
    """Stop the run (its records kept as a partial result, ``NetworkBroke``: said as an agent's
    death is) when the network is no longer the one planned: a dead shim drops its packets."""
    problem = net.problem() if net is not None else None
    if problem:
        raise NetworkBroke(problem)


RUN_FILE = "run.json"  # per (policy, rate) folder: what ``edge-agent report`` re-summarises


def write_run_file(directory: str, kind: str, policy: str, rate: float,
                   records: Mapping[str, str], expected: Mapping[str, int],
                   stats: Mapping[str, Optional[dict]], duration_s: float, load_s: float) -> None:
    """``directory/run.json``: the inputs of one rate's summary besides its records files
    (paths relative to ``directory``), so a report can redo the summary later."""
    obj = {"kind": kind, "policy": policy, "rate": rate,
           "records": {s: os.path.relpath(p, directory) for s, p in records.items()},
           "expected": dict(expected), "stats": dict(stats), "duration_s": duration_s,
           "load_s": load_s}
    os.makedirs(directory, exist_ok=True)
    write_atomic(os.path.join(directory, RUN_FILE), json.dumps(obj, indent=1) + "\n")


def _archive(cfgs: Mapping[str, NodeConfig], ids: Sequence[str], directory: str
             ) -> Dict[str, str]:
    """Move each node's records.jsonl and stats.json into ``directory/<id>/``; new paths of
    the records files."""
    out = {}
    for n in ids:
        dest = os.path.join(directory, n)
        os.makedirs(dest, exist_ok=True)
        for name in (RECORDS_FILE, STATS_FILE):
            src = os.path.join(cfgs[n].state_dir, name)
            if os.path.exists(src):
                os.replace(src, os.path.join(dest, name))
        out[n] = os.path.join(dest, RECORDS_FILE)
    return out


def _worker_stats(topo: Topology, cfgs: Mapping[str, NodeConfig], agents: LocalAgents,
                  settle_s: float, ended: Mapping[str, dict]) -> Dict[str, Optional[dict]]:
    """Workers' stats.json once they have rewritten it with the load at rest, each with the
    counters of its processes that faults ended (``ended``) added: running totals over the
    worker's processes (``agent.testbed.counters``).

    Workers rewrite it every ``status_interval_s``; waiting that long after the last task makes
    the counters current.
    """
    time.sleep(settle_s)
    agents.check_alive()
    return {w.id: with_ended(read_stats(os.path.join(cfgs[w.id].state_dir, STATS_FILE)),
                             ended.get(w.id)) for w in topo.workers}


def summarise_rate(topo: Topology, bundle, stages: Sequence[StageInfo], policy: str,
                   rate: float, records: Mapping[str, str], expected: Mapping[str, int],
                   stats: Mapping[str, Optional[dict]], duration_s: float, load_s: float
                   ) -> RunResult:
    """One rate's result: counts over the whole run, delay/accuracy after the warm-up."""
    by_source = {s.id: read_records(records[s.id]) for s in topo.sources}
    admitted_rate = sum(served_rate(rs, topo.warmup_s) or 0.0 for rs in by_source.values())
    every = [r for rs in by_source.values() for r in rs]
    end = warmup_end(every, topo.warmup_s)  # one start for all sources, as the phases have
    recs = [r for r in every if end is None or _created(r) is None or _created(r) >= end]
    everything = summarise_records(every, policy, rate, topo.capacities_emulated,
                                   duration_s=load_s, expected_created=sum(expected.values()))
    measured = summarise_records(recs, policy, rate, topo.capacities_emulated,
                                 duration_s=duration_s)
    measured.created, measured.completed, measured.lost, measured.rejected = (
        everything.created, everything.completed, everything.lost, everything.rejected)
    measured.resent = everything.resent
    admits = policy == "mdi-exit" and mdi_params(topo.knobs.get("mdi-exit")).admission_control
    measured.admitted_rate_tasks_s = (admitted_rate or None) if admits else None
    measured.routing = routing_used(topo, stats)
    rem = empirical_remaining(stages, measured.exit_counts,
                              default_remaining(topo, bundle, policy))
    measured.remaining = rem
    measured.link_utilisation = link_utilisation(topo, stages, stats, sending_s(every, load_s))
    measured.link_rate_measured_bytes_s = measured_link_rates(topo, stats)
    measured.model_delay_s = model_delay(topo, stages, rate, measured.routing, rem)
    measured.fifo_sim_delay_s = fifo_sim_delay(topo, stages, rate, measured.routing, rem)
    return measured


def partial_result(topo: Topology, bundle, stages: Sequence[StageInfo], policy: str,
                   rate: float, records: Mapping[str, str], expected: Mapping[str, int],
                   duration_s: float, load_s: float, exc: BaseException
                   ) -> Optional[RunResult]:
    """A rate cut short (interrupted, an agent died) summarised from what its sources created."""
    try:  # created: the tasks made so far, not the plan (``expected``) the load never reached
        res = summarise_rate(topo, bundle, stages, policy, rate, records,
                             created_so_far(records, expected), {}, duration_s, load_s)
    except Exception:  # no records yet, or unreadable: nothing to keep
        return None
    why = "interrupted" if isinstance(exc, KeyboardInterrupt) else first_line(exc)
    res.note = "partial: %s" % why
    return res
