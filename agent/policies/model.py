"""DTO-EE's network model (paper Section 2): rates, loads, delays, utility, penalty.

One implementation of eqs. (3)-(9) and (11), shared by DTO-EE, the baselines, ``plan``, the
simulator's checks and the testbed's "model delay" column.

A scenario is compiled once into a ``Network`` of flat numpy arrays: nodes (sources first, then
workers by stage), directed edges stage h -> h+1 with their link rates, and a padded successor
table (one row per offloader, one column per successor slot) that the vectorised policies use.
A routing is one probability per edge (``p``, shape (E,)), or, at the API boundary, a mapping
``{node: {successor: probability}}``.

Units: tasks/s for rates phi, FLOP/s for loads lambda and capacities mu, bytes/s for links,
seconds for delays. ``remaining`` is I_h per stage (1-based stage h at index h-1).

Links (``link_model``, the scenario knob ``link_model``): ``"shared"`` (the default) makes a
directed link a processor-sharing server of r bytes/s like a worker: a task's hop costs
b/(r - L) with L the link's load in bytes/s, so a link contributes L/(r - L) to Phi*T, and b, the
bytes a task takes on the wire, counts the measured framing (``wire_bytes``). ``"delay"`` is
the paper's eq. 4: a hop costs beta/r whatever the load (kept for reproducing its figures).

Delay beyond capacity: the processor-sharing delay lambda/(mu - lambda) is infinite at and past
capacity. Iterative policies must still compare overloaded receivers, so ``pressure`` continues
the function past ``rho_ext * mu`` by its second-order Taylor expansion (finite, convex, with a
continuous gradient). ``mean_response_time`` (the model's T) never uses the extension: it
returns ``inf`` for an overloaded routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from agent.config.fields import Fields
from agent.policies.setting import Scenario, ScenarioError
from engines.exit_profile import ExitProfile, exit_stats

Routing = Dict[str, Dict[str, float]]

LINK_MODELS = ("shared", "delay")  # a link as a server of r bytes/s / the paper's fixed beta/r
DEFAULT_LINK_MODEL = "shared"
# the simulator's when neither its config nor the scenario says: the paper's fixed beta/r, on
# which the paper reproductions (docs/benchmarks.md) were run and stay comparable
SIM_DEFAULT_LINK_MODEL = "delay"

# Wire overhead of one data message, measured (bench/wire_overhead.py, docs/dtoee.md): the
# header and ZMTP framing add 170 bytes of TCP payload to the tensor; every TCP segment of at
# most WIRE_MSS_BYTES (a 1,500-byte MTU) adds Ethernet 14 + IPv4 20 + TCP with timestamps 32
# bytes, and the sender's TCP ACK of the receiver's ACK message is one more bare segment.
WIRE_MESSAGE_OVERHEAD_BYTES = 170.0
WIRE_SEGMENT_OVERHEAD_BYTES = 66.0
WIRE_MSS_BYTES = 1448.0


def wire_bytes(payload_bytes):
    """Bytes one data message carrying ``payload_bytes`` of tensor takes on a link, counting
    the bare ACK segment it causes (array ok)."""
    b = np.asarray(payload_bytes, dtype=np.float64) + WIRE_MESSAGE_OVERHEAD_BYTES
    return b + (np.ceil(b / WIRE_MSS_BYTES) + 1.0) * WIRE_SEGMENT_OVERHEAD_BYTES


def hop_bytes(input_bytes, link_model: str):
    """Bytes a task of ``input_bytes`` tensor bytes takes on a link: with the wire overhead
    under ``"shared"``, the tensor's beta_h under the paper's ``"delay"`` (array ok)."""
    b = np.asarray(input_bytes, dtype=np.float64)
    if link_model == "shared":
        return np.where(b > 0, wire_bytes(b), 0.0)
    return b


def link_model_of(knobs: Mapping[str, object], where: str = "knobs") -> str:
    """The ``link_model`` knob of a scenario's (or node config's) knobs, validated."""
    return Fields(knobs, where, ScenarioError).str("link_model", DEFAULT_LINK_MODEL, LINK_MODELS)


def with_link_model(scenario: Scenario, link_model: str) -> Scenario:
    """``scenario`` with its ``link_model`` knob set to ``link_model`` (a new object)."""
    if link_model not in LINK_MODELS:
        raise ScenarioError("link_model: must be one of %s" % "|".join(LINK_MODELS))
    knobs = dict(scenario.knobs)
    knobs["link_model"] = link_model
    return replace(scenario, knobs=knobs)


@dataclass(frozen=True)
class Network:
    """A scenario as flat arrays (see module docstring)."""

    ids: Tuple[str, ...]  # node ids: sources first, then workers ordered by stage
    stage: np.ndarray  # (N,) int: 0 for sources, 1..H for workers
    capacity: np.ndarray  # (N,) mu_j FLOP/s (0 for sources)
    source_rate: np.ndarray  # (N,) phi of sources, tasks/s (0 for workers)
    edge_src: np.ndarray  # (E,) int node index
    edge_dst: np.ndarray  # (E,) int node index
    edge_rate: np.ndarray  # (E,) r_ij bytes/s
    flops: np.ndarray  # (H+1,) alpha_h FLOP per task, index 0 unused (0)
    input_bytes: np.ndarray  # (H+1,) beta_h bytes, index 0 unused (0)
    slots: np.ndarray  # (R, D) edge index per (offloader row, successor slot), -1 = none
    offloaders: np.ndarray  # (R,) node index of each offloader row
    stage_edges: Tuple[np.ndarray, ...] = field(default=())  # edges leaving stage h, h=0..H-1
    link_model: str = DEFAULT_LINK_MODEL  # "shared" (links queue) or "delay" (paper's beta/r)

    @property
    def hop_bytes(self) -> np.ndarray:
        """(H+1,) bytes a task entering stage h takes on a link (``hop_bytes``)."""
        return hop_bytes(self.input_bytes, self.link_model)

    @property
    def num_stages(self) -> int:
        return len(self.flops) - 1

    @property
    def num_edges(self) -> int:
        return len(self.edge_src)

    @property
    def total_rate(self) -> float:
        """Phi: the system's total task arrival rate."""
        return float(self.source_rate.sum())

    def index(self) -> Dict[str, int]:
        return {n: i for i, n in enumerate(self.ids)}


