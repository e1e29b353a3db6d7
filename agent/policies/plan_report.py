"""What ``plan`` prints besides a routing: a per-task policy's own fields (DIMEE, MLCI), and
how loaded a routing leaves each worker and link.

Routing/threshold planners return a ``PolicyResult`` (routing, thresholds, eq. 8's delay);
``Utilisation.of`` gives every worker's and link's utilisation under it, and
``overload_warning`` the line ``plan`` prints when that routing overloads one. A per-task
policy decides per sample, so its plan is what it learned from the exit profile and what a
replay of the profile's test rows gives; each policy documents its own fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from agent.policies.model import (compile_network, link_utilisation, loads, node_rates,
                                  remaining_for, routing_vector)
from agent.policies.setting import Scenario


@dataclass(frozen=True)
class PlanReport:
    """A per-task policy's plan: ``fields`` in the order they are printed."""

    policy: str
    fields: Dict[str, Any]

    def to_json(self) -> Dict[str, Any]:
        """The ``plan --json`` object: the fields, non-finite numbers as null."""
        return _clean(self.fields)

    def text(self) -> str:
        """One ``key  value`` line per scalar, nested objects indented, lists of objects as
        one line per item."""
        return "\n".join(_lines(self.to_json(), 0))


def _clean(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return int(v)
    f = float(v)
    return f if math.isfinite(f) else None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "%.4g" % v
    if isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v):
        return " ".join(_fmt(x) for x in v)
    return "-" if v is None else str(v)


def _lines(obj: Dict[str, Any], depth: int) -> List[str]:
    pad = "  " * depth
    out = []
    for key, v in obj.items():
        if isinstance(v, dict):
            out.append("%s%s" % (pad, key))
            out.extend(_lines(v, depth + 1))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            out.append("%s%s" % (pad, key))
            out.extend("%s  %s" % (pad, "  ".join("%s %s" % (k, _fmt(x)) for k, x in row.items()))
                       for row in v)
        else:
            out.append("%s%-16s %s" % (pad, key, _fmt(v)))
    return out


@dataclass(frozen=True)
class Utilisation:
    """Every worker's load over its capacity (eq. 5's lambda / mu) and every link's bytes/s
    over its rate (wire bytes under the "shared" link model, tensor bytes under "delay") for
    one routing and set of thresholds."""

    workers: Dict[str, float]  # {worker: lambda/mu}, in the network's order (by stage)
    links: Dict[str, Dict[str, float]]  # {sender: {receiver: L/r}}
    stage: Dict[str, int]  # {worker: its stage}, for the text form's grouping
    link_model: str

    @classmethod
    def of(cls, scenario: Scenario, routing: Mapping[str, Mapping[str, float]],
           thresholds: Optional[Mapping[int, float]]) -> "Utilisation":
        """Of ``routing`` ({node: {successor: p}}) at ``thresholds`` (None or {}: the
        scenario's fixed ``remaining``), under the scenario's link model."""
        net = compile_network(scenario)
        rem, _ = remaining_for(scenario, thresholds or None)
        p = routing_vector(net, routing)
        lam = loads(net, node_rates(net, p, rem))
        links: Dict[str, Dict[str, float]] = {}
        for e, x in enumerate(link_utilisation(net, p, rem)):
            links.setdefault(net.ids[net.edge_src[e]], {})[net.ids[net.edge_dst[e]]] = float(x)
        workers = [j for j in range(len(net.ids)) if net.stage[j] > 0]
        return cls({net.ids[j]: float(lam[j] / net.capacity[j]) for j in workers}, links,
                   {net.ids[j]: int(net.stage[j]) for j in workers}, net.link_model)

    def busiest(self) -> List[Tuple[float, str]]:
        """(utilisation, "worker W" or "link A -> B"), busiest first: the workers, and the
        links when they queue (the "shared" model; under "delay" a link has no capacity)."""
        out = [(u, "worker %s" % w) for w, u in self.workers.items()]
        if self.link_model == "shared":
            out += [(u, "link %s -> %s" % (a, b)) for a, row in self.links.items()
                    for b, u in row.items()]
        return sorted(out, key=lambda x: -x[0])

    def worker_lines(self) -> List[str]:
        """``plan``'s text lines of the workers' utilisation, one line per stage."""
        by_stage: Dict[int, List[str]] = {}
        for w, u in self.workers.items():
            by_stage.setdefault(self.stage[w], []).append("%s %.3f" % (w, u))
        return ["  %-12s %s" % ("stage %d" % h, "  ".join(row))
                for h, row in sorted(by_stage.items())]


def overload_warning(policy: str, scenario: Scenario, used: Utilisation,
                     thresholds: Optional[Mapping[int, float]]) -> str:
    """The line ``plan`` prints when ``policy``'s routing (``used``, at ``thresholds``)
    overloads a worker or link: the busiest one with its utilisation, how many more are at or
    past 1, and the least utilisation of the busiest worker or link that any routing reaches
    (``min_max_utilisation``)."""
    from agent.policies.optimum import min_max_utilisation  # scipy: only for this line

    rem, _ = remaining_for(scenario, thresholds or None)
    best, _ = min_max_utilisation(compile_network(scenario), rem)
    ranked = used.busiest()
    over = [x for x in ranked if x[0] >= 1.0] or ranked[:1]
    what, whats = (("worker or link", "workers or links") if used.link_model == "shared"
                   else ("worker", "workers"))
    more = len(over) - 1
    least = ("%.3f%s" % (best, " (no routing fits)" if best >= 1 else "")
             if math.isfinite(best) else "unknown (its linear program found no solution)")
    return ("the %s routing overloads %s (utilisation %.3f)%s; the least possible utilisation "
            "of the busiest %s is %s" % (
                policy, over[0][1], over[0][0],
                " and %d more %s at or past 1" % (more, whats if more > 1 else what)
                if more else "", what, least))
