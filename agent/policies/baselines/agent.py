"""The DTO-EE paper's heuristic baselines inside the agent: ``cf`` and ``bf``.

- ``cf`` (computing-first): an offloader splits its tasks over its successors in proportion to
  their capacities mu_j, as each successor announces it in its heartbeats (measured or
  emulated capacity, kept current by the online estimator).
- ``bf`` (bandwidth-first): in proportion to the link rates r_ij of the node's config.

Both split by ``plans.proportional_split``, the rule the planners use for a whole network. A successor whose weight is not
known yet (no heartbeat, rate 0) gets none of the mass while others have some; the split
renormalises over the alive successors, so mass moves off a neighbour as soon as it is gone.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Type

from agent.config.fields import Fields
from agent.errors import UsageError
from agent.policies.api import AgentPolicy, NodeView
from agent.policies.baselines.plans import NOT_IN_AGENT, proportional_split


def parse_baseline_knobs(knobs: Mapping[str, Any], where: str = "policy_knobs",
                         error: Type[Exception] = UsageError) -> None:
    """``cf`` and ``bf`` take no knobs: any key in ``knobs`` is an error naming it (a
    planners' knob, such as ``baseline_thresholds``, saying why a node does not use it)."""
    f = Fields(knobs, where, error)
    for key in sorted(set(knobs) & set(NOT_IN_AGENT)):
        raise f.fail(key, "not used by a node: " + NOT_IN_AGENT[key])
    f.reject_unknown(())


class BaselinePolicy(AgentPolicy):
    """``cf`` or ``bf``: routing weights straight from the node's view, no messages."""

    def __init__(self, name: str, thresholds, knobs, seed: int = 0):
        super().__init__(thresholds, knobs, seed)
        if name not in ("cf", "bf"):
            raise ValueError("baseline policy must be cf or bf, got %r" % (name,))
        self.name = name
        parse_baseline_knobs(self.knobs)
        self._last: Dict[str, float] = {}

    def weights(self, view: NodeView) -> Dict[str, float]:
        if self.name == "cf":
            w = {s: float(view.peer_state.get(s, {}).get("capacity_flops", 0.0))
                 for s in view.successors}
        else:
            w = {s: float(view.link_rate_bytes_s.get(s, 0.0)) for s in view.successors}
        self._last = proportional_split(w, view.alive)
        return w

    def routing(self) -> Dict[str, float]:
        return dict(self._last)
