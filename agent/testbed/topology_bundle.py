"""A testbed topology against its bundle's stages: what the testbed knows of a stage
(``StageInfo``, filled from ``engines.bundle``), the check that the topology fits the bundle
(``check_against_bundle``), the largest total rate it serves (``capacity_tasks_s``) and the
scenario object the model predicts its delay from (``scenario_object``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from agent.config.checks import check_service_times
from agent.policies.model import wire_bytes
from agent.testbed.carry import carried_tasks_s
from agent.testbed.topology import Topology, TopologyError


@dataclass(frozen=True)
class StageInfo:
    """What the testbed needs to know of a bundle stage (filled from ``engines.bundle``)."""

    flops: float  # alpha_h
    input_bytes: float  # beta_h
    has_exit: bool



def check_against_bundle(topo: Topology, stages: Sequence[StageInfo]) -> None:
    """The topology's stages must exist in the bundle; thresholds only at exit stages."""
    if topo.num_stages != len(stages):
        raise topo.error("workers serve stages 1..%d but the bundle has %d stages"
                         % (topo.num_stages, len(stages)))
    for st in (st for st in topo.thresholds if not stages[st - 1].has_exit):
        raise topo.error("thresholds: stage %d has no exit head in the bundle" % st)
    for i, w in enumerate(topo.workers):  # a stage a day at most: an agent's peers want no more
        check_service_times(w.emulate_capacity_flops, {h: stages[h - 1].flops for h in range(
            w.stage, w.stages[1] + 1)}, "workers[%d].emulate_capacity_flops" % i, topo.error)


def capacity_tasks_s(topo: Topology, stages: Sequence[StageInfo],
                     remaining: Sequence[float]) -> float:
    """Largest total arrival rate the topology can serve (tasks/s), compute and links.

    A stage-h worker serves mu/alpha_h subtasks/s and a link into stage h carries r over the
    wire bytes of beta_h, and a fraction prod(I_1..I_{h-1}) of tasks reaches stage h; each
    source sends its share over its own links: the maximum flow through them
    (``agent.testbed.carry``). Workers without an emulated capacity and links without a rate
    count as unbounded (their real speed is not known before they start).
    """
    if topo.multi_stage:  # nodes holding several stages: one processor runs a task's stages
        mus = [w.emulate_capacity_flops for w in topo.workers]
        if any(m is None for m in mus):
            return float("inf")
        reach, per_task = 1.0, 0.0
        for st, rem in zip(stages, remaining):
            per_task += reach * st.flops
            reach *= float(rem)
        return sum(mus) / per_task
    reach = [1.0]
    for rem in remaining[:-1]:
        reach.append(reach[-1] * float(rem))
    return carried_tasks_s({s.id: s.share for s in topo.sources},
                           [(w.id, w.stage, w.emulate_capacity_flops) for w in topo.workers],
                           [(l.src, l.dst, l.rate_bytes_s) for l in topo.links],
                           [st.flops for st in stages],
                           [float(wire_bytes(st.input_bytes)) for st in stages], reach)


def scenario_object(topo: Topology, stages: Sequence[StageInfo], total_rate: float,
                    remaining: Sequence[float], link_rate_default: float = 1e9) -> dict:
    """A scenario JSON object (``agent.scenario`` format) for the model's predictions.

    Links that are not emulated get ``link_rate_default`` (loopback is effectively free).
    """
    for w in topo.workers:
        if w.emulate_capacity_flops is None:
            raise TopologyError("model delay needs a capacity for every worker; %r has no "
                                "emulate_capacity_flops" % w.id)
    return {
        "stages": [{"flops": s.flops, "input_bytes": s.input_bytes, "exit": s.has_exit}
                   for s in stages],
        "sources": [{"id": s.id, "rate": s.share * total_rate} for s in topo.sources],
        "workers": [{"id": w.id, "stage": w.stage, "capacity": w.emulate_capacity_flops}
                    for w in topo.workers],
        "links": [{"from": l.src, "to": l.dst,
                   "rate": l.rate_bytes_s if l.rate_bytes_s is not None else link_rate_default}
                  for l in topo.links],
        "remaining": [float(r) if s.has_exit else 1.0 for r, s in zip(remaining, stages)],
        "tradeoff": topo.tradeoff,
    }
