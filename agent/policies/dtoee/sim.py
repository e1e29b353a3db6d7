"""DTO-EE in the simulator and in ``plan``: the whole-network driver re-run every slot.

``dtoee`` warm-starts each slot from the decision in force (the routing only from uniform with
the knob ``slot_start = "uniform"``, as the agents do); ``dtoee-cX`` (the paper's "DTO w/o
AT-X") keeps every exit threshold at X and tunes the routing only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from agent.policies.dtoee.knobs import parse_knobs
from agent.policies.dtoee.network import run_dtoee
from agent.policies.setting import Scenario
from agent.policies.sim_api import Decision, PlannerPolicy, decision_from_result
from engines.exit_profile import exit_stats


def with_fixed_thresholds(scenario: Scenario, c: float) -> Scenario:
    """``scenario`` with the exit profile replaced by the remaining ratios at thresholds c."""
    prof = scenario.exit_profile
    if prof is None:
        return scenario
    rem = exit_stats(prof, [c] * len(prof.early_exit_stages)).remaining
    return dataclasses.replace(scenario, exit_profile=None, remaining=tuple(float(x) for x in rem))


def _start_routing(scn: Scenario, prev: Optional[Decision]):
    """The routing a slot's phase starts from: the last decision's, unless ``slot_start`` says
    uniform (then None: ``run_dtoee``'s uniform start)."""
    if prev is None or parse_knobs(scn.knobs).slot_start == "uniform":
        return None
    return prev.routing


def dtoee_sim_policy(name: str, rounds: Optional[int] = None) -> PlannerPolicy:
    """``dtoee``: routing and thresholds tuned every slot, at most ``rounds`` rounds."""
    def plan(scn: Scenario, prev: Optional[Decision]) -> Decision:
        res = run_dtoee(scn, rounds=rounds, thresholds=prev.thresholds if prev else None,
                        initial_routing=_start_routing(scn, prev))
        return decision_from_result(res)
    return PlannerPolicy(name, plan)


def fixed_threshold_sim_policy(name: str, c: float, rounds: Optional[int] = None) -> PlannerPolicy:
    """``dtoee-cX``: DTO-EE's routing with every exit threshold fixed at ``c``."""
    def plan(scn: Scenario, prev: Optional[Decision]) -> Decision:
        res = run_dtoee(with_fixed_thresholds(scn, c), rounds=rounds,
                        initial_routing=_start_routing(scn, prev))
        th = {h: c for h in scn.exit_profile.early_exit_stages} \
            if scn.exit_profile is not None else None
        return decision_from_result(res, thresholds=th)
    return PlannerPolicy(name, plan)
