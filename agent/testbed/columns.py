"""The model and simulator columns of a testbed run, for the routing and exit ratios it used.

``routing_used`` and ``empirical_remaining`` read what the agents did (send counters, exits);
``model_delay`` is DTO-EE's eq. 8 for them (links as shared servers, wire overhead counted),
``fifo_sim_delay`` the simulator's delay with the agents' own queueing (FIFO workers,
serialised links), ``link_utilisation`` and ``measured_link_rates`` what the links carried
and what their senders made of them.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

from agent.policies.model import mean_response_time, wire_bytes
from agent.scenario.format import parse_scenario
from agent.sim import FixedPolicy, SimConfig, simulate
from agent.testbed.counters import is_total
from agent.testbed.topology import Topology
from agent.testbed.topology_bundle import StageInfo, scenario_object


def routing_used(topo: Topology, stats: Mapping[str, Mapping]) -> Dict[str, Dict[str, float]]:
    """p_ij each offloader actually used, from its final ``stats.json``.

    Per-successor send counters (``counters["sent_to_<peer>"]``) give the empirical split over
    the whole run; without them the policy's final routing row is used, and without that (a
    policy with no state, or a node that sent nothing) a uniform row.
    """
    out: Dict[str, Dict[str, float]] = {}
    for n in topo.node_ids():
        succ = [l.dst for l in topo.successors(n)]
        if not succ:
            continue
        st = stats.get(n) or {}
        counters = st.get("counters") or {}
        counts = [float(counters.get("sent_to_" + s, 0) or 0) for s in succ]
        row = st.get("routing") or {}
        if sum(counts) > 0:
            w = counts
        elif isinstance(row, Mapping) and sum(float(row.get(s, 0.0)) for s in succ) > 0:
            w = [float(row.get(s, 0.0)) for s in succ]
        else:
            w = [1.0] * len(succ)
        total = sum(w)
        out[n] = {s: x / total for s, x in zip(succ, w)}
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
                routing: Mapping[str, Mapping[str, float]], remaining: Sequence[float]
                ) -> Optional[float]:
    """Eq. 8 (``agent.policies.model``) for a routing and remaining ratios on this topology.

    None when a worker has no known capacity (its real speed is not in the topology) or the
    routing overloads a worker (the model's delay is then infinite).
    """
    if topo.multi_stage or any(w.emulate_capacity_flops is None for w in topo.workers):
        return None  # eq. 8 has one stage per worker
    scenario = parse_scenario(scenario_object(topo, stages, total_rate, remaining))
    t = mean_response_time(scenario, routing)
    return t if math.isfinite(t) else None


def fifo_sim_delay(topo: Topology, stages: Sequence[StageInfo], total_rate: float,
                   routing: Mapping[str, Mapping[str, float]], remaining: Sequence[float],
                   seed: int = 1) -> Optional[float]:
    """Mean delay the simulator gives for the same routing with the agent's queueing.

    Eq. 8 models a worker and a link as processor-sharing servers (link model ``shared``);
    an agent serves one task at a time (FIFO) and its links serialise transfers. ``agent.sim`` with FIFO
    workers and shared links is that system, so this column tells the queueing discipline's
    share of a measured-vs-model gap from the agent's own overheads. None, as for eq. 8, when
    the routing overloads a worker or a link: the queue then grows for as long as the
    simulation runs, so its mean would say how long that is, not what the agents measured.
    """
    if topo.multi_stage or any(w.emulate_capacity_flops is None for w in topo.workers):
        return None
    scenario = parse_scenario(scenario_object(topo, stages, total_rate, remaining))
    if not math.isfinite(mean_response_time(scenario, routing)):
        return None  # FIFO and processor sharing are stable under the same loads
    res = simulate(scenario, FixedPolicy({k: dict(v) for k, v in routing.items()}),
                   SimConfig(duration_s=120.0, slot_s=1000.0, discipline="fifo",
                             link_model="shared", seed=seed))
    done = res.status == 1
    if not done.any():
        return None
    return float((res.finished_s[done] - res.created_s[done]).mean())


# a record's (start, end) times, on one clock: the monotonic pair where a record has both
_RECORD_CLOCKS = (("created_mono", "finished_mono"), ("created_wall", "finished_wall"))


def sending_s(records: Sequence[Mapping], load_s: float) -> float:
    """The time one rate's sends were made in: from the first task its sources created to the
    last record (a result, or a task given up), at least ``load_s``.

    The send counters are read once every task has its record, so they hold the sends made
    while the queues drained after the load too; every send of the rate's tasks was made by
    its last record. Taken from the records, a run folder of any age gives it again
    (``report``); records without both times of one clock give ``load_s``."""
    for start, end in _RECORD_CLOCKS:
        starts = [r[start] for r in records if _time(r.get(start))]
        ends = [r[end] for r in records if _time(r.get(end))]
        if starts and ends:
            return max(float(load_s), float(max(ends)) - float(min(starts)))
    return float(load_s)


def _time(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def link_utilisation(topo: Topology, stages: Sequence[StageInfo],
                     stats: Mapping[str, Optional[Mapping]], sent_s: float
                     ) -> Dict[str, float]:
    """Mean utilisation of every shaped link while its tasks were sent: {"a->b": rho}.

    The tasks each sender sent on the link (its ``sent_to_<peer>`` counter, re-sends included)
    times the wire bytes of one (``agent.policies.model.wire_bytes`` of the input of the
    receiver's stage: tensor, framing, TCP/IP), over ``sent_s`` (``sending_s``: the time those
    counters count, the drain after the load included) and the link's real rate (what the
    kernel shapes in netns mode, not ``config_rate_bytes_s``). Links without a rate, or whose
    sender left no stats, are left out.
    """
    out: Dict[str, float] = {}
    if not sent_s > 0:
        return out
    for l in topo.links:
        counters = ((stats.get(l.src) or {}).get("counters") or {})
        h = topo.stage_of(l.dst)
        if l.rate_bytes_s is None or not counters or not 1 <= h <= len(stages):
            continue
        sent = float(counters.get("sent_to_" + l.dst, 0) or 0)
        nbytes = sent * float(wire_bytes(stages[h - 1].input_bytes))
        out["%s->%s" % (l.src, l.dst)] = nbytes / sent_s / l.rate_bytes_s
    return out


def measured_link_rates(topo: Topology, stats: Mapping[str, Optional[Mapping]]
                        ) -> Dict[str, float]:
    """{"a->b": bytes/s} each sender's own estimate of its links at the run's end (the
    ``link_rate_bytes_s_<peer>`` counters; links it had no estimate for are left out)."""
    out: Dict[str, float] = {}
    for l in topo.links:
        counters = ((stats.get(l.src) or {}).get("counters") or {})
        got = counters.get("link_rate_bytes_s_" + l.dst)
        if isinstance(got, (int, float)) and got > 0:
            out["%s->%s" % (l.src, l.dst)] = float(got)
    return out


def stats_delta(before: Mapping[str, Optional[dict]], after: Mapping[str, Optional[dict]]
                ) -> Dict[str, Optional[dict]]:
    """``after`` with its counters reduced by ``before``'s: what one rate's run did (gauges
    such as the measured link rates keep their value).

    Both are running totals over all of a worker's processes (``agent.testbed.counters``), so
    a change of process between the readings subtracts nothing it did not count. A total below
    its earlier value (the counters started again from zero in a process the testbed did not
    end) is never a negative share: the new process's count is taken as the rate's.
    """
    out: Dict[str, Optional[dict]] = {}
    for n, a in after.items():
        if a is None:
            out[n] = None
            continue
        b = (before.get(n) or {}).get("counters") or {}
        d = dict(a)
        d["counters"] = {k: v - b[k] if is_total(k, v) and is_total(k, b.get(k)) and v >= b[k]
                         else v for k, v in (a.get("counters") or {}).items()}
        out[n] = d
    return out
