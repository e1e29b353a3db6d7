"""The GA baseline's path search (see ``agent.policies.baselines.ga``).

A path is one worker per stage, each linked to the one before (the first to the source). Every
source keeps weights over the paths it has used; the per-node routing is the traffic through
each edge divided by the traffic leaving its node, which is what workers can act on.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from agent.policies.model import Network, loads, node_rates, stage_remaining, uniform_routing

Path = Tuple[int, ...]


def ga_routing(net: Network, remaining, rounds: int, staleness: int, mix: float,
               population: int, generations: int, seed: int) -> Tuple[np.ndarray, int, bool]:
    """Run the GA baseline; returns (p per edge, rounds, converged: no best path changed)."""
    rng = np.random.default_rng(seed)
    rem = stage_remaining(remaining)
    h_max = net.num_stages
    succ: Dict[int, List[int]] = {}
    edge_of: Dict[Tuple[int, int], int] = {}
    for e, (a, b) in enumerate(zip(net.edge_src, net.edge_dst)):
        succ.setdefault(int(a), []).append(int(b))
        edge_of[(int(a), int(b))] = e
    reach = np.cumprod(rem[:h_max])  # fraction of a source's tasks entering stage h+1
    sources = [i for i in range(len(net.ids)) if net.stage[i] == 0]

    def walk(start: int, prefix: Path) -> Path:
        path = list(prefix)
        node = path[-1] if path else start
        while len(path) < h_max:
            node = succ[node][int(rng.integers(len(succ[node])))]
            path.append(node)
        return tuple(path)

    def cost(src: int, path: Path, lam: np.ndarray) -> float:
        total, prev = 0.0, src
        for h, w in enumerate(path):
            # the source's own traffic comes on top of the (stale) load it sees
            free = net.capacity[w] - lam[w] - net.flops[h + 1] * reach[h] * net.source_rate[src]
            comp = net.flops[h + 1] / free if free > 0 else 10.0 * lam[w] / net.capacity[w]
            total += reach[h] * (net.input_bytes[h + 1] / net.edge_rate[edge_of[(prev, w)]]
                                 + comp)
            prev = w
        return total

    def search(src: int, lam: np.ndarray) -> Path:
        pop = [walk(src, ()) for _ in range(population)]
        for _ in range(generations):
            fit = np.array([cost(src, q, lam) for q in pop])
            order = np.argsort(fit)
            nxt = [pop[order[0]], pop[order[1]]]  # elitism
            while len(nxt) < population:
                a, b = (pop[min(rng.integers(population, size=2), key=lambda k: fit[k])]
                        for _ in range(2))
                cut = int(rng.integers(1, h_max)) if h_max > 1 else 0
                child = a[:cut] + b[cut:]
                if cut and b[cut] not in succ[a[cut - 1]]:
                    child = walk(src, a[:cut])  # repair: a valid continuation
                if rng.random() < 0.2:  # mutation: re-route from a random stage on
                    child = walk(src, child[:int(rng.integers(h_max))])
                nxt.append(child)
            pop = nxt
        return min(pop, key=lambda q: cost(src, q, lam))

    def routing(weights: Dict[int, Dict[Path, float]]) -> np.ndarray:
        x = np.zeros(net.num_edges)
        for src, paths in weights.items():
            for path, w in paths.items():
                prev = src
                for h, node in enumerate(path):
                    x[edge_of[(prev, node)]] += w * net.source_rate[src] * reach[h]
                    prev = node
        out = np.bincount(net.edge_src, weights=x, minlength=len(net.ids))[net.edge_src]
        return np.where(out > 0, x / np.where(out > 0, out, 1.0), uniform_routing(net))

    p0 = uniform_routing(net)
    history = [loads(net, node_rates(net, p0, remaining))]
    weights: Dict[int, Dict[Path, float]] = {}
    best_prev: Dict[int, Path] = {}
    changed = True
    rnd = 0
    for rnd in range(1, rounds + 1):
        seen = history[max(0, len(history) - 1 - staleness)]
        changed = False
        for src in rng.permutation(sources):
            src = int(src)
            best = search(src, seen)
            changed |= best_prev.get(src) != best
            best_prev[src] = best
            old = weights.get(src)
            if old is None:
                weights[src] = {best: 1.0}
            else:
                new = {q: (1.0 - mix) * w for q, w in old.items() if (1.0 - mix) * w > 1e-6}
                new[best] = new.get(best, 0.0) + mix
                s = sum(new.values())
                weights[src] = {q: w / s for q, w in new.items()}
        history.append(loads(net, node_rates(net, routing(weights), remaining)))
    return routing(weights), rnd, not changed
