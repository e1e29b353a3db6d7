"""Seeded random scenarios for the DTO-EE tests and benchmarks (not a test module).

Shaped like the paper's Section 4.1 at a smaller or equal size: ResNet101's four stages from
Table 2 with exits after stages 2 and 3, 2-4 receivers per offloader, capacities with a 5x
spread, source links 1-10 MB/s, worker links 10-20 MB/s. The source rates are scaled so that
the busiest stage runs at ``load`` of its total capacity.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from agent.policies.model import compile_network
from agent.policies.optimum import min_max_utilisation
from agent.scenario.format import parse_scenario
from agent.policies.setting import Scenario
from engines.exit_profile import ExitProfile

FLOPS = (2.21e9, 1.97e9, 1.97e9, 1.68e9)
INPUT_BYTES = (0.14e6, 0.77e6, 0.77e6, 0.77e6)
REMAINING = (1.0, 0.7, 0.6, 1.0)


def random_scenario(seed: int, load: float, sources: int = 8,
                    workers=(5, 4, 4, 3), skew: Optional[float] = None,
                    knobs: Optional[dict] = None) -> Scenario:
    """A random network at ``load`` (busiest stage's utilisation with all tasks spread evenly).

    ``skew``: when given, one stage-1 worker gets only ``skew`` times the smallest capacity
    drawn, so a uniform start overloads it (an infeasible start). Link draws that leave some
    capacity out of reach (the best routing's busiest worker above ``load`` + 0.05) are drawn
    again, so ``load`` describes the network. These networks are compute-bound at the paper's
    links: ``knobs`` default to ``link_model`` "delay" (``link_bound_scenario`` for the other).
    """
    knobs = {"link_model": "delay", **(knobs or {})}
    rng = np.random.default_rng(seed)
    while True:
        sc = _draw(rng, load, sources, workers, skew, knobs)
        net = compile_network(sc)
        if min_max_utilisation(net, sc.remaining)[0] <= load + 0.05:
            return sc


def _draw(rng, load, sources, workers, skew, knobs) -> Scenario:
    h = len(FLOPS)
    obj = {"stages": [{"flops": f, "input_bytes": b, "exit": r < 1.0}
                      for f, b, r in zip(FLOPS, INPUT_BYTES, REMAINING)],
           "remaining": list(REMAINING), "tradeoff": 0.5, "knobs": dict(knobs or {})}
    srcs = ["s%d" % i for i in range(sources)]
    stages = [srcs] + [["w%d_%d" % (st, i) for i in range(workers[st - 1])]
                       for st in range(1, h + 1)]
    caps = {}
    for st in range(1, h + 1):
        for w in stages[st]:
            caps[w] = float(rng.uniform(4e10, 2e11))  # 5x spread: TX2 slow mode to AGX mode 0
    if skew is not None:
        low = min(caps[w] for w in stages[1])
        caps[stages[1][0]] = skew * low
    links = []
    for st in range(h):
        nxt = stages[st + 1]
        fed = set()
        for node in stages[st]:
            k = int(rng.integers(2, 5))
            for d in rng.choice(len(nxt), size=min(k, len(nxt)), replace=False):
                fed.add(nxt[d])
                links.append((node, nxt[d]))
        for w in nxt:  # every worker gets at least one predecessor
            if w not in fed:
                links.append((stages[st][int(rng.integers(len(stages[st])))], w))
    if skew is not None:  # every source feeds the weak worker, so uniform routing overloads it
        have = {(a, b) for a, b in links}
        links += [(s, stages[1][0]) for s in srcs if (s, stages[1][0]) not in have]
    lk = []
    for a, b in links:
        lo, hi = (1e6, 1e7) if a.startswith("s") else (1e7, 2e7)
        lk.append({"from": a, "to": b, "rate": float(rng.uniform(lo, hi))})
    share = rng.uniform(0.5, 1.5, size=sources)
    # tasks/s that puts the busiest stage at ``load``
    reach = np.cumprod((1.0,) + REMAINING[:-1])
    per_task = [reach[st - 1] * FLOPS[st - 1] / sum(caps[w] for w in stages[st])
                for st in range(1, h + 1)]
    total = load / max(per_task)
    obj["sources"] = [{"id": s, "rate": float(total * x / share.sum())}
                      for s, x in zip(srcs, share)]
    obj["workers"] = [{"id": w, "stage": st, "capacity": caps[w]}
                      for st in range(1, h + 1) for w in stages[st]]
    obj["links"] = lk
    return parse_scenario(obj)


def synthetic_profile(n=4000, seed=0):
    """Heads after stages 2 and 3 and the final head at 4: deeper heads are more accurate, and
    a head is more often right when it is confident."""
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.3, 1.0, size=(n, 3))
    skill = np.array([0.45, 0.6, 0.75])
    correct = rng.uniform(size=(n, 3)) < np.clip(skill + 0.4 * (conf - 0.65), 0, 1)
    return ExitProfile(4, (2, 3, 4), conf, correct).validate()


def link_bound_scenario(seed: int, load: float, sources: int = 8, workers=(5, 4, 4, 3),
                        link_spread: float = 5.0, compute_share: float = 0.7) -> Scenario:
    """A random network under ``link_model`` "shared" whose links bind: the workers as in
    ``random_scenario`` at ``compute_share * load``, link rates drawn with a ``link_spread``
    spread and then scaled together so that the best routing's busiest worker or link (the
    LP of ``min_max_utilisation``, links counted with their wire bytes) sits at ``load``.
    """
    rng = np.random.default_rng(seed)
    sc = random_scenario(seed, compute_share * load, sources, workers,
                         knobs={"link_model": "shared"})
    rates = rng.uniform(1.0, link_spread, size=len(sc.links))
    lo, hi = 1e3, 1e10  # bytes/s per unit of ``rates``: bisection on the busiest element

    def scaled(c):
        links = tuple(replace(ln, rate=float(c * r)) for ln, r in zip(sc.links, rates))
        return replace(sc, links=links)

    for _ in range(60):
        mid = (lo * hi) ** 0.5
        u = min_max_utilisation(compile_network(scaled(mid)), sc.remaining)[0]
        lo, hi = (mid, hi) if u > load else (lo, mid)
    return scaled(hi)
