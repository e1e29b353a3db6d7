"""The GA baseline's path search (see ``agent.policies.baselines.plans.ga``).

A path is one worker per stage, each linked to the one before (the first to the source). Every
source keeps weights over the paths it has used; the per-node routing is the traffic through
each edge divided by the traffic leaving its node, which is what workers can act on.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from agent.policies.model import (
    Network,
    edge_flows,
    link_loads,
    loads,
    node_rates,
    stage_remaining,
    uniform_routing,
)

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

    rate = np.zeros((len(net.ids), len(net.ids)))
    rate[net.edge_src, net.edge_dst] = net.edge_rate
    flops, size = net.flops[1:], net.input_bytes[1:]
    shared = net.link_model == "shared"
    wire = net.hop_bytes[1:]  # bytes per task on a link into stage h (links as servers)

    def state(p: np.ndarray):
        """(worker loads, link loads as a node x node matrix) under routing ``p``."""
        phi = node_rates(net, p, remaining)
        links = np.zeros_like(rate)
        links[net.edge_src, net.edge_dst] = link_loads(net, edge_flows(net, p, phi, remaining))
        return loads(net, phi), links

    def costs(src: int, pop: List[Path], seen) -> np.ndarray:
        """Expected delay of each path for ``src``'s tasks on the (stale) loads ``seen``."""
        lam, links = seen
        w = np.asarray(pop)  # (P, H)
        prev = np.concatenate([np.full((len(pop), 1), src), w[:, :-1]], axis=1)
        # the source's own traffic comes on top of the load it sees
        free = net.capacity[w] - lam[w] - flops * reach * net.source_rate[src]
        comp = np.where(free > 0, flops / np.where(free > 0, free, 1.0),
                        10.0 * lam[w] / net.capacity[w])
        r = rate[prev, w]
        if shared:  # a link is a server of r bytes/s, loaded as the source last saw it
            lfree = r - links[prev, w] - wire * reach * net.source_rate[src]
            hop = np.where(lfree > 0, wire / np.where(lfree > 0, lfree, 1.0),
                           10.0 * links[prev, w] / r)
        else:
            hop = size / r
        return np.sum(reach * (hop + comp), axis=1)

    def search(src: int, lam: np.ndarray) -> Path:
        pop = [walk(src, ()) for _ in range(population)]
        kids = population - 2
        for _ in range(generations):
            fit = costs(src, pop, lam)
            order = np.argsort(fit)
            nxt = [pop[order[0]], pop[order[1]]]  # elitism
            # binary tournaments for both parents, one-point crossover, mutation
            duel = rng.integers(population, size=(kids, 2, 2))
            win = np.where(fit[duel[:, :, 0]] <= fit[duel[:, :, 1]], duel[:, :, 0], duel[:, :, 1])
            cuts = rng.integers(1, h_max, size=kids) if h_max > 1 else np.zeros(kids, int)
            mutate = rng.random(kids) < 0.2
            where = rng.integers(h_max, size=kids)
            for k in range(kids):
                a, b = pop[win[k, 0]], pop[win[k, 1]]
                cut = int(cuts[k])
                child = a[:cut] + b[cut:]
                if cut and b[cut] not in succ[a[cut - 1]]:
                    child = walk(src, a[:cut])  # repair: a valid continuation
                if mutate[k]:  # re-route from a random stage on
                    child = walk(src, child[:int(where[k])])
                nxt.append(child)
            pop = nxt
        return pop[int(np.argmin(costs(src, pop, lam)))]

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
    history = [state(p0)]
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
        history.append(state(routing(weights)))
    return routing(weights), rnd, not changed