def compile_network(scenario: Scenario, link_model: Optional[str] = None) -> Network:
    """Flatten ``scenario`` into a ``Network``; edges are grouped by source node in file order.

    ``link_model`` defaults to the scenario's ``link_model`` knob (``"shared"``)."""
    link_model = link_model or link_model_of(scenario.knobs)
    # workers by stage, file order within a stage (a stable sort), all in linear time
    ordered = sorted(scenario.workers, key=lambda w: w.stage)
    order = [s.id for s in scenario.sources] + [w.id for w in ordered]
    idx = {n: i for i, n in enumerate(order)}
    stage = np.array([0] * len(scenario.sources) + [w.stage for w in ordered], dtype=np.int64)
    cap = np.zeros(len(order))
    for w in scenario.workers:
        cap[idx[w.id]] = w.capacity
    rate = np.zeros(len(order))
    for s in scenario.sources:
        rate[idx[s.id]] = s.rate
    links = sorted(scenario.links, key=lambda ln: idx[ln.src])  # stable: file order per node
    esrc = np.array([idx[ln.src] for ln in links], dtype=np.int64)
    edst = np.array([idx[ln.dst] for ln in links], dtype=np.int64)
    erate = np.array([ln.rate for ln in links], dtype=np.float64)
    flops = np.array([0.0] + [s.flops for s in scenario.stages])
    size = np.array([0.0] + [s.input_bytes for s in scenario.stages])
    offl, first, count = np.unique(esrc, return_index=True, return_counts=True)
    slots = -np.ones((len(offl), int(count.max())), dtype=np.int64)
    # edges are grouped by source node: row r holds edges first[r] .. first[r] + count[r] - 1
    row = np.repeat(np.arange(len(offl)), count)
    slots[row, np.arange(len(esrc)) - first[row]] = np.arange(len(esrc))
    stage_edges = tuple(np.nonzero(stage[esrc] == h)[0] for h in range(scenario.num_stages))
    return Network(tuple(order), stage, cap, rate, esrc, edst, erate, flops, size, slots, offl,
                   stage_edges, link_model)


