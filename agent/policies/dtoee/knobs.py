"""DTO-EE's knobs: the parameters, their defaults and ranges, read with the one field reader.

A scenario's ``knobs`` object is shared by every policy (``ga_staleness``, ``mdi-exit`` sit next
to DTO-EE's keys), so ``parse_knobs`` reads DTO-EE's keys and leaves the others; the registry
rejects keys no policy reads. A node config's ``policy_knobs`` belong to its one policy:
``parse_agent_knobs`` rejects unknown keys and the keys the agent cannot honour.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Type

from agent.config.fields import Fields
from agent.errors import UsageError
from agent.policies.model import DEFAULT_LINK_MODEL, LINK_MODELS
from agent.policies.setting import MAX_ROUNDS, ScenarioError
from agent.policies.thresholds import DEFAULT_THRESHOLD

STEP_RULES = ("default", "paper", "joint")
SLOT_STARTS = ("last", "uniform")

# Knob ranges beyond a parameter's own domain: each keeps the maths finite and a run's rounds
# within MAX_ROUNDS (docs/policies.md, "DTO-EE knobs", gives the reasons per knob).
# The smallest routing and threshold steps (paper_step_size, step_scale, threshold_step): a
# routing step of s closes a gap of 1e-3 in about 7/s rounds, 7000 rounds at 0.001 (in the
# bound); smaller steps leave the routing or thresholds where they started within any run.
MIN_STEP = 1e-3
# tau_c at most: above half the threshold range every threshold has a candidate of eq. 18
# clipped to an end of (0, 1] (c - tau_c <= 0 or c + tau_c >= 1), so the step no longer tries
# the thresholds next to c but all or nothing.
MAX_THRESHOLD_STEP = 0.5
# K of eq. 11 (seconds) at most: 2K overflows float64 past 8.9e307 (NaN marginal delays), and
# above 1e12 an active penalty's slope swamps the delay terms below float64's resolution.
MAX_PENALTY_K = 1e12
# headroom_target at least: below half utilisation every receiver of a network loaded past half
# is "full", and the default rule's step loses its bound (rho_ext has the same floor).
MIN_HEADROOM = 0.5


@dataclass(frozen=True)
class DtoeeParams:
    """DTO-EE knobs (scenario ``knobs`` or node config); ``parse_knobs`` validates them."""

    # routing update: "default" (scaled Newton per node), "paper" (eq. 19) or "joint" (the
    # offloaders of a stage solve their stage together: agent.policies.dtoee.joint)
    step: str = "default"
    paper_step_size: float = 0.1  # tau_p of eq. 19, in [MIN_STEP, 1]
    step_scale: float = 1.5  # default rule: multiplier of the Newton step, in [MIN_STEP, 2]
    # default rule: fill receivers up to this utilisation, in [MIN_HEADROOM, 1)
    headroom_target: float = 0.95
    momentum: float = 0.6  # default rule: share of its previous routing change a node repeats
    rho_ext: float = 0.99  # delay function continued quadratically past this utilisation
    penalty_k: float = 1.0e4  # K of eq. 11 (already times Phi), seconds, (0, MAX_PENALTY_K]
    epsilon: float = 0.01  # epsilon of eq. 11, as a fraction of capacity, (0, 0.5)
    rounds: int = 200  # communication rounds per configuration phase (plan, simulator)
    tolerance: float = 1e-3  # converged: no routing probability moved more than this in a round
    # agent: a node ends its configuration phase once its quiet streak (no marginal delay or
    # load changed by settle_tolerance, relative, and no threshold changed, here and at every
    # node its messages reach) is this long (raised to one threshold cycle, m rounds per exit,
    # plus one); 0 = run every round
    settle_rounds: int = 8
    settle_tolerance: float = 1e-2  # agent: "changed" for settle_rounds, relative
    m: int = 5  # a threshold step every m rounds (Alg. 3)
    threshold_step: float = 0.05  # tau_c: threshold change per step, [MIN_STEP, 0.5]
    initial_threshold: float = DEFAULT_THRESHOLD  # c_h of every exit before tuning
    # where each slot's routing update starts: "last", the routing the previous slot ended with
    # (a steady network starts converged), or "uniform", every slot from 1/|L_i| as in the
    # paper's Algorithm 3, line 1 (a cold start in every slot: for reproducing it, and to time
    # a whole configuration phase)
    slot_start: str = "last"
    # a link as a server of r bytes/s shared by its tasks ("shared") or the paper's fixed
    # beta/r per hop ("delay", for reproducing its figures); plan and the simulator take it
    # from the scenario's knob of the same name (agent.policies.model.link_model_of)
    link_model: str = DEFAULT_LINK_MODEL

    @property
    def first_threshold_round(self) -> int:
        """Round of a phase's first threshold step: m after a cold (uniform) start, whose
        round-0 reports describe the uniform routing (a threshold chosen on them was undone at
        its stage's next turn, every slot), else 0 (the last phase's routing)."""
        return self.m if self.slot_start == "uniform" else 0


KNOB_NAMES = tuple(f.name for f in fields(DtoeeParams))

# Knobs only the whole-network driver (plan, simulator) reads; a node takes these settings from
# its own config fields, so in policy_knobs they would be silently without effect.
NOT_IN_AGENT = {
    "rounds": "a node runs rounds_per_slot rounds per configuration phase (set that field)",
    "tolerance": "a node's configuration phase ends by settle_rounds and settle_tolerance",
    "initial_threshold": "a node starts from the config's thresholds (set that field)",
    # the scenario's knobs of other policies, which share its knobs object
    "ga_staleness": "ga runs on no node; plan and simulate only",
    "baseline_thresholds": "how the baselines' plans (cf, bf, ngto, ga) set thresholds; plan "
                           "and simulate only",
}

_D = DtoeeParams()


def parse_knobs(knobs: Mapping[str, Any], where: str = "knobs",
                error: Type[Exception] = ScenarioError) -> DtoeeParams:
    """Read the DTO-EE knobs from ``knobs`` (other keys are left to other policies).

    Raises ``error`` naming the field, e.g. ``knobs.step: must be one of default|paper``.
    """
    f = Fields(knobs, where, error)
    return DtoeeParams(
        step=f.str("step", _D.step, STEP_RULES),
        paper_step_size=f.num("paper_step_size", _D.paper_step_size, MIN_STEP, 1.0),
        step_scale=f.num("step_scale", _D.step_scale, MIN_STEP, 2.0),
        headroom_target=f.num("headroom_target", _D.headroom_target, MIN_HEADROOM, 1.0,
                              hi_open=True),
        momentum=f.num("momentum", _D.momentum, 0.0, 1.0, hi_open=True),
        rho_ext=f.num("rho_ext", _D.rho_ext, 0.5, 1.0, hi_open=True),
        # the paper's K and epsilon are positive: without either, eq. 11 no longer keeps a
        # receiver's utilisation below 1 - epsilon
        penalty_k=f.num("penalty_k", _D.penalty_k, 0.0, MAX_PENALTY_K, lo_open=True),
        epsilon=f.num("epsilon", _D.epsilon, 0.0, 0.5, lo_open=True, hi_open=True),
        rounds=f.int("rounds", _D.rounds, lo=1, hi=MAX_ROUNDS),
        tolerance=f.num("tolerance", _D.tolerance, 0.0, 1.0, lo_open=True),
        # at most the longest phase plan and simulate run (MAX_ROUNDS): beyond it a quiet
        # streak never ends a phase and a threshold step never comes
        settle_rounds=f.int("settle_rounds", _D.settle_rounds, lo=0, hi=MAX_ROUNDS),
        settle_tolerance=f.num("settle_tolerance", _D.settle_tolerance, 0.0, 1.0, lo_open=True),
        m=f.int("m", _D.m, lo=1, hi=MAX_ROUNDS),
        threshold_step=f.num("threshold_step", _D.threshold_step, MIN_STEP, MAX_THRESHOLD_STEP),
        initial_threshold=f.num("initial_threshold", _D.initial_threshold, 0.0, 1.0,
                                lo_open=True),
        link_model=f.str("link_model", _D.link_model, LINK_MODELS),
        slot_start=f.str("slot_start", _D.slot_start, SLOT_STARTS),
    )


def parse_agent_knobs(knobs: Mapping[str, Any], where: str = "policy_knobs",
                      error: Type[Exception] = UsageError) -> DtoeeParams:
    """DTO-EE knobs of a node config: unknown keys and keys the agent ignores are errors."""
    f = Fields(knobs, where, error)
    for key in sorted(set(knobs) & set(NOT_IN_AGENT)):
        raise f.fail(key, "not used by a node: " + NOT_IN_AGENT[key])
    f.reject_unknown(k for k in KNOB_NAMES if k not in NOT_IN_AGENT)
    return parse_knobs(knobs, where, error)
