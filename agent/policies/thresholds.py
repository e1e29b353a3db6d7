"""DTO-EE's threshold step (Alg. 3, eqs. 17-18) against the accuracy-ratio table.

Every m communication rounds one exit stage h may move its confidence threshold c_h by one step
tau_c. Each worker i of stage h reports phi_i and g_i = sum_j p_ij Delta_ij (so Omega_i = I_h g_i);
with the new remaining ratio I'_h from the table, eq. 17 gives its delay change
Delta D_i = phi_i / Phi * (I'_h - I_h) * g_i, and eq. 18 the utility change
Delta U = a * sum_i Delta D_i - (1 - a) * Delta A / (A_max - A_min). The move with the most
negative Delta U is taken; none if neither lowers U. All workers of the stage evaluate the same
reports, so they agree without a coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from agent.policies.model import accuracy_range as _accuracy_range
from engines.exit_profile import ExitProfile, exit_stats

DEFAULT_THRESHOLD = 0.8  # c_h of an exit nobody configured: the node config's and plan's start


def thresholds_to_wire(thresholds: Mapping[int, float]) -> Dict[str, float]:
    """``{stage: c}`` as messages and state files carry it: msgpack/JSON maps keyed by text."""
    return {str(h): float(c) for h, c in thresholds.items()}


STAGE_KEY_DIGITS = 6  # a stage number's digits at most (bundles have far fewer stages)


def thresholds_from_wire(obj: Any) -> Dict[int, float]:
    """The valid entries of a received ``{"stage": c}`` map as ``{stage: c}``.

    An entry is valid when its key is a stage number (text of at most ``STAGE_KEY_DIGITS``
    digits: a longer one is no stage, and past 4,300 digits ``int`` itself refuses it) and its
    value a float in (0, 1]; anything else is left out, so callers compare sizes to tell a
    clean map.
    """
    if not isinstance(obj, Mapping):
        return {}
    return {int(k): v for k, v in obj.items() if stage_key(k) is not None
            and isinstance(v, float) and 0.0 < v <= 1.0}


def stage_key(key: Any) -> Optional[int]:
    """The stage number a map key names: text of at most ``STAGE_KEY_DIGITS`` ASCII digits
    (a longer one is no stage, and past 4,300 digits ``int`` itself refuses it); else None."""
    if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= STAGE_KEY_DIGITS:
        return int(key)
    return None


@dataclass(frozen=True)
class ThresholdReport:
    """Sent by each worker of the adjusting stage to the others of that stage."""

    sender: str
    round: int
    stage: int
    arrival_rate_tasks_s: float  # phi_i
    marginal_s: float  # g_i = sum_j p_ij Delta_ij, seconds


def threshold_stage(round: int, m: int, exit_stages: Sequence[int],
                    first_round: int = 0) -> Optional[int]:
    """Alg. 3, lines 4-5: the exit stage that adjusts in ``round``, or None.

    The paper cycles over all H stages and skips those without an exit; cycling over the exit
    stages only gives every exit the same number of chances in fewer rounds. The cycle starts
    at ``first_round`` (``DtoeeParams.first_threshold_round``): 0 when a phase starts from the
    routing the last one ended with, m when it starts cold from the uniform routing, whose
    round-0 reports describe a routing before any step (in the paper's cycle round 0 falls on
    stage 0, which has no exit, too).
    """
    if not exit_stages or round < first_round or (round - first_round) % m != 0:
        return None
    return int(exit_stages[((round - first_round) // m) % len(exit_stages)])


def threshold_report(node_id: str, round: int, stage: int, arrival_rate_tasks_s: float,
                     routing: Mapping[str, float], marginals_s: Mapping[str, float]
                     ) -> ThresholdReport:
    """Build this worker's report from its routing and the Delta_ij of its offloader step.

    A successor with probability but no Delta (silent this round: gone, lost or late) has its
    mass moved to the others in proportion, as the offloader step moves it; else g_i would
    count only part of this node's marginal delay and understate eq. 17's change of T."""
    g = sum(float(routing.get(s, 0.0)) * d for s, d in marginals_s.items())
    if any(float(q) > 0.0 and s not in marginals_s for s, q in routing.items()):
        live = sum(float(routing.get(s, 0.0)) for s in marginals_s)
        if live > 0.0:
            g /= live
    return ThresholdReport(node_id, round, stage, float(arrival_rate_tasks_s), float(g))


def delay_change(reports: Sequence[ThresholdReport], remaining_now: float,
                 remaining_new: float, total_rate_tasks_s: float) -> float:
    """Eq. 17 summed over the stage's workers: the estimated change of T (seconds)."""
    return sum(r.arrival_rate_tasks_s * (remaining_new - remaining_now) * r.marginal_s
               for r in reports) / total_rate_tasks_s


def choose_threshold(stage: int, thresholds: Mapping[int, float],
                     reports: Sequence[ThresholdReport], total_rate_tasks_s: float,
                     profile: ExitProfile, tradeoff: float, step: float,
                     accuracy_bounds: Optional[Tuple[float, float]] = None) -> Dict[int, float]:
    """Eq. 18: the thresholds after trying c_h - step and c_h + step (clipped to (0, 1]).

    ``total_rate_tasks_s`` is Phi (the fleet's total task rate: the driver's own, an agent's
    estimate from its stage's reports, ``threshold_sync``);
    ``accuracy_bounds`` (A_min, A_max) is computed from the profile when not given.
    """
    current = {int(k): float(v) for k, v in thresholds.items()}
    a_min, a_max = accuracy_bounds or _accuracy_range(profile)
    span = a_max - a_min
    now = exit_stats(profile, current)
    i_now = float(now.remaining[stage - 1])
    best, best_du = current, 0.0
    c = current[stage]
    for cand in (c - step, c + step):
        cand = round(min(1.0, max(cand, 1e-6)), 9)
        if cand == c:
            continue
        trial = dict(current)
        trial[stage] = cand
        st = exit_stats(profile, trial)
        dd = delay_change(reports, i_now, float(st.remaining[stage - 1]), total_rate_tasks_s)
        da = (st.accuracy - now.accuracy) / span if span > 0 else 0.0
        du = tradeoff * dd - (1.0 - tradeoff) * da
        if du < best_du:
            best, best_du = trial, du
    return best
