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


@dataclass(frozen=True)
class DtoeeParams:
    """DTO-EE knobs (scenario ``knobs`` or node config); ``parse_knobs`` validates them."""

    # routing update: "default" (scaled Newton per node), "paper" (eq. 19) or "joint" (the
    # offloaders of a stage solve their stage together: agent.policies.dtoee.joint)
    step: str = "default"
    paper_step_size: float = 0.1  # tau_p of eq. 19, in (0, 1]
    step_scale: float = 1.5  # default rule: multiplier of the Newton step, in (0, 2]
    headroom_target: float = 0.95  # default rule: fill receivers up to this utilisation, (0, 1)
    momentum: float = 0.6  # default rule: share of its previous routing change a node repeats
    rho_ext: float = 0.99  # delay function continued quadratically past this utilisation
    penalty_k: float = 1.0e4  # K of eq. 11 (already times Phi), seconds
    epsilon: float = 0.01  # epsilon of eq. 11, as a fraction of capacity
    rounds: int = 200  # communication rounds per configuration phase (plan, simulator)
    tolerance: float = 1e-3  # converged: no routing probability moved more than this in a round
    # agent: a node ends its configuration phase once its quiet streak (no marginal delay or
    # load changed by settle_tolerance, relative, and no threshold changed, here and at every
    # node its messages reach) is this long (raised to one threshold cycle, m rounds per exit,
    # plus one); 0 = run every round
    settle_rounds: int = 8
    settle_tolerance: float = 1e-2  # agent: "changed" for settle_rounds, relative
    m: int = 5  # a threshold step every m rounds (Alg. 3)
    threshold_step: float = 0.05  # tau_c: threshold change per step
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
        paper_step_size=f.num("paper_step_size", _D.paper_step_size, 0.0, 1.0, lo_open=True),
        step_scale=f.num("step_scale", _D.step_scale, 0.0, 2.0, lo_open=True),
        headroom_target=f.num("headroom_target", _D.headroom_target, 0.0, 1.0, True, True),
        momentum=f.num("momentum", _D.momentum, 0.0, 1.0, hi_open=True),
        rho_ext=f.num("rho_ext", _D.rho_ext, 0.5, 1.0, hi_open=True),
        penalty_k=f.num("penalty_k", _D.penalty_k, 0.0, None),
        epsilon=f.num("epsilon", _D.epsilon, 0.0, 0.5, hi_open=True),
        rounds=f.int("rounds", _D.rounds, lo=1, hi=MAX_ROUNDS),
        tolerance=f.num("tolerance", _D.tolerance, 0.0, 1.0, lo_open=True),
        settle_rounds=f.int("settle_rounds", _D.settle_rounds, lo=0),
        settle_tolerance=f.num("settle_tolerance", _D.settle_tolerance, 0.0, 1.0, lo_open=True),
        m=f.int("m", _D.m, lo=1),
        threshold_step=f.num("threshold_step", _D.threshold_step, 0.0, 1.0, lo_open=True),
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
