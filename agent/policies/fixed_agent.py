"""``fixed``, the trivial policy: routing weights from ``policy_knobs.routing`` (parsed by
``agent.policies.fixed``), else uniform, and the base threshold rule."""

from __future__ import annotations

from typing import Any, Dict

from agent.policies.api import AgentPolicy, NodeView
from agent.policies.fixed import check_own_row, own_row, parse_fixed_knobs, per_node


class FixedWeightsPolicy(AgentPolicy):
    """``fixed``: routing weights from ``policy_knobs.routing``, a row ``{peer = weight}`` or a
    topology's per-node table whose own row the node takes (``agent.policies.fixed``), else
    uniform; weights of gone neighbours are ignored, so mass moves to the rest."""

    name = "fixed"

    def __init__(self, thresholds, knobs, seed=0):
        super().__init__(thresholds, knobs, seed)
        self._table = parse_fixed_knobs(self.knobs)
        self._weights = {} if per_node(self._table) else dict(self._table)

    def configure(self, cfg: Any, view: NodeView) -> None:
        """A weight for a node that is no successor here is a start-up fault: misspelt, the
        node had routed uniformly (every successor weighing 0) while reporting the table."""
        check_own_row(self._table, view.node_id, view.successors)
        self._weights = own_row(self._table, view.node_id)

    def weights(self, view: NodeView) -> Dict[str, float]:
        if not self._weights:
            return super().weights(view)
        return {s: self._weights.get(s, 0.0) for s in view.successors}

    def routing(self) -> Dict[str, float]:
        return dict(self._weights)
