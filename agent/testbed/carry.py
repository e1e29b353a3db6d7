"""The arrival rate a staged topology can carry: a maximum flow through workers and links.

Every task passes one worker of each stage it reaches, and only a fraction prod(I_1..I_{h-1})
of the tasks reaches stage h; counted in tasks entering the system, a stage-h worker of mu
FLOP/s carries mu / (alpha_h * reach_h) of them and a link into stage h of rate r carries
r / (wire(beta_h) * reach_h) (wire bytes: the tensor with its framing and TCP/IP headers, what
a shaped or paced link carries). Each source offers its share of the total rate. The largest
total the network carries is then a flow problem, not a per-stage sum: a fast worker behind slow
links carries no more than its links bring it, and a source can use only its own links.
``carried_tasks_s`` finds it by bisection on the total, each step a maximum flow (Edmonds-Karp)
from the sources' shares through the graph.
"""

from __future__ import annotations

from collections import deque
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

INF = float("inf")
REL_TOL = 1e-9  # a total is carried when the flow reaches it within this fraction


class FlowGraph:
    """A directed graph with edge capacities; ``max_flow`` leaves the residual capacities."""

    def __init__(self) -> None:
        self.cap: List[Dict[int, float]] = []
        self.names: Dict[str, int] = {}

    def node(self, name: str) -> int:
        """The index of node ``name`` (added when new)."""
        if name not in self.names:
            self.names[name] = len(self.cap)
            self.cap.append({})
        return self.names[name]

    def edge(self, a: str, b: str, capacity: float) -> None:
        """Add ``capacity`` from ``a`` to ``b`` (parallel edges add up)."""
        i, j = self.node(a), self.node(b)
        self.cap[i][j] = self.cap[i].get(j, 0.0) + capacity
        self.cap[j].setdefault(i, 0.0)

    def max_flow(self, a: str, b: str) -> float:
        """The maximum flow from ``a`` to ``b`` (shortest augmenting paths); INF when an
        uncapacitated path joins them."""
        s, t = self.node(a), self.node(b)
        cap = [dict(c) for c in self.cap]
        total = 0.0
        while True:
            parent: Dict[int, int] = {s: s}
            todo = deque([s])
            while todo and t not in parent:
                u = todo.popleft()
                for v, c in cap[u].items():
                    if c > 0.0 and v not in parent:
                        parent[v] = u
                        todo.append(v)
            if t not in parent:
                return total
            push, v = INF, t
            while v != s:
                push = min(push, cap[parent[v]][v])
                v = parent[v]
            if push == INF:
                return INF
            v = t
            while v != s:
                u = parent[v]
                cap[u][v] -= push
                cap[v][u] += push
                v = u
            total += push


def carried_tasks_s(shares: Mapping[str, float],
                    workers: Sequence[Tuple[str, int, Optional[float]]], links: Sequence[Tuple[str, str, Optional[float]]],
                    flops: Sequence[float], wire_in_bytes: Sequence[float],
                    reach: Sequence[float]) -> float:
    """Largest total arrival rate (tasks/s) the network carries (module docstring).

    ``shares``: each source's fraction of the total; ``workers``: (id, stage 1-based, FLOP/s or
    None for unbounded); ``links``: (from, to, bytes/s or None for unbounded) into the stage of
    ``to``; per stage ``flops`` (alpha), ``wire_in_bytes`` (a task's input on the wire) and
    ``reach`` (the fraction of tasks that gets there). INF when nothing bounds it.
    """
    last = max(st for _, st, _ in workers)

    def per_task(h: int, per_s: Optional[float], cost: float) -> float:
        if per_s is None or reach[h - 1] <= 0.0 or cost <= 0.0:
            return INF
        return per_s / cost / reach[h - 1]

    def graph(total: float) -> FlowGraph:
        g = FlowGraph()
        for src, share in shares.items():
            g.edge("S", "out:" + src, share * total if share > 0 else 0.0)
        stage = {}
        for w, h, mu in workers:
            stage[w] = h
            g.edge("in:" + w, "out:" + w, per_task(h, mu, flops[h - 1]))
            if h == last:
                g.edge("out:" + w, "T", INF)
        for a, b, r in links:
            h = stage[b]
            g.edge("out:" + a, "in:" + b, per_task(h, r, wire_in_bytes[h - 1]))
        return g

    unbounded = graph(INF).max_flow("S", "T")
    if unbounded == INF:
        return INF
    lo, hi = 0.0, unbounded  # a total above what the network carries without shares fails
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if graph(mid).max_flow("S", "T") >= mid * (1.0 - REL_TOL):
            lo = mid
        else:
            hi = mid
        if hi - lo <= REL_TOL * hi:
            break
    return lo