def stage_remaining(remaining: Sequence[float]) -> np.ndarray:
    """I per stage index 0..H with I_0 = 1 (a source forwards every task)."""
    return np.concatenate([[1.0], np.asarray(remaining, dtype=np.float64)])


def node_rates(net: Network, p: np.ndarray, remaining: Sequence[float]) -> np.ndarray:
    """Eq. (3): arrival rate phi (tasks/s) of every node under routing ``p`` (steady state)."""
    rem = stage_remaining(remaining)
    phi = net.source_rate.copy()
    for h, edges in enumerate(net.stage_edges):
        src = net.edge_src[edges]
        flow = p[edges] * phi[src] * rem[h]
        phi += np.bincount(net.edge_dst[edges], weights=flow, minlength=len(phi))
    return phi


def edge_flows(net: Network, p: np.ndarray, phi: np.ndarray, remaining: Sequence[float]
               ) -> np.ndarray:
    """varphi_ij = p_ij * phi_i * I_h: tasks/s on every edge."""
    rem = stage_remaining(remaining)
    return p * phi[net.edge_src] * rem[net.stage[net.edge_src]]


def loads(net: Network, phi: np.ndarray) -> np.ndarray:
    """Eq. (5): lambda_j = alpha_h * phi_j, FLOP/s (0 for sources)."""
    return net.flops[net.stage] * phi


def transmission_delay(input_bytes: float, link_rate_bytes_s):
    """Eq. (4): one hop's delay beta_{h+1} / r_ij, seconds."""
    return input_bytes / link_rate_bytes_s


def compute_delay(flops: float, capacity_flops_s, load_flops_s):
    """Eq. (6): processor-sharing compute delay alpha_h / (mu - lambda); inf when overloaded."""
    headroom = np.asarray(capacity_flops_s, dtype=np.float64) - load_flops_s
    with np.errstate(divide="ignore"):
        return np.where(headroom > 0, flops / np.maximum(headroom, 1e-300), np.inf)


def node_delays(net: Network, p: np.ndarray, remaining: Sequence[float]) -> np.ndarray:
    """Eq. (7): T_j, the mean offloading delay (hop + compute) of tasks arriving at each worker
    (the paper's per-node form of eq. 8; the tests hold eq. 8 to it)."""
    phi = node_rates(net, p, remaining)
    lam = loads(net, phi)
    hop = link_delays(net, edge_flows(net, p, phi, remaining))
    hop_in = np.bincount(net.edge_dst, weights=hop, minlength=len(phi))
    with np.errstate(invalid="ignore", divide="ignore"):
        comm = np.where(phi > 0, hop_in / np.maximum(phi, 1e-300), 0.0)
    return compute_delay(net.flops[net.stage], net.capacity, lam) + comm


def network_delay(net: Network, p: np.ndarray, remaining: Sequence[float]) -> float:
    """Eq. (8): the model's mean response time T (seconds); ``inf`` if any worker is overloaded."""
    phi = node_rates(net, p, remaining)
    lam = loads(net, phi)
    w = net.stage > 0
    mu, lw = net.capacity[w], lam[w]
    if np.any(lw >= mu):
        return math.inf
    hop = np.sum(link_delays(net, edge_flows(net, p, phi, remaining)))
    if not math.isfinite(hop):
        return math.inf
    return float((np.sum(lw / (mu - lw)) + hop) / net.total_rate)


def link_loads(net: Network, flows: np.ndarray) -> np.ndarray:
    """Bytes/s on every edge for edge flows ``flows`` (tasks/s), wire overhead included under
    ``"shared"``."""
    return flows * net.hop_bytes[net.stage[net.edge_dst]]


def link_utilisation(net: Network, p: np.ndarray, remaining: Sequence[float]) -> np.ndarray:
    """L/r of every edge under routing ``p`` (``plan`` reports it)."""
    phi = node_rates(net, p, remaining)
    return link_loads(net, edge_flows(net, p, phi, remaining)) / net.edge_rate


