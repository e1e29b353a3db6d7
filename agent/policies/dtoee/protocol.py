"""DTO-EE per node: the messages, the receiver step (Alg. 1), the offloader step (Alg. 2, eqs.
13-16 and the routing update) and the threshold step (Alg. 3, eqs. 17-18).

Protocol (what an agent does in the configuration phase of a slot)
------------------------------------------------------------------
Every node is an *offloader* (sources and workers of stages 1..H-1: they hold a routing
``{successor: p}``), a *receiver* (workers: they get tasks from predecessors), or both. Each
round t runs two waves, in the order of the paper's Algs. 1-2 (a receiver's RUS carries the
Omega of its own offloader step, so RUSs travel from the last stage back to the sources):

1. **RUR wave** (``Request``, offloader -> each successor; all at once, one hop): the requests
   prepared at the end of round t-1 (round 0: ``make_requests`` with the initial routing and
   the node's current arrival rate): ``flops_s = p_ij * phi_i * I_h * alpha_{h+1}`` (eq. 5's xi).
   A worker that has the round-t RURs of all live predecessors (or whose wait timed out) knows
   its load lambda_j and its arrival rate ``arrival_rate(requests, alpha_h)``.
2. **RUS wave** (``Status``, receiver -> each predecessor, from stage H back to stage 1):
   - a final-stage worker answers at once: ``receiver_status(..., downstream=None)``;
   - a worker of stage h < H waits for the round-t RUS of all live successors, runs
     ``offloader_step`` (new routing, its Omega_i, the round-(t+1) RURs), then answers with
     ``receiver_status(..., downstream=<that result>, previous=<its previous RUS>)``;
   - a source runs ``offloader_step`` once it has its successors' RUS.
   ``offloader_step`` gets ``previous_arrival_rate_tasks_s`` (the rate its round-t RURs were
   built with: its successors' loads still reflect it) and ``previous_change`` (the ``change``
   of its previous result in this phase); ``receiver_status`` gets ``previous`` (the node's own
   RUS of the previous round). These carry the default rule's state between rounds (damping,
   momentum, the pending-rate correction); without them the rule loses that state and
   converges far worse at heavy load. Answering the RUS before the node's own offloader step
   (with the Omega of its previous step) also works, with about three times the gap after 200
   rounds at heavy load.

A round therefore costs one hop forward and H hops back.

Early end: every RUR and RUS carries the sender's ``quiet`` streak (``quiet_streak``: rounds in
a row in which neither it nor, by their messages, its neighbours changed its marginal delay or
load by ``settle_tolerance`` (relative) or changed a threshold). A node whose streak reaches
``settle_rounds`` (at least one threshold cycle) ends its configuration phase; until its
neighbours have too (their messages say so), it answers their later rounds from its final state,
so nobody waits for it. Every m rounds (from ``first_threshold_round``: 0, or m after a cold
start) one exit stage adjusts its threshold (``threshold_stage``): each worker of that stage
sends a ``ThresholdReport`` (its phi_i and sum_j p_ij Delta_ij of its step) to the others of its
stage; each calls ``choose_threshold`` on the same reports and the accuracy-ratio table (the
exit profile) and gets the same new thresholds C (eqs. 17-18). C travels in every RUR/RUS with a
version number; ``merge_thresholds`` keeps the newest. Phi (the fleet's task rate) for eq. 17
is estimated from the stage's reports: their phi_i summed over the share of tasks that reach
the stage (``threshold_sync``).

Neighbours that are gone: an offloader passes only the statuses it received this round. A
successor without a status gets probability 0 and its mass moves to the live ones in
proportion to their probabilities (uniformly if those are all 0) before the step; a receiver
sums only the requests it received. A node whose every successor is gone gets an empty
routing and must not offload until one returns. The routing a node uses for tasks is the one
it holds when the configuration phase ends.

Step rules (``DtoeeParams.step``)
---------------------------------
``paper``: eq. 19, move a fixed fraction tau_p of the mass to the successor of least Delta.

``default``: a damped projected-Newton step in the offloader's flows, as in Gallager's and
Bertsekas-Gafni's minimum-delay routing. The node minimises sum_j (Delta_ij x_j + 1/2 kappa_j
H_ij x_j^2) over flow changes x_j with sum_j x_j = 0 and x_j >= -(current flow) (a
water-filling solved exactly), where H_ij is the second derivative of the delay along j: the
receiver's M/D/1-PS term (as a secant over the step, since the slope grows faster than the
curvature predicts) plus the downstream curvature Psi_j the receiver reports. kappa_j is the
receiver's damping: its predecessors step at the same time and their steps add up on it, so
it starts at its number of predecessors, grows when its load change reverses (an overshoot)
and decays towards 1 otherwise, which lets offloaders that trade receivers move at full
speed. Increases towards j are capped by an equal share of j's headroom up to
``headroom_target * mu_j``, so receivers below it do not overload, and overloaded ones are
drained at once. Omega_i is extrapolated by Psi_i times the change of the node's arrival rate
its successors have not seen yet. Offloaders that trade receivers face a constant gradient gap
along a direction the diagonal curvature overstates, so each node adds ``momentum`` times its
previous routing change (heavy ball), scaled down on receivers whose damping exceeds 3 (their
predecessors overshoot). Everything comes from the node's own RUS messages and its own
previous step.

``joint``: the offloaders of a stage step together (``agent.policies.dtoee.joint``): after
the RUS of its successors, each sends the others of its stage a ``StageReport`` (its rate,
routing, link rates and those RUSs) and, once every live sibling's report is in, solves the
stage's joint problem and keeps its row; its Omega and Psi are then evaluated at the new routing
and the receivers' loads under it. A round costs one hop forward and 2H back. The receivers'
damping starts at 1 (the joint solve sees the pile-up).

Links (``DtoeeParams.link_model``): under ``"shared"`` (the default) the hop term of Delta_ij is
the node's own link to j as a server of r_ij bytes/s, b r/(r - L)^2 with L = b x_ij its wire
bytes/s, plus eq. 11's penalty on L/r; the node knows x_ij, so no message carries more. The
default step caps the increase on a link at ``headroom_target`` of its rate and takes a plain
Newton step on it. ``"delay"`` is the paper's fixed beta/r.

Units: Delta, Omega in seconds (derivatives of Phi*T, the total delay per second, in the flow
tasks/s), curvature in s^2, loads and capacities in FLOP/s. The penalty (eq. 11) is written on
utilisation and its factor K already includes the paper's Phi, so no node needs Phi to route.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

# the least capacity or link rate a peer's message may report (its comment in checks)
from agent.config.checks import MIN_RATE
from agent.policies.dtoee.knobs import DtoeeParams
from agent.policies.dtoee.steps import adapt_damping, initial_damping, update_rows

# ---------------------------------------------------------------------------------- messages

@dataclass(frozen=True)
class Request:
    """RUR, offloader -> successor, round ``round``."""

    sender: str
    round: int
    flops_s: float  # xi_ij: FLOP/s the sender will offload to the receiver (eq. 5 term)
    thresholds: Dict[int, float]  # C as the sender knows it, {stage: c}
    thresholds_version: int  # bumped at every threshold change; newest wins
    quiet: int = 0  # the sender's quiet streak (``quiet_streak``) when it sent this


@dataclass(frozen=True)
class Status:
    """RUS, receiver -> each predecessor, round ``round``."""

    sender: str
    round: int
    load_flops_s: float  # lambda_j (eq. 5) from this round's requests
    capacity_flops_s: float  # mu_j
    omega_s: float  # Omega_j (eq. 16) from the receiver's latest offloader step; 0 at stage H
    curvature_s2: float  # downstream second derivative from its latest offloader step
    predecessors: int  # how many predecessors' requests it summed this round
    thresholds: Dict[int, float]  # C as the receiver knows it, {stage: c}
    thresholds_version: int
    load_change_flops_s: float = 0.0  # lambda_j now minus in its previous status
    damping: float = 1.0  # kappa_j >= 1: how many of its predecessors' steps may pile up on it
    quiet: int = 0  # the sender's quiet streak (``quiet_streak``) after this round


@dataclass(frozen=True)
class OffloaderResult:
    """What ``offloader_step`` hands back to the node."""

    routing: Dict[str, float]  # p_i for the next round, {successor: p}
    omega_s: float  # Omega_i (eq. 16), goes into this node's next RUS
    curvature_s2: float  # Psi_i, goes into this node's next RUS
    marginals_s: Dict[str, float]  # Delta_ij (eq. 15) per live successor
    requests: Dict[str, Request]  # the next round's RUR per successor
    change: Dict[str, float] = field(default_factory=dict)  # new minus old p, per successor


# Versions of C come from a node's decisions, one at most per round: none reaches 2^39 in any
# fleet's life. A peer's version of 2^40 or more is refused, and one of 2^39 or more is not
# adopted (``merge_thresholds``), so a node's own decisions, each one more than the newest
# version it took, never reach what its peers refuse. (A peer's 2^53 - 1, adopted, had left
# every node at the wire's bound, where no decision was newer and the siblings drifted apart.)
MAX_THRESHOLDS_VERSION = 2 ** 40
ADOPTED_VERSION_MAX = 2 ** 39


def check_request(req: Request) -> Request:
    """``req`` if its numbers are in range (xi_ij >= 0: a negative one would lower the
    receiver's load below what it is; the version of C below ``MAX_THRESHOLDS_VERSION``);
    ValueError naming the field otherwise. Types, finiteness and magnitudes are
    ``payload.from_payload``'s."""
    if not req.flops_s >= 0:
        raise ValueError("Request.flops_s: %r, must be >= 0" % req.flops_s)
    _check_version(req.thresholds_version, "Request")
    return req


def _check_version(version: int, what: str) -> None:
    if not 0 <= version < MAX_THRESHOLDS_VERSION:
        raise ValueError("%s.thresholds_version: %r, must be in [0, 2^40)" % (what, version))


def check_status(st: Status) -> Status:
    """``st`` if its numbers are in range, as ``receiver_status`` builds them: capacity >=
    ``MIN_RATE``, load >= 0, curvature >= 0 (Psi is a sum of squares times convex terms),
    damping >= 1 (``steps.initial_damping`` / ``adapt_damping`` never go below); ValueError
    naming the field otherwise. Omega and the load change may take any sign."""
    for name, value, low in (("capacity_flops_s", st.capacity_flops_s, MIN_RATE),
                             ("load_flops_s", st.load_flops_s, 0.0),
                             ("curvature_s2", st.curvature_s2, 0.0),
                             ("damping", st.damping, 1.0),
                             ("predecessors", st.predecessors, 0)):
        if not value >= low:
            raise ValueError("Status.%s: %r, must be >= %r" % (name, value, low))
    _check_version(st.thresholds_version, "Status")
    return st


# --------------------------------------------------------------------------- per-node steps

def arrival_rate(requests: Sequence[Request], stage_flops: float) -> float:
    """phi_j of a worker from this round's RURs: lambda_j / alpha_h (Alg. 1, line 4)."""
    return sum(r.flops_s for r in requests) / stage_flops


def make_requests(node_id: str, round: int, routing: Mapping[str, float],
                  arrival_rate_tasks_s: float, remaining: float, next_stage_flops: float,
                  thresholds: Mapping[int, float], thresholds_version: int
                  ) -> Dict[str, Request]:
    """RURs for every successor in ``routing``: xi_ij = p_ij * phi_i * I_h * alpha_{h+1}."""
    th = dict(thresholds)
    return {succ: Request(node_id, round, float(p * arrival_rate_tasks_s * remaining
                                                * next_stage_flops), th, thresholds_version)
            for succ, p in routing.items()}


def receiver_status(node_id: str, round: int, capacity_flops_s: float,
                    requests: Sequence[Request], downstream: Optional[OffloaderResult],
                    thresholds: Mapping[int, float], thresholds_version: int,
                    previous: Optional[Status] = None, joint: bool = False) -> Status:
    """Alg. 1: sum this round's RURs into lambda_j and answer with a RUS.

    ``downstream`` is this node's latest ``OffloaderResult`` (None at the final stage, or before
    its first offloader step: Omega = 0); ``previous`` its own previous RUS in this phase (None in
    the first round), from which the default rule's damping adapts. The damping starts at the
    number of predecessors (their steps pile up), or at 1 under ``step = "joint"`` (``joint``:
    the predecessors' joint step sees the pile-up).
    """
    load = float(sum(r.flops_s for r in requests))
    omega = downstream.omega_s if downstream is not None else 0.0
    curv = downstream.curvature_s2 if downstream is not None else 0.0
    n = len(requests)
    if previous is None:
        change, damping = 0.0, float(initial_damping(n, joint))
    else:
        change = load - previous.load_flops_s
        damping = float(adapt_damping(np.float64(change), previous.load_change_flops_s,
                                      previous.damping, n, capacity_flops_s))
    return Status(node_id, round, load, float(capacity_flops_s), float(omega), float(curv),
                  n, dict(thresholds), thresholds_version, float(change), damping)


def split_heard(routing: Mapping[str, float], live: Sequence[str], kept: Sequence[str]
                ) -> Tuple[np.ndarray, float, Dict[str, float]]:
    """``routing`` over the successors heard from (``live``) and those not yet (``kept``): p over
    ``live`` (sum 1), the share of the tasks it carries (what may move), p of each of ``kept``."""
    v = np.array([max(0.0, float(routing[s])) for s in list(live) + list(kept)])
    v = v / v.sum() if v.sum() > 0 else np.full(len(v), 1.0 / len(v))
    share = max(0.0, 1.0 - float(v[len(live):].sum())) if kept else 1.0
    p = v[:len(live)] / share if share > 0 else np.full(len(live), 1.0 / len(live))
    return p, share, {s: float(x) for s, x in zip(kept, v[len(live):])}


def offloader_step(node_id: str, round: int, routing: Mapping[str, float],
                   arrival_rate_tasks_s: float, remaining: float, next_stage_flops: float,
                   next_input_bytes: float, link_rates_bytes_s: Mapping[str, float],
                   statuses: Mapping[str, Status], params: DtoeeParams,
                   thresholds: Mapping[int, float], thresholds_version: int,
                   previous_arrival_rate_tasks_s: Optional[float] = None,
                   previous_change: Optional[Mapping[str, float]] = None,
                   unheard: Collection[str] = ()) -> OffloaderResult:
    """Alg. 2 for one offloader: Delta (eq. 15), Omega (eq. 16), new routing, next RURs.

    ``routing`` is the current p_i over all successors, ``remaining`` the node's own I_h (1 for a
    source), ``statuses`` the round-t RUS of each live successor (others count as gone, except
    ``unheard``: live, no status yet, they keep their share and get requests with it; counted
    as gone, a source restarted mid-phase that had heard only a far worker sent it all its
    tasks for a slot), ``previous_arrival_rate_tasks_s`` the rate its round-t RURs were built
    with (None: same as ``arrival_rate_tasks_s``, e.g. a source), ``previous_change`` the
    ``change`` of the node's previous ``OffloaderResult`` in this phase (None in the first round).
    """
    live = [s for s in routing if s in statuses]
    kept = [s for s in routing if s in unheard and s not in statuses]
    if not live:
        return OffloaderResult({}, 0.0, 0.0, {}, {})
    p, share, held = split_heard(routing, live, kept)
    st = [statuses[s] for s in live]
    one = np.ones((1, len(live)), dtype=bool)
    rate = arrival_rate_tasks_s * share
    new, delta, omega, psi = update_rows(
        p[None, :], np.array([rate * remaining]), np.array([remaining]),
        np.array([next_stage_flops]), np.array([next_input_bytes]),
        np.array([[link_rates_bytes_s[s] for s in live]]),
        np.array([[x.load_flops_s for x in st]]), np.array([[x.capacity_flops_s for x in st]]),
        np.array([[x.omega_s for x in st]]), np.array([[x.curvature_s2 for x in st]]),
        np.array([[x.predecessors for x in st]], dtype=np.float64),
        np.array([[x.damping for x in st]]), one, params,
        np.array([rate - (rate if previous_arrival_rate_tasks_s is None
                          else previous_arrival_rate_tasks_s * share)]),
        np.array([[float((previous_change or {}).get(s, 0.0)) for s in live]]))
    new_routing = dict({s: 0.0 for s in routing}, **held)
    new_routing.update({s: float(x) * share for s, x in zip(live, new[0])})
    requests = make_requests(node_id, round + 1, {s: new_routing[s] for s in live + kept},
                             arrival_rate_tasks_s, remaining, next_stage_flops, thresholds,
                             thresholds_version)
    return OffloaderResult(new_routing, float(omega[0]), float(psi[0]),
                           {s: float(d) for s, d in zip(live, delta[0])}, requests,
                           {s: (float(x) - float(y)) * share for s, x, y in zip(live, new[0], p)})


def omega_shift(result: OffloaderResult, previous: Optional[OffloaderResult]) -> float:
    """How much an offloader's step changed what its routing offers: the relative change of
    its Omega_i (the marginal delay of its tasks from here on) since its previous step (inf
    without one). Routing probabilities are no measure of it: mass may keep moving between
    successors of equal marginal delay at no change of delay."""
    if previous is None:
        return float("inf")
    return abs(result.omega_s - previous.omega_s) / max(abs(previous.omega_s), 1e-12)


def load_shift(requests: Sequence[Request], previous: Optional[Status],
               capacity_flops_s: float) -> float:
    """How much a receiver's load changed since its previous status, as a fraction of its
    capacity (inf without one)."""
    if previous is None:
        return float("inf")
    load = float(sum(r.flops_s for r in requests))
    return abs(load - previous.load_flops_s) / max(float(capacity_flops_s), 1e-300)


def quiet_streak(previous: int, moved: float, tolerance: float, thresholds_changed: bool,
                 heard: Sequence[int]) -> int:
    """A node's quiet streak after a round: 0 if it moved by ``tolerance`` or more (the larger
    of ``omega_shift`` and ``load_shift``) or its thresholds changed; else one more than the
    least of its own previous streak and the streaks its neighbours sent this round (``heard``; a
    neighbour whose message is missing counts 0). A streak of k thus means: no node within
    reach of k rounds of messages moved in the last rounds, so a node whose streak passes the
    fleet's message diameter knows that every node is quiet (the early end of the agent's
    configuration phase)."""
    if not moved < tolerance or thresholds_changed:
        return 0
    return min([int(previous)] + [int(q) for q in heard]) + 1


# Slots more than a day apart more likely come from another slot_length_s than from a clock
# that far off (NTP keeps fleets within seconds); the sender's length is then estimated.
CLOCK_SKEW_PLAUSIBLE_S = 86400.0
SLOT_LENGTH_RANGE_S = (0.001, 86400.0)  # a config's slot_length_s bounds (config.checks)


def sender_slot_length_s(slot: int, now_slot: int, slot_length_s: float) -> float:
    """The slot length with which a sender's ``slot`` number fits this node's wall clock
    (about ``now_slot * slot_length_s``): the sender's own slot length when the two clocks
    agree and only the lengths differ; 0.0 for a slot below 1."""
    if slot < 1:
        return 0.0
    return (now_slot + 0.5) * slot_length_s / slot


def slot_skew(slot: int, now_slot: int, slot_length_s: float) -> str:
    """Why a message of ``slot`` cannot come from a node whose wall clock is within a slot of
    this one's (now in ``now_slot``) and whose slots are as long: "" when it can. DTO-EE's
    slots follow each node's own clock: a node whose clock is off by more than a slot takes no
    part in its neighbours' phases. A message more than one slot ahead names the clock skew
    and NTP. A message more than a slot behind is only stale (a node that was paused sends and
    reads those, and the node whose clock is behind says so): "".

    Either way, when the slots imply more than a day between the clocks and the slot length
    that fits the sender's slot number to this node's clock (``sender_slot_length_s``) is a
    valid one more than 1% off this node's, the likely cause is another ``slot_length_s`` on
    the sender (a node rendered from another topology or edited by hand): the text names both
    lengths and the fix (one render for every node)."""
    d = slot - now_slot
    if -1 <= d <= 1:
        return ""
    theirs_s = sender_slot_length_s(slot, now_slot, slot_length_s)
    lo_s, hi_s = SLOT_LENGTH_RANGE_S
    if (abs(d) * slot_length_s > CLOCK_SKEW_PLAUSIBLE_S and lo_s <= theirs_s <= hi_s
            and abs(theirs_s / slot_length_s - 1.0) > 0.01):
        return ("slot %d is %d slots %s this node's (%d): the sender's slot_length_s "
                "probably differs from this node's: its slot number fits our wall clock with "
                "slots of about %g s, this node's are %g s (else the clocks are about %.0f "
                "days apart: sync them (NTP)); slot_length_s, rounds_per_slot and "
                "round_interval_s must be equal on every node: render every node's config from "
                "one topology (edge-agent fleet render), copy it to every device and restart "
                "the agents" % (slot, abs(d), "ahead of" if d > 0 else "behind", now_slot,
                                float("%.3g" % theirs_s), slot_length_s,
                                abs(d) * slot_length_s / 86400.0))
    if d < 0:
        return ""
    return ("slot %d is %d slots ahead of this node's (%d): the sender's wall clock is about "
            "%.0f s ahead of ours (or ours behind); DTO-EE needs the nodes' clocks within a "
            "slot (%g s) of each other: sync them (NTP)" % (slot, d, now_slot,
                                                            d * slot_length_s, slot_length_s))


def merge_thresholds(thresholds: Mapping[int, float], version: int,
                     messages: Sequence[Any]) -> Tuple[Dict[int, float], int]:
    """Synchronise C (Algs. 1-2, line 2): keep the newest version among ours and the messages'
    (one of ``ADOPTED_VERSION_MAX`` or more is not taken: see there).

    ValueError when a message's map has other stages than ours: adopted, it would leave an
    exit stage without a threshold (or add one nobody has) and break every later round.
    """
    best, best_v = dict(thresholds), version
    for msg in messages:
        if msg.thresholds.keys() != thresholds.keys():
            raise ValueError("thresholds for stages %s from %r, this node has %s"
                             % (sorted(msg.thresholds), msg.sender, sorted(thresholds)))
        if best_v < msg.thresholds_version < ADOPTED_VERSION_MAX:
            best, best_v = dict(msg.thresholds), msg.thresholds_version
    return best, best_v