def link_delays(net: Network, flows: np.ndarray) -> np.ndarray:
    """Each edge's hop delay times its flow (seconds per second, its share of Phi*T).

    ``"delay"``: flows * beta/r (eq. 4); ``"shared"``: L/(r - L), ``inf`` at or past capacity."""
    if net.link_model != "shared":
        return flows * transmission_delay(net.input_bytes[net.stage[net.edge_dst]],
                                          net.edge_rate)
    load = link_loads(net, flows)
    free = net.edge_rate - load
    # where free <= 0 the quotient (load/1e-300 overflows) is thrown away: no RuntimeWarning
    with np.errstate(divide="ignore", over="ignore"):
        return np.where(free > 0, load / np.maximum(free, 1e-300), np.inf)


def pressure(load_flops_s, capacity_flops_s, rho_ext: float = 0.99):
    """lambda/(mu - lambda) and its first two derivatives in lambda, continued past rho_ext*mu.

    Returns ``(value, d1, d2)``. Below ``rho_ext * mu`` they are exact (d1 = mu/(mu-lambda)^2,
    d2 = 2 mu/(mu-lambda)^3); above, the second-order Taylor expansion at ``rho_ext * mu`` keeps
    them finite so an overloaded receiver still gets a (large, finite) marginal delay.
    """
    lam = np.asarray(load_flops_s, dtype=np.float64)
    mu = np.asarray(capacity_flops_s, dtype=np.float64)
    x0 = np.minimum(lam, rho_ext * mu)
    gap = mu - x0
    v0 = x0 / gap
    d1 = mu / gap ** 2
    d2 = 2.0 * mu / gap ** 3
    over = lam - x0
    return v0 + d1 * over + 0.5 * d2 * over ** 2, d1 + d2 * over, d2


def penalty(loads_flops_s, capacities_flops_s, k: float, epsilon: float) -> float:
    """Eq. (11), on utilisation: N = K * sum_j max(0, lambda_j/mu_j - 1 + epsilon)^2 (seconds).

    The paper writes the excess in FLOP/s; dividing by mu makes one K (seconds) and one epsilon
    (a fraction of capacity) fit devices whose capacities differ by orders of magnitude.
    """
    u = np.asarray(loads_flops_s, dtype=np.float64) / np.asarray(capacities_flops_s)
    return float(k * np.sum(np.maximum(0.0, u - 1.0 + epsilon) ** 2))


def utility(delay_s: float, accuracy: float, tradeoff: float, accuracy_min: float,
            accuracy_max: float) -> float:
    """Eq. (9): U = a*T - (1-a)*(A - A_min)/(A_max - A_min) (lower is better)."""
    span = accuracy_max - accuracy_min
    norm = (accuracy - accuracy_min) / span if span > 0 else 0.0
    return tradeoff * delay_s - (1.0 - tradeoff) * norm


def accuracy_range(profile: ExitProfile) -> Tuple[float, float]:
    """(A_min, A_max): every task exits at the first head / every task runs to the final head."""
    k = len(profile.early_exit_stages)
    a_min = exit_stats(profile, [0.0] * k).accuracy
    a_max = exit_stats(profile, [math.inf] * k).accuracy
    return min(a_min, a_max), max(a_min, a_max)


def remaining_for(scenario: Scenario, thresholds: Optional[Mapping[int, float]] = None
                  ) -> Tuple[Tuple[float, ...], Optional[float]]:
    """I_h per stage and the accuracy A(C) (None when the scenario fixes ``remaining``)."""
    if scenario.exit_profile is None:
        return tuple(scenario.remaining), None
    if thresholds is None:
        raise ScenarioError("thresholds: the scenario has an exit profile, so thresholds are "
                            "needed to compute the remaining ratios")
    st = exit_stats(scenario.exit_profile, {int(k): float(v) for k, v in thresholds.items()})
    return tuple(float(x) for x in st.remaining), st.accuracy


def routing_vector(net: Network, routing: Mapping[str, Mapping[str, float]]) -> np.ndarray:
    """A ``{node: {successor: p}}`` mapping as one probability per edge (missing edges get 0).

    Each offloader's row must sum to 1 (within 1e-6); an unknown edge raises ``ScenarioError``.
    """
    idx = net.index()
    edge_of = {(int(s), int(d)): e for e, (s, d) in enumerate(zip(net.edge_src, net.edge_dst))}
    p = np.zeros(net.num_edges)
    for node, row in routing.items():
        for succ, prob in row.items():
            e = edge_of.get((idx.get(node, -1), idx.get(succ, -1)))
            if e is None:
                raise ScenarioError("routing: no link %s -> %s in the scenario" % (node, succ))
            p[e] = float(prob)
    sums = np.bincount(net.edge_src, weights=p, minlength=len(net.ids))[net.offloaders]
    bad = np.nonzero(np.abs(sums - 1.0) > 1e-6)[0]
    if len(bad):
        raise ScenarioError("routing: probabilities of %s sum to %.6g, not 1"
                            % (net.ids[net.offloaders[bad[0]]], sums[bad[0]]))
    return p


def routing_mapping(net: Network, p: np.ndarray) -> Routing:
    """One probability per edge as ``{node: {successor: p}}``."""
    out: Routing = {}
    for e in range(net.num_edges):
        out.setdefault(net.ids[net.edge_src[e]], {})[net.ids[net.edge_dst[e]]] = float(p[e])
    return out


def uniform_routing(net: Network) -> np.ndarray:
    """p_ij = 1/|L_i| (the paper's initial strategy)."""
    deg = np.bincount(net.edge_src, minlength=len(net.ids)).astype(np.float64)
    return 1.0 / deg[net.edge_src]


def mean_response_time(scenario: Scenario, routing: Mapping[str, Mapping[str, float]],
                       thresholds: Optional[Mapping[int, float]] = None) -> float:
    """The model's mean response time T (eq. 8, seconds) of ``routing`` under ``thresholds``.

    With a fixed-``remaining`` scenario ``thresholds`` is ignored. ``inf`` when the routing
    overloads a worker. The single implementation used by ``plan``, the simulator's checks and
    the testbed's "model delay" column.
    """
    net = compile_network(scenario)
    remaining, _ = remaining_for(scenario, thresholds)
    return network_delay(net, routing_vector(net, routing), remaining)


@dataclass(frozen=True)
class PolicyResult:
    """What any routing/threshold policy produces for a scenario (``plan`` prints it)."""

    policy: str
    routing: Routing  # {node: {successor: probability}}
    thresholds: Dict[int, float]  # {stage: c}; empty when the scenario fixes ``remaining``
    remaining: Tuple[float, ...]  # I_h per stage under those thresholds
    delay_s: float  # eq. (8) of the routing; inf when it overloads a worker
    accuracy: Optional[float]  # A(C); None when the scenario fixes ``remaining``
    utility: Optional[float]  # eq. (9); None without accuracy
    rounds: int  # communication rounds / best-response passes / generations run
    converged: bool  # the policy's own stopping rule was met
    history: List[float] = field(default_factory=list)  # delay_s after each round, when tracked

    def to_json(self) -> Dict[str, object]:
        """The ``plan --json`` object (inf delays become null)."""
        def num(x):
            return None if x is None or not math.isfinite(x) else float(x)
        return {
            "policy": self.policy,
            "routing": self.routing,
            "thresholds": {str(k): float(v) for k, v in sorted(self.thresholds.items())},
            "delay_s": num(self.delay_s),
            "accuracy": num(self.accuracy),
            "utility": num(self.utility),
            "rounds": int(self.rounds),
            "converged": bool(self.converged),
        }


def make_result(policy: str, scenario: Scenario, net: Network, p: np.ndarray,
                thresholds: Optional[Mapping[int, float]], rounds: int, converged: bool,
                history: Optional[List[float]] = None) -> PolicyResult:
    """Evaluate ``p`` under ``thresholds`` (eqs. 8, 9) and package it as a ``PolicyResult``."""
    th = {int(k): float(v) for k, v in (thresholds or {}).items()}
    remaining, acc = remaining_for(scenario, th if scenario.exit_profile is not None else None)
    delay = network_delay(net, p, remaining)
    util = None
    if acc is not None and math.isfinite(delay):
        a_min, a_max = accuracy_range(scenario.exit_profile)
        util = utility(delay, acc, scenario.tradeoff, a_min, a_max)
    return PolicyResult(policy, routing_mapping(net, p), th, remaining, delay, acc, util,
                        rounds, converged, list(history or []))
